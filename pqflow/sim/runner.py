"""Verify a streaming Verilog design against expected vectors with cocotb.

The contract: a DUT with one ready/valid stream in and one out, as Amaranth emits it
for a ``wiring.Component`` with the signature::

    {"i": In(stream.Signature(data.ArrayLayout(signed(w_in), n_in))),
     "o": Out(stream.Signature(data.ArrayLayout(signed(w_out), n_out)))}

converted with ``amaranth.back.verilog.convert(component, name=top, emit_src=False)``.
Its ports are ``clk``, ``rst`` (synchronous, active high), ``i__valid``, ``i__ready``,
``i__payload``, ``o__valid``, ``o__ready``, ``o__payload``. A payload is a flat bit
vector; element ``k`` occupies bits ``[k*w, (k+1)*w)``, two's complement when signed.
Other port names are described with :class:`StreamPorts`.

:func:`verify_stream` builds the design (cached by a hash of everything that affects
the build), streams every input vector through it with random input stalls and output
back-pressure, compares every output word bit-exactly, then measures latency and
initiation interval in a stall-free run. It returns a :class:`SimResult`; a wrong design
gives ``passed=False``, never an exception. :class:`SimulationError` is raised only when
the bench itself cannot run (the build fails, the ports do not match the vectors).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from pqflow.sim.tools import _canonical, build_env, cache_root, find_simulator, simulator_version

__all__ = [
    "Mismatch",
    "SimBuild",
    "SimResult",
    "SimulationError",
    "StreamPorts",
    "build_design",
    "pack_payload",
    "run_stream",
    "unpack_payload",
    "verify_stream",
]

TIMESCALE = ("1ns", "1ps")
_STAMP = "pqflow-build.json"
_TB_MODULE = "pqflow.sim.stream_tb"


class SimulationError(RuntimeError):
    """The test bench could not run: a failed build, a port mismatch, a simulator crash."""


@dataclasses.dataclass(frozen=True)
class StreamPorts:
    """Names of the DUT's clock, reset and stream ports (defaults: Amaranth's)."""

    clk: str = "clk"
    rst: str = "rst"
    rst_active_high: bool = True
    in_valid: str = "i__valid"
    in_ready: str = "i__ready"
    in_data: str = "i__payload"
    out_valid: str = "o__valid"
    out_ready: str = "o__ready"
    out_data: str = "o__payload"


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """One output vector that differs from the expected one (``phase``: stream/timing)."""

    index: int
    expected: tuple[int, ...]
    got: tuple[int, ...]
    phase: str = "stream"

    def __str__(self) -> str:
        diff = [k for k, (e, g) in enumerate(zip(self.expected, self.got, strict=True)) if e != g]
        shown = ", ".join(f"[{k}] {self.expected[k]} != {self.got[k]}" for k in diff[:4])
        more = f" (+{len(diff) - 4} more)" if len(diff) > 4 else ""
        return f"{self.phase} vector {self.index}: expected != got at {shown}{more}"


@dataclasses.dataclass(frozen=True)
class SimBuild:
    """A built simulator for one design, ready to run test benches."""

    sim: str
    top: str
    build_dir: Path
    key: str
    cached: bool
    build_seconds: float


@dataclasses.dataclass(frozen=True)
class SimResult:
    """What one :func:`verify_stream` run found.

    ``outputs`` holds every output vector received in the stream phase, in order
    (shape ``(received, n_out)``, int64). ``mismatches`` lists the first few differing
    vectors, ``n_mismatches`` counts all of them. ``cycles`` is the clock cycles of the
    stream phase (reset release to last output). ``latency_cycles`` (first input
    accepted -> first output valid) and ``ii_cycles`` (mean cycles between consecutive
    outputs) come from the stall-free timing phase; None when it did not run.
    ``error`` describes a deadlock, X outputs, missing or extra outputs.
    """

    passed: bool
    n_vectors: int
    outputs: np.ndarray
    mismatches: tuple[Mismatch, ...]
    n_mismatches: int
    cycles: int
    latency_cycles: int | None
    ii_cycles: float | None
    vectors_per_second: float
    sim_seconds: float
    extra_outputs: int
    error: str | None
    build: SimBuild

    def summary(self) -> str:
        """One line: verdict, counts and timing."""
        verdict = "PASS" if self.passed else "FAIL"
        parts = [
            f"{verdict} {self.build.top} on {self.build.sim}: {self.n_vectors} vectors",
            f"{self.n_mismatches} mismatches",
            f"{self.cycles} cycles",
            f"latency {self.latency_cycles}",
            f"II {self.ii_cycles if self.ii_cycles is None else round(self.ii_cycles, 3)}",
            f"{self.vectors_per_second:.0f} vectors/s",
        ]
        if self.mismatches:
            parts.append(f"first: {self.mismatches[0]}")
        if self.error:
            parts.append(self.error)
        return ", ".join(parts)


# -- payload packing --------------------------------------------------------------------


def _check_width(width: int, signed: bool, what: str) -> None:
    if not isinstance(width, int) or isinstance(width, bool):
        raise TypeError(f"{what} must be an int, not {width!r}")
    limit = 64 if signed else 63
    if not 1 <= width <= limit:
        raise ValueError(f"{what} must be in 1..{limit} for {_sign(signed)}, not {width}")


def _sign(signed: bool) -> str:
    return "signed" if signed else "unsigned"


def _as_vectors(values: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (vectors, elements), not shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{what} must hold at least one vector of one element, not {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{what} must hold integers, not {arr.dtype}")
    return arr.astype(np.int64)


def _check_range(arr: np.ndarray, width: int, signed: bool, what: str) -> None:
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    bad = np.argwhere((arr < lo) | (arr > hi))
    if bad.size:
        i, k = (int(x) for x in bad[0])
        raise ValueError(
            f"{what}[{i}, {k}] = {int(arr[i, k])} does not fit {_sign(signed)}({width}): "
            f"the range is [{lo}, {hi}]"
        )


def pack_payload(values: np.ndarray, width: int) -> list[int]:
    """Pack each row of ``values`` (N, n) into one int: element k at bits [k*w, (k+1)*w).

    Negative values are packed in two's complement; values must fit ``width`` bits.
    """
    arr = _as_vectors(values, "values")
    n_vec, n = arr.shape
    u = arr.astype(np.uint64)
    if width < 64:
        u &= np.uint64((1 << width) - 1)
    shifts = np.arange(width, dtype=np.uint64)
    bits = ((u[:, :, None] >> shifts) & np.uint64(1)).astype(np.uint8).reshape(n_vec, n * width)
    packed = np.packbits(bits, axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def unpack_payload(words: Sequence[int], n: int, width: int, signed: bool) -> np.ndarray:
    """Inverse of :func:`pack_payload`: ints -> (len(words), n) int64 array."""
    nbits = n * width
    nbytes = (nbits + 7) // 8
    if not words:
        return np.zeros((0, n), dtype=np.int64)
    buf = b"".join(w.to_bytes(nbytes, "little") for w in words)
    raw = np.frombuffer(buf, dtype=np.uint8).reshape(len(words), nbytes)
    bits = np.unpackbits(raw, axis=1, bitorder="little")[:, :nbits].reshape(len(words), n, width)
    u = (bits.astype(np.uint64) << np.arange(width, dtype=np.uint64)).sum(axis=2, dtype=np.uint64)
    if not signed:
        return u.astype(np.int64)
    shift = np.uint64(64 - width)  # sign-extend: move the sign bit to bit 63 and back
    return (u << shift).view(np.int64) >> shift.astype(np.int64)


# -- building ---------------------------------------------------------------------------


def _get_runner(sim: str):
    """cocotb's runner for ``sim``; for Verilator, one that builds lean and fast.

    cocotb's Verilator runner passes ``--public-flat-rw``, which makes every internal
    signal of the design visible over VPI, and compiles the C++ at ``-Os``. A generated
    MLP has tens of thousands of internal signals, and that build took about five
    minutes here. The test bench touches only the top-level ports, so
    ``--public-depth 1`` suffices, and the model's C++ is compiled at ``-O1``
    (``OPT_FAST``/``OPT_SLOW``), which brings the build to well under a minute.
    """
    from cocotb_tools.runner import Verilator, get_runner

    if sim != "verilator":
        return get_runner(sim)

    class LeanVerilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            verilate, make = cmds[0], cmds[1]
            i = verilate.index("--public-flat-rw")
            verilate[i : i + 1] = ["--public-depth", "1"]
            make += [f"OPT_FAST={VERILATOR_OPT}", f"OPT_SLOW={VERILATOR_OPT}"]
            return cmds

    return LeanVerilator()


VERILATOR_OPT = "-O1"
"""g++ optimisation level for Verilator models (part of the build cache key)."""


def _build_args(sim: str) -> list[str]:
    return ["-Wno-fatal"] if sim == "verilator" else []


def _design_key(verilog: str, top: str, sim: str, build_args: Sequence[str]) -> str:
    import cocotb_tools.config

    ident = {
        "verilog": verilog,
        "top": top,
        "sim": sim,
        "sim_version": simulator_version(sim),
        "cocotb": importlib.metadata.version("cocotb"),
        "build_args": list(build_args),
        "verilator_opt": VERILATOR_OPT if sim == "verilator" else None,
        "timescale": list(TIMESCALE),
        # the Verilator executable links cocotb's VPI library by absolute path
        "cocotb_libs": str(cocotb_tools.config.libs_dir),
    }
    blob = json.dumps(ident, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _outside_pytest() -> Iterator[None]:
    """Hide PYTEST_CURRENT_TEST so cocotb's runner returns instead of calling sys.exit."""
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def build_design(
    verilog: str,
    top: str,
    sim: str = "verilator",
    *,
    build_dir: Path | str | None = None,
    extra_build_args: Sequence[str] = (),
) -> SimBuild:
    """Build ``verilog`` (top module ``top``) for ``sim``; reuse an identical earlier build.

    The build lives in ``build_dir``, by default ``<cache>/sim/<key>`` where ``key`` is
    a hash of the source, top, simulator and its version, cocotb's version and the
    build arguments (``<cache>`` is ``$PQFLOW_CACHE`` or ``~/.cache/pqflow``). A file
    lock makes concurrent builders (pytest-xdist workers) build once and share it.
    """
    sim = _canonical(sim)
    find_simulator(sim)
    args = [*_build_args(sim), *extra_build_args]
    key = _design_key(verilog, top, sim, args)
    bdir = Path(build_dir) if build_dir is not None else cache_root() / "sim" / key
    bdir = bdir.expanduser().resolve()
    stamp = bdir / _STAMP
    with _file_lock(bdir.parent / f".{bdir.name}.lock"):
        if stamp.is_file():
            with contextlib.suppress(OSError, ValueError):
                if json.loads(stamp.read_text()).get("key") == key:
                    return SimBuild(sim, top, bdir, key, cached=True, build_seconds=0.0)
        if bdir.exists():
            shutil.rmtree(bdir)
        bdir.mkdir(parents=True)
        source = bdir / f"{top}.v"
        source.write_text(verilog)
        log = bdir / "build.log"
        t0 = time.perf_counter()
        try:
            with _environ(build_env(sim)), _outside_pytest():
                runner = _get_runner(sim)
                runner.build(
                    sources=[source],
                    hdl_toplevel=top,
                    build_dir=bdir,
                    build_args=args,
                    timescale=TIMESCALE,
                    always=True,
                    log_file=log,
                )
        except (RuntimeError, SystemExit) as exc:
            raise SimulationError(
                f"{sim} build of {top!r} failed ({exc}); log {log}:\n{_log_tail(log)}"
            ) from None
        seconds = time.perf_counter() - t0
        stamp.write_text(json.dumps({"key": key, "top": top, "sim": sim, "seconds": seconds}))
    return SimBuild(sim, top, bdir, key, cached=False, build_seconds=seconds)


