"""Estimates: device profiles, the model registry, the DSP rule, cycles vs the RTL and the
simulator, and held-out accuracy against yosys."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from pqflow.estimate import (
    DEVICES,
    ICE40_HX8K,
    ICE40_UP5K,
    XC7Z020,
    XCZU3EG,
    EstimateError,
    device,
    estimate,
)
from pqflow.estimate.calibrate import CNN_HELD_OUT, HELD_OUT, TARGETS, Spec, build, build_any
from pqflow.estimate.models import dsp_blocks, mul_dsp, softmul_luts, unrolled_trees
from pqflow.hwgen.design import Design, Folded, Sparse
from pqflow.ir import BinaryDense, Bipolar, Dense, Fixed, Float, GraphBuilder, Quantize, Weight


def test_devices_are_frozen_profiles():
    assert XC7Z020.dsp.name == "DSP48E1" and (XC7Z020.dsp.a_width, XC7Z020.dsp.b_width) == (25, 18)
    assert XCZU3EG.dsp.name == "DSP48E2" and XCZU3EG.dsp.a_width == 27
    assert DEVICES["xczu7ev"].urams == 96
    assert ICE40_UP5K.lut_inputs == 4 and ICE40_UP5K.dsp.name == "SB_MAC16"
    assert ICE40_HX8K.dsp is None and ICE40_HX8K.bram.bits == 4096
    with pytest.raises(dataclasses.FrozenInstanceError):
        XC7Z020.luts = 1
    assert device("xc7z020") is XC7Z020
    with pytest.raises(ValueError, match="unknown device 'nope'; known devices: "):
        device("nope")


def test_dsp_rule_is_yosys_mul2dsp():
    d = XC7Z020.dsp
    # measured with synth_xilinx: x (signed w) * odd constant m, product width w + bits(m)
    assert dsp_blocks(d, 6, True, 4, True, 6 + 3) == 1  # x6 * 7: 9 bits -> DSP48E1
    assert dsp_blocks(d, 6, True, 3, True, 6 + 2) == 0  # x6 * 3: 8 bits -> LUTs
    assert dsp_blocks(d, 2, True, 8, True, 2 + 7) == 1  # x2 * 127
    assert dsp_blocks(d, 1, False, 8, False, 9) == 0  # a 1-bit operand stays in logic
    assert dsp_blocks(d, 30, True, 10, True, 40) == 2  # split along A
    assert dsp_blocks(ICE40_UP5K.dsp, 6, True, 4, True, 10) == 0  # SB_MAC16 needs 11 bits


def test_soft_product_table_covers_what_the_dsp_rule_leaves_in_logic(tmp_path, monkeypatch):
    """softmul.json has an entry for exactly the constant products x * m (x of 2-16 bits,
    m odd) that the Xilinx DSP rule keeps out of a DSP; none for the iCE40s."""
    import json

    from pqflow.estimate import models

    table = json.loads(models.SOFTMUL_PATH.read_text())["luts"]["xilinx"]
    for w in range(2, 17):
        for signed in (True, False):
            for m in range(3, 1 << 12, 2):
                y = w + m.bit_length()
                soft = not mul_dsp(XC7Z020, w, signed, m.bit_length() + signed, signed, y)
                assert (models.softmul_key(w, signed, m) in table) == soft, (w, signed, m)
    assert softmul_luts(XC7Z020, 5, True, 3) == table["5sx3"]
    assert softmul_luts(XCZU3EG, 5, True, 3) == table["5sx3"]
    assert softmul_luts(XC7Z020, 1, True, 27) == 0  # a 1-bit operand: wiring
    assert softmul_luts(ICE40_HX8K, 5, True, 3) is None
    # sign extension: a signed 5-bit x * 3 costs more than an unsigned one
    assert softmul_luts(XC7Z020, 5, True, 3) > softmul_luts(XC7Z020, 5, False, 3)
    # soft only in the bits synthesis keeps: popcount(m) - 1 adders of the product's width
    assert softmul_luts(XC7Z020, 8, True, 11) == (8 + 4) * 2
    models._load_softmul.cache_clear()
    monkeypatch.setattr(models, "SOFTMUL_PATH", tmp_path / "softmul.json")
    with pytest.raises(EstimateError, match="calibrate --softmul"):
        softmul_luts(XC7Z020, 5, True, 3)
    models._load_softmul.cache_clear()


@pytest.mark.yosys
@pytest.mark.parametrize(("width", "signed", "m"), [(5, True, 3), (3, False, 27)])
def test_soft_product_table_is_what_yosys_builds(width, signed, m):
    """A table entry is yosys's LUTs for the one-product Dense less those for x * 1."""
    from pqflow.estimate.calibrate import _product_design
    from pqflow.estimate.yosys import synthesize
    from pqflow.hwgen.amaranth import generate_verilog

    def luts(design):
        v = generate_verilog(design)
        return synthesize(v.text, v.top, "xilinx", arch=XC7Z020.yosys_arch)["lut"]

    got = luts(_product_design(width, signed, m)) - luts(_product_design(width, signed, 1))
    assert softmul_luts(XC7Z020, width, signed, m) == got


