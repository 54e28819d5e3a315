"""Estimate vs yosys on the held-out designs (never used for calibration).

    .venv/bin/python benchmarks/bench_estimate.py [-j 2] [--family xilinx|ice40]

Prints a Markdown table per design and family: yosys LUT/FF/DSP/BRAM, the estimate, the
relative errors, yosys run time (of the first, uncached run) and estimate time, and the
worst errors. yosys results are cached by Verilog hash (``~/.cache/pqflow/yosys``).
"""

from __future__ import annotations

import argparse
import time

from pqflow.estimate import estimate
from pqflow.estimate.calibrate import FAMILY_DEVICES, HELD_OUT, build
from pqflow.estimate.yosys import synthesize
from pqflow.hwgen.amaranth import generate_verilog


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--family", choices=sorted(FAMILY_DEVICES), action="append")
    args = p.parse_args()
    families = args.family or sorted(FAMILY_DEVICES, reverse=True)
    print(
        "| design | family | LUT yosys / est (err) | FF yosys / est (err) | DSP yosys / est "
        "| BRAM | latency RTL / est | yosys s | estimate ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    worst = {f: {"lut": 0.0, "ff": 0.0, "dsp": 0} for f in families}
    for spec in HELD_OUT:
        design = build(spec)
        v = generate_verilog(design)
        for family in families:
            dev = FAMILY_DEVICES[family]
            r = synthesize(v.text, v.top, family, dsp=dev.dsp is not None, arch=dev.yosys_arch)
            t0 = time.perf_counter()
            e = estimate(design, dev)
            ms = (time.perf_counter() - t0) * 1e3
            el = (e.lut - r["lut"]) / max(r["lut"], 1)
            ef = (e.ff - r["ff"]) / max(r["ff"], 1)
            w = worst[family]
            w["lut"], w["ff"] = max(w["lut"], abs(el)), max(w["ff"], abs(ef))
            w["dsp"] += int(e.dsp != r["dsp"])
            print(
                f"| {spec.name} | {family} | {r['lut']} / {e.lut:.0f} ({el:+.0%}) "
                f"| {r['ff']} / {e.ff:.0f} ({ef:+.0%}) | {r['dsp']} / {e.dsp} "
                f"| {r['bram']} / {e.bram} | {v.latency} / {e.latency} "
                f"| {r['seconds']:.1f} | {ms:.1f} |"
            )
    for f, w in worst.items():
        print(
            f"\n{f}: worst |LUT err| {w['lut']:.0%}, worst |FF err| {w['ff']:.0%}, "
            f"DSP mismatches {w['dsp']}"
        )


if __name__ == "__main__":
    main()
