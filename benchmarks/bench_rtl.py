"""RTL builds of the digits MLPs (issue 5): latency, II, size, build time, harness throughput.

Builds the same graphs as ``tests/hwgen/test_digits_builds.py`` (the digits MLP at w8a8
and 80% element sparsity, and the fully binary MLP; seed 0) as

- ``unrolled``: every Dense unrolled (constant weights in logic), one vector per cycle;
- ``folded``: fc0 Folded(16, 16), fc1 Folded(8, 16), fc2 Folded(8, 8), fc3 Folded(5, 8);
- ``sparse``: every Dense Sparse(pe=4);
- ``binary folded``: the binary MLP, folded like ``folded``;

and verifies each on the whole digits test split (360 images) with random input stalls
and output back-pressure (p = 0.3 each) on Verilator and, unless ``--no-icarus``, on Icarus
for the smaller runs: Icarus is an event-driven interpreter, its run time grows with
Verilog lines x simulated cycles, so a design whose Verilator stream phase took more than
``--icarus-budget`` line-cycles (default 2e8: the folded builds, not the 38k-cycle sparse
run) is left to Verilator. Latency (first input accepted -> first output valid)
and II come from the harness's stall-free timing phase (32 vectors); vectors/s is the
stream phase (360 vectors with stalls) over its wall time, i.e. harness throughput, not
hardware throughput.

Build seconds are the simulator's compile time. A build already in the cache (by design
hash) is not rebuilt: its figure is the one recorded when it was built (marked ``*``);
``--fresh`` rebuilds everything in a temporary directory. Run::

    .venv/bin/python benchmarks/bench_rtl.py

and paste the table into BENCHMARKS.md. ``--cnn`` builds the digits CNNs of
``tests/hwgen/test_conv_rtl.py`` instead (issue 6: the 8-bit cnn with half its filters
pruned and the binary cnn, both folded, as pixel streams: 64 one-pixel beats in, one
vector out per image; II is cycles per image)::

    .venv/bin/python benchmarks/bench_rtl.py --cnn --images 360

``--gated`` builds the digits ``gated_cnn`` of ``tests/hwgen/test_gated_rtl.py`` (issue 6
part C: 8 bits, each gated block one fused ``GatedConvUnit`` on 2 PE lanes) keeping half
of the channels per block and, for comparison, all of them (a ``gated_cnn(keep=1.0)``
trained the same way)::

    .venv/bin/python benchmarks/bench_rtl.py --gated --images 360 --no-icarus

``--resnet`` builds the digits resnet_tiny of ``tests/hwgen/test_residual_rtl.py`` (its
skip FIFO depths are in the table; ``benchmarks/bench_residual.py``)::

    .venv/bin/python benchmarks/bench_rtl.py --resnet --images 360
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _test_graphs(module: str = "test_digits_builds"):
    """``digits_graphs`` (or ``digits_cnns``) from the test module, so both build the very
    same designs."""
    path = ROOT / "tests" / "hwgen" / f"{module}.py"
    spec = importlib.util.spec_from_file_location(module, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _build_seconds(res) -> tuple[float, bool]:
    """(seconds, recorded): the build's own time, or the one recorded in a cached build."""
    if not res.build.cached:
        return res.build.build_seconds, False
    from pqflow.sim.runner import _STAMP

    stamp = json.loads((Path(res.build.build_dir) / _STAMP).read_text())
    return float(stamp.get("seconds", float("nan"))), True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-icarus", action="store_true", help="Verilator only")
    ap.add_argument(
        "--icarus-budget", type=float, default=2e8, help="max Verilog lines x cycles on Icarus"
    )
    ap.add_argument("--fresh", action="store_true", help="rebuild, ignoring the build cache")
    ap.add_argument("--seed", type=int, default=1, help="stall / back-pressure seed")
    ap.add_argument(
        "--resnet",
        action="store_true",
        help="the digits resnet_tiny (issue 6: skip FIFOs, Add) on Verilator "
        "(benchmarks/bench_residual.py)",
    )
    ap.add_argument(
        "--cnn",
        action="store_true",
        help="the digits CNNs (issue 6) as pixel streams instead of the MLPs",
    )
    ap.add_argument(
        "--gated",
        action="store_true",
        help="the digits gated_cnn (issue 6: dynamic channel gating), keep 0.5 and 1.0",
    )
    ap.add_argument("--images", type=int, default=360, help="test images per run (at most 360)")
    args = ap.parse_args()
    if args.resnet:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_residual import run

        sys.exit(run(args.images, args.seed))
    warnings.filterwarnings("ignore")

    from pqflow.hwgen import Design, generate_verilog
    from pqflow.sim import simulator_version
    from pqflow.sim.graph import verify_graph

    t0 = time.perf_counter()
    if args.gated:
        mod = _test_graphs("test_gated_rtl")
        builds = []
        for keep in (0.5, 1.0):
            data, g = mod.digits_gated(keep=keep)
            d = mod.gated_design(g)  # keep 0.5: the very design of the CI test
            if keep != 0.5:
                d = replace(d, name=f"{d.name}_keep{int(keep * 100)}")
            builds.append((f"gated cnn w8 keep {keep}", "gated, 2 PE", d))
    elif args.cnn:
        mod = _test_graphs("test_conv_rtl")
        data, cnn8, bcnn = mod.digits_cnns()
        labels = [
            ("cnn w8 50% filters", "folded"),
            ("binary cnn", "folded"),
            ("cnn w8 50% filters", "sparse pe=8"),
        ]
        designs = mod.cnn_designs(cnn8, bcnn, more=True)
        builds = [(*lab, d) for lab, d in zip(labels, designs, strict=True)]
        builds.append(("binary cnn, BinaryConv2d", "folded", mod.xnor_cnn_design(data)))
    else:
        mod = _test_graphs()
        data, sparse, binary = mod.digits_graphs()
    print(f"models trained, pruned, quantized, lowered in {time.perf_counter() - t0:.1f} s")
    x = data.x_test[: args.images]
    builds = (
        builds
        if args.cnn or args.gated
        else [
            (
                "w8a8 80% sparse",
                "unrolled",
                Design.uniform(sparse, "unrolled", name="digits_unrolled"),
            ),
            ("w8a8 80% sparse", "folded", Design(sparse, mod.FOLDED, name="digits_folded16")),
            (
                "w8a8 80% sparse",
                "sparse pe=4",
                Design.uniform(sparse, "sparse", pe=4, name="digits_sparse4"),
            ),
            ("binary", "folded", Design(binary, mod.BINARY_FOLDED, name="digits_bnn_folded")),
        ]
    )
    sims = ["verilator"] if args.no_icarus else ["verilator", "icarus"]
    tmp = tempfile.TemporaryDirectory(prefix="bench_rtl_") if args.fresh else None
    rows = []
    failures = []
    for model, style, design in builds:
        t = time.perf_counter()
        d = generate_verilog(design)
        gen_s = time.perf_counter() - t
        lines = d.text.count("\n")
        cycles = 0  # of the Verilator stream phase, which runs first
        for sim in sims:
            if sim == "icarus" and lines * cycles > args.icarus_budget:
                print(f"skip {design.name} on icarus ({lines} lines x {cycles} cycles)")
                continue
            opts = {}
            if tmp is not None:
                opts["build_dir"] = Path(tmp.name) / f"{design.name}_{sim}"
            res = verify_graph(d, design.graph, x, sim=sim, seed=args.seed, **opts)
            print(res.summary(), flush=True)
            if sim == "verilator":
                cycles = res.cycles
            if not (res.passed and res.n_mismatches == 0 and res.n_vectors == len(x) * d.out_beats):
                failures.append(res.summary())
            b_s, recorded = _build_seconds(res)
            rows.append(
                (
                    model,
                    style,
                    sim,
                    "pass" if res.passed else "FAIL",
                    res.latency_cycles,
                    res.ii_cycles,
                    d.cycles_per_vector,
                    lines,
                    gen_s,
                    f"{b_s:.1f}{'*' if recorded else ''}",
                    res.vectors_per_second,
                )
            )
    if tmp is not None:
        tmp.cleanup()

    print()
    print(
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"python {sys.version.split()[0]}; "
        + ", ".join(f"{s} {simulator_version(s)}" for s in sims)
    )
    print()
    print(
        f"| model | style | simulator | {len(x)} images | latency (cycles) | II (cycles) "
        "| design cycles/vector | Verilog lines | Verilog gen (s) | build (s) | vectors/s |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for m, st, sim, ok, lat, ii, cpv, lines, gen_s, b_s, vps in rows:
        cpv_s = "data-dependent" if cpv is None else str(cpv)
        print(
            f"| {m} | {st} | {sim} | {ok} | {lat} | {ii:.1f} | {cpv_s} | {lines} "
            f"| {gen_s:.1f} | {b_s} | {vps:.0f} |"
        )
    if failures:
        print("\nFAILURES:\n" + "\n".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