def _graph(w, bias=None):
    xt = Fixed(8, 7, True)
    b = GraphBuilder("g")
    v = b.add(Quantize(xt), b.input("x", Float(), (w.shape[1],)))
    wt = Fixed(8, 7, True)
    bw = None if bias is None else Weight(np.asarray(bias), Fixed(16, wt.frac + xt.frac, True))
    v = b.add(Dense(Weight(np.asarray(w), wt), bw), v, name="fc")
    return b.build(v)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("products", ["mul", "csd"])
def test_tree_mirror_matches_unrolled_dense(seed, products):
    from pqflow.hwgen.amaranth import UnrolledDense

    rng = np.random.default_rng(seed)
    n_out, n_in = int(rng.integers(1, 6)), int(rng.integers(1, 12))
    w = rng.integers(-128, 128, (n_out, n_in))
    w[rng.random(w.shape) < 0.4] = 0
    bias = rng.integers(-50, 50, n_out) * rng.integers(0, 2, n_out)
    g = _graph(w, bias=bias)
    xt, acc = Fixed(8, 7, True), g.types()["fc"].dtype
    lps = int(rng.integers(1, 4))
    u = UnrolledDense(g.node("fc").op, xt, acc, levels_per_stage=lps, products=products)
    t = unrolled_trees(g.node("fc").op, xt, lps, products)
    assert (t.depth, t.latency, len(t.adders)) == (u.depth, u.latency, u.adders)
    assert len(t.products) == u.multipliers


def test_estimate_totals_and_chain():
    design = build(HELD_OUT[0])
    e = estimate(design, "xc7z020")
    assert [n.op for n in e.nodes] == ["Dense", "Requant"]
    assert e.latency == sum(n.latency for n in e.nodes) and e.ii == 1
    assert e.lut == pytest.approx(sum(n.lut for n in e.nodes)) and e.lut > 0 and e.ff > 0
    assert e.totals()["dsp"] == e.dsp
    assert e.to_dict()["nodes"][0]["node"] == "fc"


def test_op_without_model_raises_naming_node_and_op():
    b = GraphBuilder("bin")
    v = b.input("x", Bipolar(), (4,))
    v = b.add(BinaryDense(Weight(np.ones((2, 4), dtype=np.int64), Bipolar())), v, name="bd")
    g = b.build(v)
    with pytest.raises(EstimateError, match=r"'bd'.*no resource model for BinaryDense in style"):
        estimate(Design(g, {"bd": Sparse(pe=2)}))  # binary weights have no zeros to skip


