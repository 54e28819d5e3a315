"""Interval analysis: every accumulator type is the tightest one holding all reachable
results, checked by brute force over every input of small cases."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pqflow.ir import (
    Add,
    AvgPool2d,
    BinaryDense,
    Bipolar,
    Conv2d,
    Dense,
    Fixed,
    TensorType,
    Weight,
)
from pqflow.kernels import evaluate

small_types = st.builds(Fixed, st.integers(1, 3), st.integers(-2, 3), st.booleans())


def _all_inputs(dtype, shape) -> np.ndarray:
    """Every input sample of a small type and shape, as a batch."""
    values = range(dtype.min_raw, dtype.max_raw + 1)
    size = int(np.prod(shape))
    return np.array(list(itertools.product(values, repeat=size)), dtype=np.int64).reshape(
        -1, *shape
    )


def _tightest(out: np.ndarray, frac: int) -> Fixed:
    return Fixed.fitting(int(out.min()), int(out.max()), frac)


@settings(max_examples=200, deadline=None)
@given(
    xt=small_types,
    wt=small_types,
    k=st.integers(1, 3),
    o=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    with_bias=st.booleans(),
)
def test_dense_accumulator_is_tightest(xt, wt, k, o, seed, with_bias):
    rng = np.random.default_rng(seed)
    w = Weight(rng.integers(wt.min_raw, wt.max_raw + 1, size=(o, k)), wt)
    bias = Weight(rng.integers(-5, 6, size=o), Fixed(4, wt.frac + xt.frac)) if with_bias else None
    op = Dense(w, bias)
    t = op.infer(TensorType(xt, (k,)))
    x = _all_inputs(xt, (k,))
    out = evaluate(op, [TensorType(xt, (k,))], x)
    # each row's bound is reached; the type spans the extreme rows
    assert t.dtype == _tightest(out, wt.frac + xt.frac)


@settings(max_examples=100, deadline=None)
@given(xt=small_types, wt=small_types, seed=st.integers(0, 2**32 - 1), pad=st.integers(0, 1))
def test_conv_accumulator_is_tightest(xt, wt, seed, pad):
    rng = np.random.default_rng(seed)
    w = Weight(rng.integers(wt.min_raw, wt.max_raw + 1, size=(2, 2, 1, 1)), wt)
    op = Conv2d(w, padding=(pad, 0, 0, 0))
    xtt = TensorType(xt, (2, 2, 1))
    t = op.infer(xtt)
    out = evaluate(op, [xtt], _all_inputs(xt, (2, 2, 1)))
    assert t.dtype == _tightest(out, wt.frac + xt.frac)


@settings(max_examples=200, deadline=None)
@given(a=small_types, b=small_types)
def test_add_accumulator_is_tightest(a, b):
    ta, tb = TensorType(a, (1,)), TensorType(b, (1,))
    t = Add().infer(ta, tb)
    xa, xb = _all_inputs(a, (1,)), _all_inputs(b, (1,))
    pa = np.repeat(xa, len(xb), axis=0)
    pb = np.tile(xb, (len(xa), 1))
    out = evaluate(Add(), [ta, tb], pa, pb)
    assert t.dtype == _tightest(out, max(a.frac, b.frac))


@settings(max_examples=100, deadline=None)
@given(xt=small_types, kernel=st.sampled_from([(1, 2), (2, 1), (2, 2)]))
def test_avgpool_accumulator_is_tightest(xt, kernel):
    op = AvgPool2d(kernel)
    xtt = TensorType(xt, (*kernel, 1))
    out = evaluate(op, [xtt], _all_inputs(xt, xtt.shape))
    assert op.infer(xtt).dtype == _tightest(out, xt.frac + op.log2_window)


@settings(max_examples=50, deadline=None)
@given(k=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_binary_dense_range(k, seed):
    w = Weight(np.random.default_rng(seed).integers(0, 2, size=(2, k)), Bipolar())
    xt = TensorType(Bipolar(), (k,))
    out = evaluate(BinaryDense(w), [xt], _all_inputs(Bipolar(), (k,)))
    assert out.min() == -k and out.max() == k
    assert BinaryDense(w).infer(xt).dtype == Fixed.fitting(-k, k, 0)
