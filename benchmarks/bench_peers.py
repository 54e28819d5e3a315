"""pqflow's oracle against its peers on the digits MLP, in one run (issue 9).

Builds the model ``examples/digits_mlp.toml`` builds, with the flow's own steps up to
``lower`` (data, train, compress, lower: the digits MLP 64-64-32-32-10, pruned to the
config's sparsity, w8a8 fixed point with power-of-two scales), then, on the same real
inputs (the digits test split tiled to ``--batch`` rows), times

- pqflow's Numba oracle ``pqflow.kernels.run`` (after JIT warm-up), and the same with
  ``fuse=False`` (one kernel per node, the oracle before fused chains);
- hls4ml 1.3.0's compiled emulation of the same integer model (``export_hls4ml``, every
  precision explicit, ``compile()`` with g++, then ``predict`` on float64 inputs);
- qonnx's executor ``qonnx.core.onnx_exec.execute_onnx`` on ``to_qonnx(graph)`` (after
  ``cleanup_model`` with the batch size fixed; the set-up is not timed);
- torch float32 inference of the float model, and the quantized torch model's
  fake-quant forward (float64, ``QuantizedMLP.forward``).

Before any timing, each peer's outputs on the whole test split (360 images) are checked
against the oracle's output raws with ``np.array_equal`` (hls4ml and qonnx outputs are
scaled by 2**frac of the output type; both are exact powers of two). Each throughput is
the best of ``--repeat`` timed calls on the whole batch (hls4ml, whose calls take
seconds: half as many, at least 2), after a 0.5 s pause (so that the worker threads of
the engine timed before, which spin for a while after a call, are asleep). Every engine
gets the same batch (``--batch``); the oracle is also timed at ``--big-batch``, and the
oracle, hls4ml and qonnx again at the batch sizes of ``--sweep`` (per-call overheads).

Unless ``--no-rtl``, it then verifies the flow's hardware (the config's style, the same
Verilog bytes as ``pqflow flow`` so a cached Verilator build is reused) against the
oracle on Verilator (``--rtl-vectors``) and Icarus (``--icarus-vectors``), with random
input stalls and output back-pressure (p = 0.3 each), and prints vectors/s of each.

    .venv/bin/python benchmarks/bench_peers.py

and paste the tables into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def best_time(fn, repeat: int) -> float:
    # let the previous engine's idle worker threads (onnxruntime, torch's OpenMP spin
    # after a call) go to sleep, so that they do not take a core from this one
    time.sleep(0.5)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def flow_model(config: Path, work: Path):
    """The flow's state after its steps up to ``lower`` (data, train, compress, lower)."""
    from pqflow import flow
    from pqflow.config import load_config

    st = flow.FlowState(config=load_config(config), work=work)
    for name, fn in flow.STEPS:
        fn(st)
        if name == "lower":
            return st
    raise AssertionError("the flow has no 'lower' step")