def test_every_hardware_op_has_a_model():
    """Each op the RTL generator builds (in each style it builds) has a resource model."""
    from pqflow.estimate.models import registry
    from pqflow.hwgen.amaranth.top import op_unit
    from pqflow.ir import BinaryConv2d, Conv2d

    keyed = {(c, s) for c, s in registry}
    for cls in op_unit.registry:
        if cls is not object:
            assert (cls, "unit") in keyed, cls.__name__
    for cls in (Dense, BinaryDense, Conv2d, BinaryConv2d):
        for style in ("unrolled", "folded"):
            assert (cls, style) in keyed, (cls.__name__, style)
    assert (Dense, "sparse") in keyed and (Conv2d, "sparse") in keyed


def test_folded_and_sparse_cycles_match_rtl():
    from pqflow.hwgen.amaranth import generate_verilog

    rng = np.random.default_rng(3)
    w = rng.integers(-8, 8, (4, 6))
    w[rng.random(w.shape) < 0.5] = 0
    g = _graph(w)
    for impl in (Folded(pe=2, simd=3), Folded(pe=1, simd=1), Sparse(pe=2)):
        d = Design(g, {"fc": impl})
        e = estimate(d, "xc7z020")
        v = generate_verilog(d)
        assert e.latency == v.latency
        if v.cycles_per_vector is not None:
            assert e.ii == v.cycles_per_vector


# --- against yosys and the simulator (held-out designs only) ------------------------------

CHEAP_HELD_OUT = [s for s in HELD_OUT if s.n_in * s.n_out <= 15][:4]

CI_HELD_OUT = [
    *[s for s in HELD_OUT if s.style == "unrolled"][:3],
    *[s for s in HELD_OUT if s.style == "folded"][:2],
    *[s for s in HELD_OUT if s.style == "sparse"][:2],
    *CNN_HELD_OUT[:2],
]
"""The first held-out designs of each kind (never used for calibration): CI synthesizes
them on every target (yosys results cached by Verilog hash); benchmarks/bench_estimate.py
checks the whole held-out set."""

YOSYS_HELD_OUT = (
    [*HELD_OUT, *CNN_HELD_OUT] if os.environ.get("PQFLOW_HELD_OUT") == "all" else CI_HELD_OUT
)
"""The designs the yosys accuracy test synthesizes: ``PQFLOW_HELD_OUT=all`` puts every
held-out design through it (75 pairs with the targets, about 20 minutes of yosys on 2
cores uncached; CI runs ``CI_HELD_OUT``)."""


def _synth(spec, target: str):
    from pqflow.estimate.yosys import synthesize
    from pqflow.hwgen.amaranth import generate_verilog

    design = build_any(spec)
    v = generate_verilog(design)
    dev = TARGETS[target]
    r = synthesize(v.text, v.top, dev.family, dsp=dev.dsp is not None, arch=dev.yosys_arch)
    return r, estimate(design, dev)


@pytest.mark.parametrize("spec", CI_HELD_OUT, ids=lambda s: s.name)
def test_latency_and_ii_are_the_rtl_ones(spec):
    """Latency and cycles per sample equal the generated RTL's (every style, pixel
    streams through their schedules, a residual DAG with its skip FIFO)."""
    from pqflow.hwgen.amaranth import generate_verilog

    design = build_any(spec)
    v = generate_verilog(design)
    e = estimate(design)
    assert e.latency == v.latency
    if v.cycles_per_vector is not None:  # sparse: data-dependent (cycles_on_data below)
        assert e.ii == v.cycles_per_vector