# -- running ----------------------------------------------------------------------------


def run_stream(
    build: SimBuild,
    in_vectors: np.ndarray,
    in_width: int,
    in_signed: bool,
    expected: np.ndarray,
    out_width: int,
    out_signed: bool,
    *,
    seed: int = 0,
    stall_prob: float = 0.3,
    backpressure_prob: float = 0.3,
    timing_vectors: int = 32,
    timeout_cycles: int = 100_000,
    drain_cycles: int = 32,
    ports: StreamPorts = StreamPorts(),
    max_mismatches: int = 8,
    run_dir: Path | str | None = None,
    in_beats: int = 1,
    out_beats: int = 1,
) -> SimResult:
    """Stream ``in_vectors`` through an already built design; see :func:`verify_stream`."""
    xs = _as_vectors(in_vectors, "in_vectors")
    ys = _as_vectors(expected, "expected")
    _check_width(in_width, in_signed, "in_width")
    _check_width(out_width, out_signed, "out_width")
    _check_range(xs, in_width, in_signed, "in_vectors")
    _check_range(ys, out_width, out_signed, "expected")
    for name, b in (("in_beats", in_beats), ("out_beats", out_beats)):
        if not isinstance(b, int) or b < 1:
            raise ValueError(f"{name} must be a positive integer, not {b!r}")
    if xs.shape[0] % in_beats or ys.shape[0] % out_beats:
        raise ValueError(
            f"in_vectors ({xs.shape[0]}) and expected ({ys.shape[0]}) must hold whole "
            f"samples of {in_beats} and {out_beats} beats"
        )
    if xs.shape[0] // in_beats != ys.shape[0] // out_beats:
        raise ValueError(
            f"in_vectors has {xs.shape[0] // in_beats} samples but expected has "
            f"{ys.shape[0] // out_beats}: the bench expects one output vector per input vector "
            f"(a sample of {out_beats} beats per sample of {in_beats})"
        )
    for name, p in (("stall_prob", stall_prob), ("backpressure_prob", backpressure_prob)):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{name} must be in [0, 1), not {p}")
    n_vec, n_in = xs.shape
    n_out = ys.shape[1]

    if run_dir is None:
        rdir = Path(tempfile.mkdtemp(prefix="pqflow-run-"))  # kept only when the bench fails
    else:
        rdir = Path(run_dir).expanduser().resolve()
        rdir.mkdir(parents=True, exist_ok=True)
    result_path = rdir / "result.json"
    result_path.unlink(missing_ok=True)
    job = {
        "in_words": [format(w, "x") for w in pack_payload(xs, in_width)],
        "in_bits": n_in * in_width,
        "out_bits": n_out * out_width,
        "seed": int(seed),
        "stall_prob": float(stall_prob),
        "backpressure_prob": float(backpressure_prob),
        "timing_vectors": int(timing_vectors),
        "in_beats": int(in_beats),
        "out_beats": int(out_beats),
        "timeout_cycles": int(timeout_cycles),
        "drain_cycles": int(drain_cycles),
        "ports": dataclasses.asdict(ports),
        "result_path": str(result_path),
    }
    job_path = rdir / "job.json"
    job_path.write_text(json.dumps(job))
    log = rdir / "sim.log"
    results_xml = rdir / "results.xml"
    from cocotb_tools.check_results import get_results

    find_simulator(build.sim)
    t0 = time.perf_counter()
    try:
        with _outside_pytest():
            runner = _get_runner(build.sim)
            runner.test(
                test_module=_TB_MODULE,
                hdl_toplevel=build.top,
                hdl_toplevel_lang="verilog",
                build_dir=build.build_dir,
                test_dir=rdir,
                results_xml=str(results_xml),
                extra_env={"PQFLOW_STREAM_JOB": str(job_path)},
                seed=int(seed),
                log_file=log,
            )
        n_tests, n_failed = get_results(results_xml)
    except (RuntimeError, SystemExit) as exc:
        raise SimulationError(
            f"{build.sim} run of {build.top!r} crashed ({exc}); log {log}:\n{_log_tail(log)}"
        ) from None
    sim_seconds = time.perf_counter() - t0
    raw = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if "bench_error" in raw:
        raise SimulationError(f"stream bench on {build.top!r}: {raw['bench_error']} (log {log})")
    if n_failed or "stream" not in raw:
        raise SimulationError(
            f"the stream bench failed on {build.top!r} ({n_failed} of {n_tests} cocotb "
            f"tests); log {log}:\n{_log_tail(log)}"
        )
    if run_dir is None:
        shutil.rmtree(rdir, ignore_errors=True)

    return _judge(
        raw, ys, n_out, out_width, out_signed, max_mismatches, sim_seconds, build, out_beats
    )


