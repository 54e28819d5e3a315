"""``folded(PE, SIMD)`` matrix-vector units: bit-exact against the oracle, cycles as modelled.

Fast checks run on Amaranth's simulator over random shapes and types; whole networks run
on Verilator (one build per network) and a small one on Icarus.
"""

from __future__ import annotations

import numpy as np
import pytest
from hwgen_helpers import random_fixed, random_mlp, random_raws, ref_dense, run_stream

from pqflow.hwgen import Design, DesignError, Folded, generate_verilog
from pqflow.hwgen.amaranth import FoldedDense
from pqflow.ir import (
    BinaryDense,
    Bipolar,
    Dense,
    Fixed,
    Float,
    GraphBuilder,
    MultiThreshold,
    Quantize,
    TensorType,
    Weight,
)

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def _random_dense(rng: np.random.Generator, n_out: int, n_in: int, in_type: Fixed) -> Dense:
    wt = random_fixed(rng)
    w = random_raws(rng, wt, (n_out, n_in))
    w[rng.random(w.shape) < 0.3] = 0
    bias = None
    if rng.integers(2):
        bias = Weight(rng.integers(-300, 300, n_out), Fixed(12, wt.frac + in_type.frac, True))
    return Dense(Weight(w, wt), bias)


def _check_unit(unit, x: np.ndarray, expected: np.ndarray, seed: int) -> None:
    """Bit-exact with stalls and back-pressure; stall-free latency and II as the unit says."""
    got, _, _ = run_stream(unit, x, seed=seed, stall_prob=0.3, backpressure_prob=0.4)
    assert np.array_equal(got, expected), f"\n{got}\n!=\n{expected}"
    got, ins, outs = run_stream(unit, x, stall_prob=0, backpressure_prob=0)
    assert np.array_equal(got, expected)
    assert outs[0] - ins[0] == unit.latency == unit.cycles_per_vector + 1
    assert set(np.diff(outs)) == {unit.cycles_per_vector}


