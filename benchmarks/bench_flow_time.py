"""Time from a torch model to verified Verilog, per step, for the digits MLP (issue 9).

Runs the flow's own steps (``pqflow.flow.STEPS``) on ``examples/digits_mlp.toml`` up to
``generate`` -- data, train (the float torch model), compress (w8a8 PTQ), lower (the IR),
oracle (accuracy on the test split), generate (Amaranth -> Verilog) -- then verifies the
Verilog against the oracle exactly as the flow's ``verify`` step does (the config's
simulator, vectors, seed, stall and back-pressure probabilities), but through
``verify_graph`` directly so the simulator build and the simulation are timed apart.

By default the Verilator build is cold: it goes into a fresh temporary folder, as on a
fresh clone; ``--warm`` uses pqflow's build cache (what a rerun of the flow sees).
``imports`` is the time to import torch, numba and pqflow in this fresh process.

    .venv/bin/python benchmarks/bench_flow_time.py

and paste the table into BENCHMARKS.md.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "examples" / "digits_mlp.toml")
    ap.add_argument("--warm", action="store_true", help="reuse pqflow's simulator build cache")
    args = ap.parse_args()

    import numba  # noqa: F401
    import torch  # noqa: F401

    from pqflow import flow
    from pqflow.config import load_config
    from pqflow.sim.graph import verify_graph

    rows: list[tuple[str, float, str]] = [("imports", time.perf_counter() - T_START, "")]
    tmp = Path(tempfile.mkdtemp(prefix="bench_flow_time_"))
    (tmp / "out").mkdir()
    st = flow.FlowState(config=load_config(args.config), work=tmp / "out")
    for name, fn in flow.STEPS:
        t = time.perf_counter()
        fn(st)
        seconds = time.perf_counter() - t
        note = ""
        if name == "train":
            note = f"float accuracy {st.summary['float']['accuracy']:.2%}"
        elif name == "compress":
            note = f"compressed accuracy {st.summary['quantized']['accuracy']:.2%}"
        elif name == "lower":
            note = f"{st.summary['ir']['nodes']} nodes, {st.summary['ir']['nonzero']} weights"
        elif name == "oracle":
            note = f"accuracy {st.summary['oracle']['accuracy']:.2%}"
        elif name == "generate":
            note = f"{st.design.text.count(chr(10))} lines of Verilog"
        rows.append((name, seconds, note))
        if name == "generate":
            break

    v = st.config.verify
    x = st.split.x_test[: v.vectors] if v.vectors else st.split.x_test
    opts = {} if args.warm else {"build_dir": tmp / "sim_build"}
    t = time.perf_counter()
    res = verify_graph(
        st.design,
        st.graph,
        x,
        sim=v.simulator,
        seed=v.seed,
        stall_prob=v.stall_prob,
        backpressure_prob=v.backpressure_prob,
        **opts,
    )
    total_verify = time.perf_counter() - t
    if not res.passed:
        raise SystemExit(f"verification failed: {res.summary()}")
    build = 0.0 if res.build.cached else res.build.build_seconds
    cached = " (cached)" if res.build.cached else ""
    rows.append((f"verify: {v.simulator} build{cached}", build, ""))
    rows.append(
        (
            f"verify: {v.simulator} simulation + oracle vectors",
            total_verify - build,
            f"{res.n_vectors} vectors bit-exact, {res.vectors_per_second:,.0f} vectors/s "
            f"in the stream phase",
        )
    )
    total = time.perf_counter() - T_START
    print(f"load average at the end: {os.getloadavg()[0]:.2f}; config {args.config}")
    print()
    print("| step | seconds | |")
    print("|---|---:|---|")
    for name, s, note in rows:
        print(f"| {name} | {s:.1f} | {note} |")
    print(f"| **total, process start to verified Verilog** | **{total:.1f}** | |")


if __name__ == "__main__":
    main()
