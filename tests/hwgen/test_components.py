"""Each unrolled component, bit-exact on Amaranth's simulator with stalls and back-pressure."""

from __future__ import annotations

import numpy as np
import pytest
from hwgen_helpers import (
    check_stream,
    random_fixed,
    random_raws,
    ref_dense,
    ref_relu,
    ref_requant,
    ref_threshold,
)

from pqflow.hwgen.amaranth import MultiThresholdUnit, ReLUUnit, RequantUnit, UnrolledDense
from pqflow.ir import Bipolar, Dense, Fixed, MultiThreshold, Overflow, Requant, Rounding, TensorType
from pqflow.ir import Weight as W

N_VECTORS = 12

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def _dense(rng, n_in, n_out, wt: Fixed, density: float, bias: bool, in_type: Fixed) -> Dense:
    w = random_raws(rng, wt, (n_out, n_in))
    w[rng.random(w.shape) >= density] = 0
    b = None
    if bias:
        bt = Fixed(10, wt.frac + in_type.frac, True)
        b = W(random_raws(rng, bt, n_out), bt)
    return Dense(W(w, wt), b)


@pytest.mark.parametrize("seed", range(8))
def test_dense_random(seed):
    rng = np.random.default_rng(seed)
    in_type, wt = random_fixed(rng), random_fixed(rng)
    n_in, n_out = int(rng.integers(1, 7)), int(rng.integers(1, 5))
    op = _dense(rng, n_in, n_out, wt, float(rng.choice([1.0, 0.5, 0.2])), seed % 2 == 0, in_type)
    out_type = op.infer(TensorType(in_type, (n_in,))).dtype
    dut = UnrolledDense(
        op,
        in_type,
        out_type,
        levels_per_stage=int(rng.integers(1, 4)),
        products=("mul", "csd")[seed % 2],
    )
    x = random_raws(rng, in_type, (N_VECTORS, n_in))
    check_stream(dut, x, ref_dense(op, x), seed=seed)


def test_dense_extremes_and_special_weights():
    """Weights 0, +-1, powers of two, the most negative; inputs at the ends of the range."""
    in_type, wt = Fixed(4, 0, True), Fixed(5, 0, True)
    w = np.array([[0, 1, -1, 2, -16, 15], [0, 0, 0, 0, 0, 0], [-16, -16, -16, -16, -16, -16]])
    op = Dense(W(w, wt), W([3, -5, 0], Fixed(8, 0, True)))
    out_type = op.infer(TensorType(in_type, (6,))).dtype
    x = np.array([[-8] * 6, [7] * 6, [-8, 7, -8, 7, -8, 7], [0] * 6, [1, -1, 2, -2, 3, -3]])
    for products in ("mul", "csd"):
        dut = UnrolledDense(op, in_type, out_type, levels_per_stage=2, products=products)
        check_stream(dut, x, ref_dense(op, x))


def test_dense_latency_formula():
    in_type, wt = Fixed(8, 0, False), Fixed(8, 0, True)
    w = np.ones((2, 9), dtype=np.int64)  # 9 leaves + bias = 10 -> 4 adder levels, depth 5
    op = Dense(W(w, wt), W([1, 1], Fixed(4, 0, True)))
    out_type = op.infer(TensorType(in_type, (9,))).dtype
    assert UnrolledDense(op, in_type, out_type, levels_per_stage=1).latency == 5
    assert UnrolledDense(op, in_type, out_type, levels_per_stage=2).latency == 3
    assert UnrolledDense(op, in_type, out_type, levels_per_stage=5).latency == 1
    assert UnrolledDense(op, in_type, out_type, levels_per_stage=9).latency == 1


def test_dense_constructor_errors():
    in_type = Fixed(8, 0, False)
    op = Dense(W(np.ones((2, 3)), Fixed(2, 0, True)))
    out_type = op.infer(TensorType(in_type, (3,))).dtype
    with pytest.raises(TypeError, match=r"op must be a pqflow.ir.Dense, not 3"):
        UnrolledDense(3, in_type, out_type)
    with pytest.raises(TypeError, match=r"in_type must be a Fixed element type, not 'u8'"):
        UnrolledDense(op, "u8", out_type)
    with pytest.raises(ValueError, match=r"out_type must be the accumulator type u10f0"):
        UnrolledDense(op, in_type, Fixed(16, 0, True))
    with pytest.raises(ValueError, match=r"levels_per_stage must be a positive integer, not 0"):
        UnrolledDense(op, in_type, out_type, levels_per_stage=0)
    with pytest.raises(ValueError, match=r"products must be one of mul, csd, not 'booth'"):
        UnrolledDense(op, in_type, out_type, products="booth")
    biased = Dense(W(np.ones((2, 3)), Fixed(2, 0, True)), W([1, 2], Fixed(4, 0, True)))
    with pytest.raises(ValueError, match=r"bias frac 0 must equal the accumulator frac 2"):
        UnrolledDense(biased, Fixed(8, 2, False), out_type)