@pytest.mark.parametrize("seed", range(10))
def test_folded_dense_random(seed):
    rng = np.random.default_rng(seed)
    pe, simd = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    n_out, n_in = pe * int(rng.integers(1, 4)), simd * int(rng.integers(1, 4))
    xt = random_fixed(rng)
    op = _random_dense(rng, n_out, n_in, xt)
    out_type = op.infer(TensorType(xt, (n_in,))).dtype
    unit = FoldedDense(op, xt, out_type, pe=pe, simd=simd)
    assert unit.cycles_per_vector == (n_out // pe) * (n_in // simd)
    x = random_raws(rng, xt, (6, n_in))
    x[0] = xt.min_raw
    x[1] = xt.max_raw
    _check_unit(unit, x, ref_dense(op, x), seed)


def _ref_binary(op: BinaryDense, x: np.ndarray) -> np.ndarray:
    w = 2 * op.weight.data.astype(np.int64) - 1
    return (2 * x.astype(np.int64) - 1) @ w.T


@pytest.mark.parametrize("seed", range(6))
def test_folded_binary_dense_random(seed):
    rng = np.random.default_rng(100 + seed)
    pe, simd = int(rng.integers(1, 5)), int(rng.integers(1, 9))
    n_out, n_in = pe * int(rng.integers(1, 4)), simd * int(rng.integers(1, 4))
    op = BinaryDense(Weight(rng.integers(0, 2, (n_out, n_in)), Bipolar()))
    out_type = op.infer(TensorType(Bipolar(), (n_in,))).dtype
    unit = FoldedDense(op, Bipolar(), out_type, pe=pe, simd=simd)
    x = rng.integers(0, 2, (6, n_in))
    x[0], x[1] = 0, 1
    y = _ref_binary(op, x)
    assert np.abs(y).max() <= n_in
    _check_unit(unit, x, y, seed)


def test_folded_extremes():
    """Widest weights and inputs at both ends of their ranges, bias at its limits."""
    xt, wt = Fixed(8, 0, True), Fixed(8, 0, True)
    w = np.array([[-128] * 4, [127] * 4, [-128, 127, -128, 127], [0] * 4])
    op = Dense(Weight(w, wt), Weight([2047, -2048, 5, 0], Fixed(12, 0, True)))
    unit = FoldedDense(op, xt, op.infer(TensorType(xt, (4,))).dtype, pe=2, simd=2)
    x = np.array([[-128] * 4, [127] * 4, [-128, 127, 127, -128], [0] * 4])
    _check_unit(unit, x, ref_dense(op, x), 0)


def test_folded_errors():
    xt = Fixed(4, 0, False)
    op = Dense(Weight(np.ones((6, 4), dtype=np.int64), Fixed(2, 0, True)))
    acc = op.infer(TensorType(xt, (4,))).dtype
    with pytest.raises(ValueError, match=r"FoldedDense: pe=4 must divide the 6 outputs \(MH\)"):
        FoldedDense(op, xt, acc, pe=4)
    with pytest.raises(ValueError, match=r"FoldedDense: simd=3 must divide the 4 inputs \(MW\)"):
        FoldedDense(op, xt, acc, simd=3)
    with pytest.raises(ValueError, match=r"FoldedDense: pe must be a positive integer, not 0"):
        FoldedDense(op, xt, acc, pe=0)
    with pytest.raises(ValueError, match=r"out_type must be the accumulator type"):
        FoldedDense(op, xt, Fixed(32, 0, True))
    with pytest.raises(TypeError, match=r"op must be a pqflow.ir.Dense or BinaryDense"):
        FoldedDense("dense", xt, acc)


def test_rom_rows_pack_weights_and_biases():
    xt = Fixed(4, 0, False)
    w = np.array([[1, -1], [2, -2]])
    op = Dense(Weight(w, Fixed(3, 0, True)), Weight([3, -1], Fixed(8, 0, True)))
    unit = FoldedDense(op, xt, op.infer(TensorType(xt, (2,))).dtype, pe=1, simd=1)
    aw = unit.out_type.width
    assert unit.rom_width == 3 + aw
    # rows (nf, sf): (0,0) w=1 with bias 3, (0,1) w=-1, (1,0) w=2 with bias -1, (1,1) w=-2
    mask = (1 << aw) - 1
    assert unit.rom_rows() == [1 | 3 << 3, 0b111, 2 | (-1 & mask) << 3, 0b110]


# --- whole networks -----------------------------------------------------------------------


def binary_mlp(sizes=(64, 32, 32, 10), seed: int = 0):
    """Quantize (8-bit) -> Dense with +-1 weights -> MultiThreshold to Bipolar ->
    (BinaryDense -> MultiThreshold to Bipolar)* -> BinaryDense."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("binary_mlp")
    v = b.add(Quantize(Fixed(8, 8, False)), b.input("x", Float(), (sizes[0],)))
    w0 = 2 * rng.integers(0, 2, (sizes[1], sizes[0])) - 1
    v = b.add(Dense(Weight(w0, Fixed(2, 0, True))), v, name="fc0")
    layers = list(zip(sizes[1:], sizes[2:], strict=False))
    for k, (n_in, n_out) in enumerate(layers):
        t = b.type_of(v).dtype
        th = rng.integers(t.min_raw // 4, t.max_raw // 4 + 1, (n_in, 1))
        v = b.add(MultiThreshold(Weight(th, Fixed(t.width, t.frac, True)), Bipolar()), v)
        w = rng.integers(0, 2, (n_out, n_in))
        v = b.add(BinaryDense(Weight(w, Bipolar())), v, name=f"bd{k + 1}")
    return b.build(v)


def _digits(n: int) -> np.ndarray:
    from pqflow.models.data import load_digits_split

    return load_digits_split().x_test[:n]


def _verify(design, graph, x, sim: str, seed: int = 0, timing_vectors: int = 6):
    from pqflow.sim import StreamPorts, verify_stream
    from pqflow.sim.graph import hardware_vectors

    ins, expected = hardware_vectors(graph, x)
    return verify_stream(
        design.text,
        design.top,
        **design.bench_args(ins, expected),
        ports=StreamPorts(**design.port_names),
        sim=sim,
        seed=seed,
        timing_vectors=timing_vectors,
    )


def test_binary_mlp_folded_on_amaranth_sim():
    from pqflow.hwgen.amaranth import DataflowTop
    from pqflow.sim.graph import hardware_vectors

    g = binary_mlp((16, 8, 8, 4), seed=3)
    design = Design(g, {"fc0": Folded(2, 4), "bd1": Folded(4, 8), "bd2": Folded(1, 2)}, name="bnn")
    top = DataflowTop(design)
    ins, expected = hardware_vectors(g, np.random.default_rng(0).random((8, 16)))
    got, _, outs = run_stream(top, ins, seed=1)
    assert np.array_equal(got, expected)
    got, ins_e, outs = run_stream(top, ins, stall_prob=0, backpressure_prob=0)
    assert outs[0] - ins_e[0] == top.latency
    assert set(np.diff(outs)) == {top.cycles_per_vector} == {16}  # fc0: (8/2)*(16/4)


@pytest.mark.verilator
def test_binary_mlp_folded_on_verilator():
    """The digits-size fully binary MLP, each layer folded differently, in one build."""
    g = binary_mlp(seed=0)
    impls = {"fc0": Folded(pe=4, simd=16), "bd1": Folded(pe=8, simd=32), "bd2": Folded(5, 8)}
    d = generate_verilog(Design(g, impls, name="bnn_folded"))
    cycles = [(32 // 4) * (64 // 16), (32 // 8) * (32 // 32), (10 // 5) * (32 // 8)]
    assert d.cycles_per_vector == max(cycles) == 32
    res = _verify(d, g, _digits(30), "verilator")
    assert res.passed, res.summary()
    assert res.ii_cycles == d.cycles_per_vector
    assert res.latency_cycles == d.latency


@pytest.mark.verilator
def test_digits_mlp_all_folded_axis_on_verilator():
    """The w8a8 digits MLP (64-64-32-32-10), every Dense folded, behind AXI-Stream ports."""
    g = random_mlp([64, 64, 32, 32, 10], seed=0, density=0.3)
    d = generate_verilog(g, "folded", pe=2, simd=8, axis=True, name="digits_folded")
    assert d.cycles_per_vector == (64 // 2) * (64 // 8) == 256
    for port in ("s_axis_tdata", "m_axis_tlast", "ap_rst_n"):
        assert port in d.text
    assert "assign m_axis_tlast = 1'h1;" in d.text
    res = _verify(d, g, _digits(16), "verilator", seed=3)
    assert res.passed, res.summary()
    assert res.ii_cycles == 256
    assert res.latency_cycles == d.latency


@pytest.mark.icarus
def test_folded_mlp_on_icarus():
    g = random_mlp([8, 6, 4], seed=2, density=0.5)
    d = generate_verilog(g, "folded", pe=2, simd=2)
    res = _verify(d, g, np.random.default_rng(0).random((12, 8)), "icarus")
    assert res.passed, res.summary()
    assert res.ii_cycles == d.cycles_per_vector == (6 // 2) * (8 // 2)


def test_folding_must_divide():
    g = random_mlp([8, 6, 4], seed=2)
    with pytest.raises(
        DesignError,
        match=r"Dense 'fc0': folded pe=4 must divide its 6 outputs; choose one of 1, 2, 3, 6",
    ):
        generate_verilog(g, "folded", pe=4, simd=2)
    with pytest.raises(DesignError, match=r"Dense 'fc0': folded simd=3 must divide its 8 inputs"):
        Design.uniform(g, "folded", simd=3)