def _compare(
    got: np.ndarray, want: np.ndarray, phase: str, limit: int
) -> tuple[list[Mismatch], int]:
    n = min(len(got), len(want))
    bad = np.flatnonzero((got[:n] != want[:n]).any(axis=1))
    first = [
        Mismatch(int(i), tuple(int(v) for v in want[i]), tuple(int(v) for v in got[i]), phase)
        for i in bad[:limit]
    ]
    return first, int(bad.size)


def _judge(
    raw: dict,
    ys: np.ndarray,
    n_out: int,
    out_width: int,
    out_signed: bool,
    limit: int,
    sim_seconds: float,
    build: SimBuild,
    out_beats: int = 1,
) -> SimResult:
    stream, timing = raw["stream"], raw["timing"]
    n_vec = len(ys)
    outputs = unpack_payload([int(w, 16) for w in stream["outputs"]], n_out, out_width, out_signed)
    mismatches, n_bad = _compare(outputs, ys, "stream", limit)
    errors = [stream["error"]] if stream["error"] else []
    if not stream["error"] and len(outputs) != n_vec:
        errors.append(f"received {len(outputs)} of {n_vec} output vectors")
    if stream["extra_outputs"]:
        errors.append(f"{stream['extra_outputs']} extra output vectors after the last one")

    latency = ii = None
    if timing is not None:
        t_words = [int(w, 16) for w in timing["outputs"]]
        t_out = unpack_payload(t_words, n_out, out_width, out_signed)
        room = max(0, limit - len(mismatches))
        t_bad, t_n_bad = _compare(t_out, ys[: len(t_out)], "timing", room)
        mismatches += t_bad
        n_bad += t_n_bad
        if timing["error"]:
            errors.append(f"timing phase: {timing['error']}")
        if timing["in_cycles"] and timing["out_cycles"]:
            latency = timing["out_cycles"][0] - timing["in_cycles"][0]
        outs = timing["out_cycles"][::out_beats]  # the first beat of each sample
        if len(outs) > 1:
            ii = (outs[-1] - outs[0]) / (len(outs) - 1)

    stream_seconds = raw.get("stream_seconds") or sim_seconds
    return SimResult(
        passed=not errors and n_bad == 0 and len(outputs) == n_vec,
        n_vectors=n_vec,
        outputs=outputs,
        mismatches=tuple(mismatches),
        n_mismatches=n_bad,
        cycles=int(stream["cycles"]),
        latency_cycles=latency,
        ii_cycles=ii,
        vectors_per_second=n_vec / stream_seconds if stream_seconds > 0 else float("inf"),
        sim_seconds=sim_seconds,
        extra_outputs=int(stream["extra_outputs"]),
        error="; ".join(errors) or None,
        build=build,
    )