def qonnx_runner(model, n: int):
    """A callable running qonnx's executor on a float32 batch of ``n`` rows."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model

    mw = cleanup_model(ModelWrapper(model), override_inpsize=n)
    name_in, name_out = mw.graph.input[0].name, mw.graph.output[0].name

    def go(x: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = execute_onnx(mw, {name_in: x.astype(np.float32)})
        return np.asarray(out[name_out], dtype=np.float64)

    return go


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "examples" / "digits_mlp.toml")
    ap.add_argument("--batch", type=int, default=10_000, help="rows per timed call, every engine")
    ap.add_argument("--big-batch", type=int, default=100_000, help="rows for the oracle alone")
    ap.add_argument("--repeat", type=int, default=5, help="timed calls per engine (best kept)")
    ap.add_argument(
        "--sweep", default="100,1000", help="other batch sizes for oracle, hls4ml, qonnx"
    )
    ap.add_argument("--no-rtl", action="store_true", help="skip the RTL simulation part")
    ap.add_argument("--rtl-vectors", type=int, default=360, help="Verilator vectors")
    ap.add_argument("--icarus-vectors", type=int, default=20, help="Icarus vectors")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import torch

    from pqflow.hwgen.hls4ml_export import export_hls4ml
    from pqflow.kernels import run
    from pqflow.models.qonnx_export import to_qonnx

    tmp = Path(tempfile.mkdtemp(prefix="bench_peers_"))
    t0 = time.perf_counter()
    st = flow_model(args.config, tmp)
    g, split = st.graph, st.split
    print(f"model trained, quantized, lowered in {time.perf_counter() - t0:.1f} s ({args.config})")
    out_frac = g.types()[g.outputs[0]].dtype.frac
    scale = 2.0**out_frac

    x = split.x_test
    reps = -(-args.big_batch // len(x))
    big = np.ascontiguousarray(np.tile(x, (reps, 1))[: args.big_batch])
    xb = np.ascontiguousarray(big[: args.batch])
    expected = np.asarray(run(g, x))
    acc = float((expected.argmax(1) == split.y_test).mean())

    # --- the peers agree with the oracle bit for bit (whole test split) ---------------------
    t = time.perf_counter()
    hls = export_hls4ml(g, tmp / "hls4ml_prj")
    hls.compile()
    hls_setup = time.perf_counter() - t
    assert np.array_equal(hls.predict_raws(x), expected), "hls4ml != oracle"

    t = time.perf_counter()
    q_small = qonnx_runner(to_qonnx(g), len(x))
    q_big = qonnx_runner(to_qonnx(g), len(xb))
    qonnx_setup = time.perf_counter() - t
    assert np.array_equal(q_small(x) * scale, expected), "qonnx != oracle"

    qm, fm = st.qmodel.eval(), st.float_model.eval()
    with torch.inference_mode():
        fq = qm(torch.from_numpy(x)).numpy()
    assert np.array_equal(fq * scale, expected), "torch fake-quant != oracle"
    print(f"bit-exact on {len(x)} test images: hls4ml, qonnx, torch fake-quant == oracle")

    # --- throughput ---------------------------------------------------------------------------
    run(g, xb[:1000])  # JIT warm-up
    hls.model.predict(np.ascontiguousarray(xb[:100], dtype=np.float64))
    xb64 = np.ascontiguousarray(xb, dtype=np.float64)
    xt = torch.from_numpy(xb.astype(np.float32))
    xt64 = torch.from_numpy(xb64)
    fm32 = fm.float()
    with torch.inference_mode():
        fm32(xt[:1000])
        qm(xt64[:1000])
    q_big(xb)  # first call
    r = args.repeat
    times = {}
    times["pqflow oracle (Numba)"] = best_time(lambda: run(g, xb), r)
    times["pqflow oracle, per-node kernels (fuse=False)"] = best_time(
        lambda: run(g, xb, fuse=False), r
    )
    times["hls4ml 1.3.0 compiled emulation (predict)"] = best_time(
        lambda: hls.model.predict(xb64), max(2, r // 2)
    )
    times["qonnx execute_onnx"] = best_time(lambda: q_big(xb), r)
    with torch.inference_mode():
        times["torch float32 (float model)"] = best_time(lambda: fm32(xt), r)
        times["torch fake-quant float64 (QuantizedMLP)"] = best_time(lambda: qm(xt64), r)
    oracle_big = len(big) / best_time(lambda: run(g, big), r)
    unfused_big = len(big) / best_time(lambda: run(g, big, fuse=False), r)

    print()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f}, torch threads {torch.get_num_threads()}; "
        f"oracle accuracy {acc:.2%}; hls4ml set-up (export + compile) {hls_setup:.1f} s, "
        f"qonnx set-up {qonnx_setup:.1f} s"
    )
    print()
    print("| engine | batch | samples/s | oracle speed-up |")
    print("|---|---:|---:|---:|")
    o = len(xb) / times["pqflow oracle (Numba)"]
    for name, s in times.items():
        rate = len(xb) / s
        print(f"| {name} | {len(xb):,} | {rate:,.0f} | {o / rate:,.1f}x |")
    print(f"| pqflow oracle (Numba) | {len(big):,} | {oracle_big:,.0f} | |")
    print(f"| pqflow oracle, per-node kernels (fuse=False) | {len(big):,} | {unfused_big:,.0f} | |")

    # --- the same at other batch sizes (per-call overheads) --------------------------------
    sweep = [int(b) for b in args.sweep.split(",") if b]
    if sweep:
        print()
        print(
            "| batch | oracle samples/s | hls4ml samples/s | qonnx samples/s | oracle / hls4ml "
            "| oracle / qonnx |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
    for n in sweep:
        xs = np.ascontiguousarray(big[:n])
        xs64 = np.ascontiguousarray(xs, dtype=np.float64)
        o_n = n / best_time(lambda xs=xs: run(g, xs), r)
        h_n = n / best_time(lambda xs64=xs64: hls.model.predict(xs64), max(2, r // 2))
        qs = qonnx_runner(to_qonnx(g), n)
        qs(xs)
        q_n = n / best_time(lambda xs=xs, qs=qs: qs(xs), r)
        print(
            f"| {n:,} | {o_n:,.0f} | {h_n:,.0f} | {q_n:,.0f} | {o_n / h_n:,.1f}x "
            f"| {o_n / q_n:,.1f}x |",
            flush=True,
        )

    if args.no_rtl:
        return
    # --- RTL verification throughput ------------------------------------------------------
    from pqflow.hwgen import Design, generate_verilog
    from pqflow.sim import simulator_version
    from pqflow.sim.graph import verify_graph

    hw = st.config.hardware
    t = time.perf_counter()
    d = generate_verilog(Design.uniform(g, hw.style, name=hw.top, **hw.impl_options()))
    gen_s = time.perf_counter() - t
    lines = d.text.count("\n")
    print()
    print(f"Verilog: {hw.style}, {lines} lines, generated in {gen_s:.1f} s")
    print()
    print("| simulator | version | vectors | result | latency | II | build s | sim s | vectors/s |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    for sim, n in (("verilator", args.rtl_vectors), ("icarus", args.icarus_vectors)):
        if n <= 0:
            continue
        v = st.config.verify
        res = verify_graph(
            d,
            g,
            x[:n],
            sim=sim,
            seed=v.seed,
            stall_prob=v.stall_prob,
            backpressure_prob=v.backpressure_prob,
        )
        b = res.build
        build = "cached" if b.cached else f"{b.build_seconds:.1f}"
        print(
            f"| {sim} | {simulator_version(sim)} | {res.n_vectors} | "
            f"{'pass' if res.passed else 'FAIL'} ({res.n_mismatches} mismatches) | "
            f"{res.latency_cycles} | {res.ii_cycles} | {build} | {res.sim_seconds:.1f} "
            f"| {res.vectors_per_second:,.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