@pytest.mark.yosys
@pytest.mark.parametrize(
    ("spec", "target"),
    [
        pytest.param(spec, target, id=f"{spec.name}-{target}")
        for spec in YOSYS_HELD_OUT
        for target in sorted(TARGETS)
    ],
)
def test_held_out_within_25_percent_of_yosys(spec, target: str):
    """DSP and BRAM exact, LUT and FF within 25% of yosys, on held-out designs."""
    r, e = _synth(spec, target)
    assert (e.dsp, e.bram) == (r["dsp"], r["bram"]), f"{spec.name} on {target}: DSP/BRAM"
    errs = {k: (getattr(e, k) - r[k]) / max(r[k], 1) for k in ("lut", "ff")}
    assert all(abs(v) <= 0.25 for v in errs.values()), (
        f"{spec.name} on {target}: LUT {e.lut:.0f} vs yosys {r['lut']} ({errs['lut']:+.0%}), "
        f"FF {e.ff:.0f} vs yosys {r['ff']} ({errs['ff']:+.0%}); the target is 25%"
    )


@pytest.mark.verilator
def test_unrolled_cycles_match_simulation():
    from pqflow.hwgen.amaranth import generate_verilog
    from pqflow.sim.graph import verify_graph

    design = build(CHEAP_HELD_OUT[0])
    v = generate_verilog(design)
    x = np.random.default_rng(0).uniform(-1, 1, (16, design.graph.inputs[0].type.shape[0]))
    res = verify_graph(v, design.graph, x, sim="verilator")
    assert res.passed, res
    e = estimate(design)
    assert res.latency_cycles == e.latency
    assert res.ii_cycles == pytest.approx(e.ii)


def _folded_held_out() -> Spec:
    return next(s for s in HELD_OUT if s.style == "folded")


@pytest.mark.verilator
def test_folded_cycles_match_simulation():
    """Latency and II of a held-out folded design (with its requant tail) are exactly the
    simulated ones."""
    from pqflow.hwgen.amaranth import generate_verilog
    from pqflow.sim.graph import verify_graph

    design = build(_folded_held_out())
    v = generate_verilog(design)
    x = np.random.default_rng(1).uniform(-1, 1, (12, design.graph.inputs[0].type.shape[0]))
    res = verify_graph(v, design.graph, x, sim="verilator")
    assert res.passed, res.summary()
    e = estimate(design)
    assert e.ii > 1
    assert (res.latency_cycles, res.ii_cycles) == (e.latency, e.ii)


@pytest.mark.verilator
def test_sparse_cycles_on_digits_within_10_percent():
    """A sparse(PE=2) layer on real digits images (zero pixels skipped at run time): the
    estimate on the data is within 10% of the simulated II, its first latency exact, and
    well below the data-independent worst case."""
    from sklearn.datasets import load_digits

    from pqflow.estimate import cycles_on_data
    from pqflow.hwgen.amaranth import generate_verilog
    from pqflow.ir import Dequantize
    from pqflow.sim.graph import verify_graph

    x = load_digits().data[:40]
    rng = np.random.default_rng(8)
    w = rng.integers(-31, 32, (10, 64))
    w[rng.random(w.shape) < 0.7] = 0
    b = GraphBuilder("digits_sparse")
    v = b.add(Quantize(Fixed(5, 0, False)), b.input("x", Float(), (64,)))
    v = b.add(Dense(Weight(w, Fixed(6, 5, True))), v, name="fc")
    design = Design(b.build(b.add(Dequantize(), v)), {"fc": Sparse(pe=2)})
    rtl = generate_verilog(design)
    res = verify_graph(rtl, design.graph, x, sim="verilator", timing_vectors=len(x))
    assert res.passed, res.summary()
    on_data = cycles_on_data(design, x)
    assert on_data.ii == pytest.approx(res.ii_cycles, rel=0.10)
    assert on_data.latency[0] == res.latency_cycles
    assert on_data.ii < 0.8 * estimate(design).ii


def test_fmax_ice40_names_the_devices_it_accepts():
    from pqflow.estimate.pnr import fmax_ice40

    with pytest.raises(
        ValueError, match=r"device must be one of ice40hx8k, ice40up5k, not 'xc7z020'"
    ):
        fmax_ice40("module t(); endmodule", "t", "xc7z020")
