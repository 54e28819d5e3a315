"""The numeric contract's definitions of rounding and overflow, on numpy int64 raws.

Written for obviousness; the numpy reference uses them, the Numba kernels, RTL and
HLS implement the same functions and are tested against them bit for bit.
"""

from __future__ import annotations

import numpy as np

from .types import Fixed, Overflow, Rounding


def round_shift(p: np.ndarray, shift, rounding: Rounding) -> np.ndarray:
    """p / 2**shift rounded to an integer (shift >= 0, broadcast over the last axis).

    floor: toward -inf. half_up: to nearest, ties toward +inf. half_even: to nearest,
    ties to the even neighbour.
    """
    p = np.asarray(p, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    q = p >> s
    if rounding == Rounding.FLOOR:
        return q
    r = p - (q << s)  # remainder in [0, 2**s)
    half = np.where(s > 0, np.left_shift(1, np.maximum(s - 1, 0)), 0)
    has_half = s > 0
    if rounding == Rounding.HALF_UP:
        return q + (has_half & (r >= half))
    if rounding == Rounding.HALF_EVEN:
        up = (r > half) | ((r == half) & ((q & 1) == 1))
        return q + (has_half & up)
    raise ValueError(f"unknown rounding {rounding!r}")


def apply_overflow(v: np.ndarray, to: Fixed, overflow: Overflow) -> np.ndarray:
    """Bring integers into ``to``'s raw range by saturation or two's complement wrap."""
    v = np.asarray(v, dtype=np.int64)
    if overflow == Overflow.SATURATE:
        return np.clip(v, to.min_raw, to.max_raw)
    if overflow == Overflow.WRAP:
        m = np.int64((1 << to.width) - 1)
        u = v & m
        if to.signed:
            sign = np.int64(1 << (to.width - 1))
            u = np.where(u >= sign, u - np.int64(1 << to.width), u)
        return u
    raise ValueError(f"unknown overflow {overflow!r}")


QUANTIZE_LIMIT = float(2**62)
"""Quantize clips x * 2**frac to +-2**62 before converting to integers."""


def quantize_float(x: np.ndarray, to: Fixed, rounding: Rounding, overflow: Overflow) -> np.ndarray:
    """Float -> raw: overflow(round(x * 2**frac)); NaN -> 0, +-inf and huge values clip first."""
    v = np.asarray(x, dtype=np.float64) * np.float64(2.0**to.frac)
    if rounding == Rounding.FLOOR:
        r = np.floor(v)
    elif rounding == Rounding.HALF_UP:
        # not floor(v + 0.5): that sum rounds (0.49999999999999994 -> 1, 2**52 + 1 -> +2).
        # A non-integer v has |v| < 2**52, so f + 0.5 is exact there.
        f = np.floor(v)
        r = f + ((v != f) & (v >= f + 0.5))
    elif rounding == Rounding.HALF_EVEN:
        r = np.rint(v)
    else:
        raise ValueError(f"unknown rounding {rounding!r}")
    r = np.nan_to_num(r, nan=0.0, posinf=QUANTIZE_LIMIT, neginf=-QUANTIZE_LIMIT)
    r = np.clip(r, -QUANTIZE_LIMIT, QUANTIZE_LIMIT)
    return apply_overflow(r.astype(np.int64), to, overflow)


def dequantize(raw: np.ndarray, dtype) -> np.ndarray:
    """Raw -> float64 value: raw * 2**-frac, or -1/+1 for Bipolar."""
    raw = np.asarray(raw, dtype=np.int64)
    if isinstance(dtype, Fixed):
        return raw.astype(np.float64) * np.float64(2.0**-dtype.frac)
    return np.where(raw != 0, 1.0, -1.0)
