"""Estimate vs yosys on the held-out designs (never used for calibration), and iCE40 Fmax.

    .venv/bin/python benchmarks/bench_estimate.py [--target xc7|xcup|ice40 ...] [--fmax N]

Prints a Markdown table per design and target (yosys LUT/FF/DSP/BRAM, the estimate, the
relative errors, latency RTL / estimate, yosys seconds of the first, uncached run), then
the worst and mean |error| per style and target, for the held-out set and for the fit
(calibration) set. ``--fmax N`` places and routes the first N held-out designs of each
style on the iCE40 HX8K with nextpnr-ice40 and prints their Fmax. yosys and nextpnr
results are cached by design hash (``~/.cache/pqflow/{yosys,nextpnr}``); run it with
``nice``, the machine is shared.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from pqflow.estimate import estimate
from pqflow.estimate.calibrate import (
    CALIBRATION,
    CNN_CALIBRATION,
    CNN_HELD_OUT,
    HELD_OUT,
    TARGETS,
    build_any,
)
from pqflow.estimate.yosys import synthesize
from pqflow.hwgen.amaranth import generate_verilog


def _style(spec) -> str:
    return "cnn" if hasattr(spec, "cin") else spec.style


def rows(specs, targets, table: bool) -> list[dict]:
    out = []
    for spec in specs:
        design = build_any(spec)
        v = generate_verilog(design)
        for t in targets:
            dev = TARGETS[t]
            r = synthesize(v.text, v.top, dev.family, dsp=dev.dsp is not None, arch=dev.yosys_arch)
            t0 = time.perf_counter()
            e = estimate(design, dev)
            ms = (time.perf_counter() - t0) * 1e3
            el = (e.lut - r["lut"]) / max(r["lut"], 1)
            ef = (e.ff - r["ff"]) / max(r["ff"], 1)
            out.append(
                {"style": _style(spec), "target": t, "lut": el, "ff": ef}
                | {"dsp": e.dsp == r["dsp"], "bram": e.bram == r["bram"]}
            )
            if table:
                print(
                    f"| {spec.name} | {t} | {r['lut']} / {e.lut:.0f} ({el:+.0%}) "
                    f"| {r['ff']} / {e.ff:.0f} ({ef:+.0%}) | {r['dsp']} / {e.dsp} "
                    f"| {r['bram']} / {e.bram} | {v.latency} / {e.latency} "
                    f"| {r['seconds']:.1f} | {ms:.1f} |"
                )
    return out


def summary(title: str, rs: list[dict]) -> None:
    print(f"\n{title}\n")
    print(
        "| style | target | designs | LUT worst / mean abs err | FF worst / mean abs err "
        "| DSP, BRAM exact |"
    )
    print("|---|---|---|---|---|---|")
    groups = defaultdict(list)
    for r in rs:
        groups[(r["style"], r["target"])].append(r)
    for (style, t), g in sorted(groups.items()):
        lut = [abs(r["lut"]) for r in g]
        ff = [abs(r["ff"]) for r in g]
        exact = sum(r["dsp"] and r["bram"] for r in g)
        print(
            f"| {style} | {t} | {len(g)} | {max(lut):.0%} / {sum(lut) / len(g):.0%} "
            f"| {max(ff):.0%} / {sum(ff) / len(g):.0%} | {exact}/{len(g)} |"
        )


def fmax(n: int) -> None:
    from pqflow.estimate.pnr import fmax_ice40

    print("\n| design | iCE40 HX8K logic cells | Fmax MHz (nextpnr-ice40, seed 1) | seconds |")
    print("|---|---|---|---|")
    per_style: dict[str, int] = defaultdict(int)
    for spec in HELD_OUT + CNN_HELD_OUT:
        if per_style[_style(spec)] >= n:
            continue
        per_style[_style(spec)] += 1
        v = generate_verilog(build_any(spec))
        r = fmax_ice40(v.text, v.top, "ice40hx8k")
        print(f"| {spec.name} | {r['logic_cells']} | {r['fmax_mhz']} | {r['seconds']:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--target", choices=sorted(TARGETS), action="append")
    p.add_argument("--fmax", type=int, default=0, help="Fmax of N designs per style")
    p.add_argument("--no-fit", action="store_true", help="skip the calibration-set summary")
    args = p.parse_args()
    targets = args.target or ["xc7", "xcup", "ice40"]
    print(
        "| design | target | LUT yosys / est (err) | FF yosys / est (err) | DSP yosys / est "
        "| BRAM | latency RTL / est | yosys s | estimate ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    held = rows(HELD_OUT + CNN_HELD_OUT, targets, table=True)
    summary("Held-out designs (not used for calibration):", held)
    if not args.no_fit:
        fit_targets = [t for t in targets if t != "xcup"]  # fitted on the 7-series
        summary(
            "Fit (calibration designs):", rows(CALIBRATION + CNN_CALIBRATION, fit_targets, False)
        )
    if args.fmax:
        fmax(args.fmax)


if __name__ == "__main__":
    main()