def verify_stream(
    verilog: str,
    top: str,
    in_vectors: np.ndarray,
    in_width: int,
    in_signed: bool,
    expected: np.ndarray,
    out_width: int,
    out_signed: bool,
    *,
    sim: str = "verilator",
    seed: int = 0,
    stall_prob: float = 0.3,
    backpressure_prob: float = 0.3,
    timing_vectors: int = 32,
    timeout_cycles: int = 100_000,
    ports: StreamPorts = StreamPorts(),
    build_dir: Path | str | None = None,
    run_dir: Path | str | None = None,
    max_mismatches: int = 8,
    in_beats: int = 1,
    out_beats: int = 1,
) -> SimResult:
    """Simulate ``verilog`` and check it maps each input vector to the expected one.

    ``in_vectors`` (N, n_in) and ``expected`` (N, n_out) are integer arrays of raws;
    ``*_width``/``*_signed`` give the element type of each payload. The stream phase
    sends all N vectors with probability ``stall_prob`` of holding ``valid`` low (the
    payload then carries garbage) and ``backpressure_prob`` of holding the output's
    ``ready`` low, each cycle, from a generator seeded by ``seed``; a design that makes
    no handshake for ``timeout_cycles`` cycles fails. The timing phase resends the
    first ``timing_vectors`` vectors with no stalls. ``build_dir`` overrides the cached
    build location; ``run_dir`` keeps the job, log and results (else a temp dir, removed unless the
    bench itself fails).

    A sample may span several beats: ``in_beats``/``out_beats`` per sample (an (H, W, C)
    pixel stream is H * W beats of C raws; ``in_vectors`` then has N * in_beats rows).
    Beats are compared one by one; ``timing_vectors`` counts samples, ``latency_cycles``
    runs from the first input beat to the first output beat and ``ii_cycles`` is per
    sample.
    """
    build = build_design(verilog, top, sim, build_dir=build_dir)
    return run_stream(
        build,
        in_vectors,
        in_width,
        in_signed,
        expected,
        out_width,
        out_signed,
        seed=seed,
        stall_prob=stall_prob,
        backpressure_prob=backpressure_prob,
        timing_vectors=timing_vectors,
        timeout_cycles=timeout_cycles,
        ports=ports,
        max_mismatches=max_mismatches,
        run_dir=run_dir,
        in_beats=in_beats,
        out_beats=out_beats,
    )
