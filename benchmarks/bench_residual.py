"""RTL build of the digits resnet_tiny (issue 6): latency, II, skip FIFO depths, build time.

The graph of ``tests/hwgen/test_residual_rtl.py`` (``residual_helpers.resnet_tiny``:
trained 2 epochs, 50% of its filters pruned (L1), w8a8, lowered by ``pqflow.models.lower``)
built unrolled as a ``DataflowGraphTop``: convolutions on pixel streams (64 one-pixel beats in, one
vector of 10 logits out per image), a fork, a skip FIFO and an ``Add`` per residual
block. Verified on Verilator against the oracle with random input stalls and output
back-pressure (p = 0.3 each); latency and II come from the harness's stall-free timing
phase (32 images), vectors/s is the stream phase (harness throughput).

``--depths add=18,add_1=8`` forces skip FIFO depths (the sizing's check is bypassed) to
show what a smaller FIFO costs: throughput (II) or a deadlock, which the harness reports
as a timeout. Run::

    .venv/bin/python benchmarks/bench_rtl.py --resnet --images 360
    .venv/bin/python benchmarks/bench_residual.py --images 360 --depths add=18,add_1=8
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import platform
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _resnet_tiny():
    """``resnet_tiny`` of tests/hwgen/residual_helpers.py, so both build the same design."""
    path = ROOT / "tests" / "hwgen" / "residual_helpers.py"
    spec = importlib.util.spec_from_file_location("residual_helpers", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.resnet_tiny


def run(images: int = 360, seed: int = 1, depths: dict | None = None) -> int:
    """Build, verify and print one table row; the exit status (1 on a failure)."""
    warnings.filterwarnings("ignore")
    from pqflow.hwgen import generate_verilog
    from pqflow.hwgen.amaranth import graph_top
    from pqflow.models import load_digits_split
    from pqflow.sim import simulator_version
    from pqflow.sim.graph import verify_graph
    from pqflow.sim.runner import _STAMP

    t0 = time.perf_counter()
    data = load_digits_split(image=True)
    graph = _resnet_tiny()(data)
    print(f"model trained, pruned, quantized, lowered in {time.perf_counter() - t0:.1f} s")
    needs = graph_top.DataflowGraphTop(graph).fifo_needs
    if depths:
        graph_top._check_depth = lambda *args: None  # show what a smaller FIFO does
    t = time.perf_counter()
    d = generate_verilog(graph, fifo_depths=depths)
    gen_s = time.perf_counter() - t
    x = data.x_test[:images]
    res = verify_graph(d, graph, x, sim="verilator", seed=seed, timeout_cycles=20_000)
    print(res.summary(), flush=True)
    b_s = res.build.build_seconds
    if res.build.cached:
        b_s = float(json.loads((Path(res.build.build_dir) / _STAMP).read_text())["seconds"])
    fifo = ", ".join(
        f"{a} {n} (needs {needs[a][1]}, deadlock below {needs[a][0]})" for a, n in d.fifo_depths
    )
    print()
    print(
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"python {sys.version.split()[0]}; verilator {simulator_version('verilator')}"
    )
    print()
    print(
        f"| model | style | simulator | {len(x)} images | latency (cycles) | model latency "
        "| II (cycles) | design cycles/image | skip FIFO depths | Verilog lines "
        "| Verilog gen (s) | build (s) | vectors/s |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    ii = "-" if res.ii_cycles is None else f"{res.ii_cycles:.1f}"
    print(
        f"| resnet_tiny w8a8 50% filters | unrolled | verilator | "
        f"{'pass' if res.passed else 'FAIL: ' + str(res.error)} | {res.latency_cycles} "
        f"| {d.latency} | {ii} | {d.cycles_per_vector} | {fifo} | {d.text.count(chr(10))} "
        f"| {gen_s:.1f} | {b_s:.1f}{'*' if res.build.cached else ''} "
        f"| {res.vectors_per_second:.0f} |"
    )
    return 0 if res.passed else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=360, help="test images (at most 360)")
    ap.add_argument("--seed", type=int, default=1, help="stall / back-pressure seed")
    ap.add_argument("--depths", default="", help="forced skip FIFO depths: add=18,add_1=8")
    args = ap.parse_args()
    depths = {k: int(v) for k, v in (p.split("=") for p in args.depths.split(",") if p)}
    sys.exit(run(args.images, args.seed, depths or None))


if __name__ == "__main__":
    main()
