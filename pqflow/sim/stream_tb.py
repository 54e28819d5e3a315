"""cocotb 2.x test bench for one ready/valid stream in, one stream out.

Not imported by pqflow itself: :mod:`pqflow.sim.runner` names it as the cocotb test
module and passes a job file through the environment variable ``PQFLOW_STREAM_JOB``.
The job (JSON) holds the packed input words (hex), the number of outputs to collect,
the stall and back-pressure probabilities, the seed, the port names and where to write
the results. The bench never judges the outputs: it collects every output word and
the Python side compares them, so a wrong design still ends in a passing cocotb test
and a result file. Only a broken job or DUT interface fails the cocotb test.

Timing of one clock cycle: inputs are written just after the falling edge, handshakes
are sampled in the read-only phase that follows (every register changes on the rising
edge, so what is seen there holds at the next rising edge, when the transfer happens).

Phases:
1. ``stream``: all vectors, random input stalls (garbage on the payload while
   ``valid`` is low) and random output back-pressure; then a drain during which any
   extra output word is counted.
   A sample may be several beats (``in_beats``/``out_beats`` in the job, default 1: an
   (H, W, C) pixel stream is H * W beats); the bench expects the matching output count.
2. ``timing``: after a second reset, the first ``timing_vectors`` samples with
   ``valid`` and ``ready`` held high: latency (first input accepted -> first output
   valid) and initiation interval (mean cycles between outputs).
"""

from __future__ import annotations

import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

JOB_ENV = "PQFLOW_STREAM_JOB"


class _DesignFault(Exception):
    """The DUT misbehaved (deadlock, X on a valid payload): reported, not raised."""


class _Ports:
    def __init__(self, dut, names: dict[str, str]) -> None:
        def get(role: str):
            name = names[role]
            try:
                return getattr(dut, name)
            except AttributeError:
                raise AssertionError(
                    f"DUT {dut._name!r} has no port {name!r} (the stream {role} port)"
                ) from None

        self.clk = get("clk")
        self.rst = get("rst")
        self.rst_active = 1 if names.get("rst_active_high", True) else 0
        self.i_valid = get("in_valid")
        self.i_ready = get("in_ready")
        self.i_data = get("in_data")
        self.o_valid = get("out_valid")
        self.o_ready = get("out_ready")
        self.o_data = get("out_data")


async def _reset(p: _Ports, cycles: int = 2) -> None:
    p.i_valid.value = 0
    p.o_ready.value = 0
    p.i_data.value = 0
    p.rst.value = p.rst_active
    for _ in range(cycles):
        await FallingEdge(p.clk)
    p.rst.value = 1 - p.rst_active


async def _run(
    p: _Ports,
    words: list[int],
    n_expect: int,
    stall_prob: float,
    backpressure_prob: float,
    rng: random.Random,
    timeout: int,
    drain: int,
) -> dict:
    """Stream ``words`` in, collect ``n_expect`` outputs (+ extras seen while draining)."""
    in_bits = len(p.i_data)
    outputs: list[int] = []
    in_cycles: list[int] = []
    out_cycles: list[int] = []
    sent = 0
    cycle = 0
    idle = 0
    extra = 0
    drain_left = drain
    error = None
    i_valid_now = -1
    while True:
        done = len(outputs) >= n_expect
        if done:
            if drain_left == 0:
                break
            drain_left -= 1
        valid = sent < len(words) and (stall_prob <= 0.0 or rng.random() >= stall_prob)
        if valid:
            p.i_data.value = words[sent]
        elif stall_prob > 0.0:
            p.i_data.value = rng.getrandbits(in_bits)
        if int(valid) != i_valid_now:
            i_valid_now = int(valid)
            p.i_valid.value = i_valid_now
        ready = done or backpressure_prob <= 0.0 or rng.random() >= backpressure_prob
        p.o_ready.value = int(ready)
        await ReadOnly()
        in_fire = valid and p.i_ready.value == 1
        out_fire = ready and p.o_valid.value == 1
        if out_fire:
            try:
                word = p.o_data.value.to_unsigned()
            except ValueError:
                error = f"output {len(outputs)} has X/Z bits: {p.o_data.value}"
                await FallingEdge(p.clk)
                break
            if done:
                extra += 1
            else:
                outputs.append(word)
                out_cycles.append(cycle)
        if in_fire:
            sent += 1
            in_cycles.append(cycle)
        await FallingEdge(p.clk)
        cycle += 1
        idle = 0 if (in_fire or out_fire) else idle + 1
        if idle > timeout and not done:
            error = (
                f"timeout: no handshake for {timeout} cycles after {sent} of {len(words)} "
                f"inputs were accepted and {len(outputs)} of {n_expect} outputs received"
            )
            break
    return {
        "outputs": [format(w, "x") for w in outputs],
        "cycles": (out_cycles[-1] + 1) if out_cycles else cycle,
        "in_cycles": in_cycles,
        "out_cycles": out_cycles,
        "extra_outputs": extra,
        "error": error,
    }


@cocotb.test()
async def stream_test(dut) -> None:
    """Run the job named by ``$PQFLOW_STREAM_JOB`` and write its result file."""
    with open(os.environ[JOB_ENV]) as f:
        job = json.load(f)
    try:
        result = await _stream_test(dut, job)
    except Exception as exc:
        _write(job["result_path"], {"bench_error": f"{type(exc).__name__}: {exc}"})
        raise
    _write(job["result_path"], result)


def _write(path: str, result: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, path)


async def _stream_test(dut, job: dict) -> dict:
    p = _Ports(dut, job["ports"])
    in_bits, out_bits = len(p.i_data), len(p.o_data)
    if in_bits != job["in_bits"] or out_bits != job["out_bits"]:
        raise AssertionError(
            f"DUT {dut._name!r}: {job['ports']['in_data']} is {in_bits} bits and "
            f"{job['ports']['out_data']} is {out_bits} bits, but the vectors need "
            f"{job['in_bits']} and {job['out_bits']}"
        )
    words = [int(w, 16) for w in job["in_words"]]
    rng = random.Random(job["seed"])
    clock = Clock(p.clk, 10, unit="ns")
    clock.start()
    await FallingEdge(p.clk)

    t0 = time.perf_counter()
    await _reset(p)
    in_ps, out_ps = job.get("in_beats", 1), job.get("out_beats", 1)  # beats per sample
    n_samples = len(words) // in_ps
    stream = await _run(
        p,
        words,
        n_samples * out_ps,
        job["stall_prob"],
        job["backpressure_prob"],
        rng,
        job["timeout_cycles"],
        job["drain_cycles"],
    )
    stream_seconds = time.perf_counter() - t0

    timing = None
    n_timing = min(job["timing_vectors"], n_samples)
    if stream["error"] is None and n_timing > 0:
        await _reset(p)
        timing = await _run(
            p,
            words[: n_timing * in_ps],
            n_timing * out_ps,
            0.0,
            0.0,
            rng,
            job["timeout_cycles"],
            0,
        )
    return {"stream": stream, "timing": timing, "stream_seconds": stream_seconds}
