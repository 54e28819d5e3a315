"""Rounding, overflow and quantize: numpy contract and Numba helpers against definitions
written independently in Python integers and fractions (exhaustive on small widths)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pqflow.ir import Fixed, Overflow, Rounding, apply_overflow, quantize_float, round_shift
from pqflow.kernels import numba_ops as nb

ROUNDINGS = list(Rounding)
OVERFLOWS = list(Overflow)
P = np.arange(-512, 512, dtype=np.int64)


# --- the definitions, in exact arithmetic ----------------------------------------------------


def round_def(v: Fraction, rounding: Rounding) -> int:
    if rounding is Rounding.FLOOR:
        return math.floor(v)
    if rounding is Rounding.HALF_UP:
        return math.floor(v + Fraction(1, 2))
    # ties to even: Python's round() of a Fraction is round-half-even
    lo = math.floor(v)
    d = v - lo
    if d != Fraction(1, 2):
        return lo + (d > Fraction(1, 2))
    return lo if lo % 2 == 0 else lo + 1


def overflow_def(v: int, width: int, signed: bool, overflow: Overflow) -> int:
    lo = -(2 ** (width - 1)) if signed else 0
    hi = 2 ** (width - 1) - 1 if signed else 2**width - 1
    if overflow is Overflow.SATURATE:
        return min(max(v, lo), hi)
    return (v - lo) % 2**width + lo


def quantize_def(x: float, t: Fixed, rounding: Rounding, overflow: Overflow) -> int:
    if math.isnan(x):
        r = 0
    elif math.isinf(x):
        r = 2**62 if x > 0 else -(2**62)
    else:
        r = round_def(Fraction(x) * Fraction(2) ** t.frac, rounding)
        r = min(max(r, -(2**62)), 2**62)
    return overflow_def(r, t.width, t.signed, overflow)


def test_round_def_matches_python_round():
    for k in range(-50, 50):
        v = Fraction(k, 4)
        assert round_def(v, Rounding.HALF_EVEN) == round(v)


# --- exhaustive on small widths ------------------------------------------------------------


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("shift", range(7))
def test_round_shift_exhaustive(rounding, shift):
    want = np.array([round_def(Fraction(int(p), 2**shift), rounding) for p in P])
    assert np.array_equal(round_shift(P, shift, rounding), want)
    assert np.array_equal(nb.round_shift_array(P, shift, nb.ROUNDING_CODE[rounding]), want)


@pytest.mark.parametrize("overflow", OVERFLOWS)
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("width", range(1, 7))
def test_overflow_exhaustive(overflow, signed, width):
    want = np.array([overflow_def(int(v), width, signed, overflow) for v in P])
    t = Fixed(width, 0, signed)
    assert np.array_equal(apply_overflow(P, t, overflow), want)
    assert np.array_equal(nb.overflow_array(P, width, signed, nb.OVERFLOW_CODE[overflow]), want)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_round_shift_per_channel_broadcast(rounding):
    p = P.reshape(-1, 4)
    shifts = np.array([0, 1, 3, 6])
    want = np.array(
        [
            [
                round_def(Fraction(int(v), 2 ** int(s)), rounding)
                for v, s in zip(r, shifts, strict=True)
            ]
            for r in p
        ]
    )
    assert np.array_equal(round_shift(p, shifts, rounding), want)


@settings(max_examples=500, deadline=None)
@given(
    p=st.integers(-(2**62), 2**62),
    shift=st.integers(0, 62),
    rounding=st.sampled_from(ROUNDINGS),
)
def test_round_shift_wide(p, shift, rounding):
    want = round_def(Fraction(p, 2**shift), rounding)
    a = np.array([p], dtype=np.int64)
    assert int(round_shift(a, shift, rounding)[0]) == want
    assert int(nb.round_shift_array(a, shift, nb.ROUNDING_CODE[rounding])[0]) == want


@settings(max_examples=500, deadline=None)
@given(
    v=st.integers(-(2**62), 2**62),
    width=st.integers(1, 62),
    signed=st.booleans(),
    overflow=st.sampled_from(OVERFLOWS),
)
def test_overflow_wide(v, width, signed, overflow):
    want = overflow_def(v, width, signed, overflow)
    a = np.array([v], dtype=np.int64)
    assert int(apply_overflow(a, Fixed(width, 0, signed), overflow)[0]) == want
    assert int(nb.overflow_array(a, width, signed, nb.OVERFLOW_CODE[overflow])[0]) == want


# --- quantize on floats --------------------------------------------------------------------


def _both(x: np.ndarray, t: Fixed, rounding: Rounding, overflow: Overflow):
    ref = quantize_float(x, t, rounding, overflow)
    out = np.empty(x.shape, dtype=np.int64)
    nb.quantize_2d(
        x.reshape(1, -1),
        2.0**t.frac,
        nb.ROUNDING_CODE[rounding],
        t.width,
        t.signed,
        nb.OVERFLOW_CODE[overflow],
        out.reshape(1, -1),
    )
    return ref, out


SPECIAL = [
    0.0,
    -0.0,
    0.5,
    -0.5,
    1.5,
    -1.5,
    2.5,
    -2.5,
    0.49999999999999994,
    -0.49999999999999994,
    0.5000000000000001,
    2.0**52 + 1,
    -(2.0**52) - 1,
    2.0**53,
    2.0**62,
    -(2.0**62),
    2.0**63,
    1e300,
    -1e300,
    np.inf,
    -np.inf,
    np.nan,
    5e-324,
    -5e-324,
    2.0**-1022,
]


@pytest.mark.filterwarnings("ignore:overflow encountered in multiply:RuntimeWarning")
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("overflow", OVERFLOWS)
@pytest.mark.parametrize(
    "t",
    [
        Fixed(4, 0, True),
        Fixed(3, 1, False),
        Fixed(62, 0, True),
        Fixed(8, -2, True),
        Fixed(1, 0, False),
        Fixed(20, 8, True),
    ],
)
def test_quantize_ties_negatives_and_specials(rounding, overflow, t):
    ties = [(k + 0.5) * 2.0**-t.frac for k in range(-40, 40)]
    near = [np.nextafter(v, d) for v in ties for d in (-np.inf, np.inf)]
    x = np.array(SPECIAL + ties + near + [k * 0.25 for k in range(-64, 64)])
    if t.frac != 0:  # keep x * 2**frac out of the subnormals, where the float product rounds
        x = x[(x == 0) | ~np.isfinite(x) | (np.abs(x) > 2.0**-1000)]
    want = np.array([quantize_def(float(v), t, rounding, overflow) for v in x])
    ref, got = _both(x, t, rounding, overflow)
    assert np.array_equal(ref, want)
    assert np.array_equal(got, want)


@pytest.mark.filterwarnings("ignore:overflow encountered in multiply:RuntimeWarning")
@settings(max_examples=500, deadline=None)
@given(
    x=st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False),
    width=st.integers(1, 62),
    frac=st.integers(-8, 40),
    signed=st.booleans(),
    rounding=st.sampled_from(ROUNDINGS),
    overflow=st.sampled_from(OVERFLOWS),
)
def test_quantize_random_floats(x, width, frac, signed, rounding, overflow):
    assume(not (x != 0 and math.isfinite(x) and abs(x) < 2.0**-1000))
    t = Fixed(width, frac, signed)
    want = quantize_def(x, t, rounding, overflow)
    ref, got = _both(np.array([x]), t, rounding, overflow)
    assert int(ref[0]) == want
    assert int(got[0]) == want