@pytest.mark.parametrize("rounding", list(Rounding))
@pytest.mark.parametrize("overflow", list(Overflow))
@pytest.mark.parametrize("seed", range(3))
def test_requant_random(rounding, overflow, seed):
    rng = np.random.default_rng(hash((rounding.value, overflow.value, seed)) % 2**32)
    in_type, to = random_fixed(rng), random_fixed(rng)
    c = int(rng.integers(1, 5))
    per_channel = bool(rng.integers(2))
    n = c if per_channel else 1
    mult = tuple(int(m) for m in rng.integers(-40, 200, n))
    shift = tuple(int(s) for s in rng.integers(0, 10, n))
    op = Requant(to, mult=mult, shift=shift, rounding=rounding, overflow=overflow)
    dut = RequantUnit(op, in_type, to, (c,), registered=bool(seed % 2))
    x = random_raws(rng, in_type, (N_VECTORS, c))
    x[0] = in_type.min_raw
    x[1] = in_type.max_raw
    check_stream(dut, x, ref_requant(op, x), seed=seed)


@pytest.mark.parametrize("rounding", list(Rounding))
def test_requant_ties(rounding):
    """Every remainder of a small shift, so each tie rule is exercised on both signs."""
    in_type, to = Fixed(6, 0, True), Fixed(3, 0, True)
    op = Requant(to, mult=(1, 3), shift=(2, 3), rounding=rounding, overflow=Overflow.SATURATE)
    dut = RequantUnit(op, in_type, to, (2,))
    x = np.stack([np.arange(-32, 32), np.arange(31, -33, -1)], axis=1)
    check_stream(dut, x, ref_requant(op, x))


def test_requant_constructor_errors():
    op = Requant(Fixed(4, 0, True), mult=(1, 2, 3))
    with pytest.raises(TypeError, match=r"op must be a pqflow.ir.Requant"):
        RequantUnit(None, Fixed(8), Fixed(4), (3,))
    with pytest.raises(ValueError, match=r"out_type must be the op's type s4f0, not s5f0"):
        RequantUnit(op, Fixed(8), Fixed(5), (3,))
    with pytest.raises(ValueError, match=r"mult has 3 entries; need 1 or 2"):
        RequantUnit(op, Fixed(8), Fixed(4), (2,))
    with pytest.raises(ValueError, match=r"shape must be a tuple of positive integers, not 5"):
        RequantUnit(op, Fixed(8), Fixed(4), 5)


@pytest.mark.parametrize("seed", range(4))
def test_relu_random(seed):
    rng = np.random.default_rng(seed)
    in_type = random_fixed(rng)
    dut = ReLUUnit(in_type, (3,))
    assert dut.latency == 0
    x = random_raws(rng, in_type, (N_VECTORS, 3))
    check_stream(dut, x, ref_relu(x), seed=seed)


@pytest.mark.parametrize("seed", range(4))
def test_multithreshold_random(seed):
    rng = np.random.default_rng(seed)
    in_type = random_fixed(rng, frac=0)
    c, n = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    rows = c if seed % 2 else 1
    lo, hi = in_type.min_raw - 2, in_type.max_raw + 2  # some thresholds are out of reach
    t = np.sort(rng.integers(lo, hi + 1, (rows, n)), axis=1)
    tt = Fixed(max(in_type.width + 2, 3), 0, True)
    offset = int(rng.integers(-2, 2))
    out = Fixed(4, 0, True)
    op = MultiThreshold(W(t, tt), out, offset)
    dut = MultiThresholdUnit(op, in_type, out, (c,), registered=bool(seed % 2))
    x = random_raws(rng, in_type, (N_VECTORS, c))
    check_stream(dut, x, ref_threshold(op, x), seed=seed)


def test_multithreshold_bipolar():
    in_type = Fixed(4, 0, True)
    op = MultiThreshold(W([[0], [-3]], Fixed(4, 0, True)), Bipolar())
    dut = MultiThresholdUnit(op, in_type, Bipolar(), (2,))
    x = np.stack([np.arange(-8, 8), np.arange(7, -9, -1)], axis=1)
    check_stream(dut, x, ref_threshold(op, x))


@pytest.mark.parametrize("rounding", list(Rounding))
@pytest.mark.parametrize("overflow", list(Overflow))
def test_requant_wide_accumulator(rounding, overflow):
    """Accumulator-sized inputs, large multipliers and shifts past the product's width."""
    rng = np.random.default_rng(7)
    in_type, to = Fixed(24, 0, True), Fixed(8, 0, overflow == Overflow.WRAP)
    mult = (1, 32767, 12345, -517, 3)
    shift = (0, 30, 17, 9, 40)
    op = Requant(to, mult=mult, shift=shift, rounding=rounding, overflow=overflow)
    dut = RequantUnit(op, in_type, to, (5,))
    x = random_raws(rng, in_type, (N_VECTORS, 5)) >> rng.integers(0, 20, (N_VECTORS, 5))
    x[0], x[1] = in_type.min_raw, in_type.max_raw
    check_stream(dut, x, ref_requant(op, x))
