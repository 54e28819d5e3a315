"""Integer requantization: a real scale ratio as ``mult / 2**shift``, and its error bound.

A layer's accumulator raw ``x`` has real value ``x * S_in[c]``; the next activation grid
has step ``S_out``. The ideal code is ``sat(round(x * r[c]))`` with ``r = S_in / S_out``.
The IR's ``Requant`` computes ``sat(round(x * mult[c] / 2**shift[c]))`` on integers, so
lowering picks, per channel:

- **power-of-two ratio** ``r = 2**-k``: ``mult = 1, shift = k`` (``k >= 0``) or
  ``mult = 2**-k, shift = 0`` (a left shift). Exact.
- **any other ratio**: ``shift`` such that ``mult = round(r * 2**shift)`` has exactly
  ``mult_bits`` bits (``2**(b-1) <= mult < 2**b``), so

      |mult / 2**shift - r| <= 2**-shift / 2 <= r * 2**-b          (relative error <= 2**-b)

  When ``r >= 2**(b-1)`` the shift is 0 and ``mult = round(r)`` (relative error
  ``<= 1 / (2r) <= 2**-b`` again). A ratio so small that ``shift`` would exceed the IR's
  limit (62) is clamped there; then every ``|x| < 2**61`` gives 0, as the ideal does
  up to one LSB.

**Per-output error bound.** Let ``a = x * r`` (ideal, real) and ``â = x * mult / 2**shift``.
Then ``|â - a| <= |a| * 2**-b``. For an output type of ``w`` bits and ``b >= w + 2``:

- if ``|a| <= 2**(w+1)``, ``|â - a| <= 2**(w+1-b) <= 1/2``, so ``round(â)`` and
  ``round(a)`` differ by at most 1, and saturation (monotone, 1-Lipschitz) keeps that;
- if ``|a| > 2**(w+1)``, ``|â| > 2**w`` with the same sign: both saturate to the same end.

So every requantized output is within **1 LSB** of the ideal ``sat(round(x * r))``, and
differs from it only where ``x * r`` lies within ``|x * r| * 2**-b`` of a rounding
boundary. ``choose_mult_bits`` picks ``b = max(MULT_BITS, w + 2)``, reduced if the
product ``x * mult`` would exceed the IR's 62 bits (the bound then needs re-checking,
which ``requant_params`` does and reports by raising).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from pqflow.ir import MAX_WIDTH

__all__ = [
    "MULT_BITS",
    "RequantParams",
    "choose_mult_bits",
    "ideal_requant",
    "is_pow2",
    "mult_shift",
    "requant_params",
]

MULT_BITS = 16
"""Default multiplier width: a 16-bit constant fits one DSP48 input (18 x 25)."""


def is_pow2(v: float) -> bool:
    """Whether ``v`` is a positive (possibly negative-exponent) power of two, exactly."""
    if not (v > 0 and math.isfinite(v)):
        return False
    m, _ = math.frexp(v)
    return m == 0.5


def mult_shift(ratio: float, mult_bits: int = MULT_BITS) -> tuple[int, int]:
    """``(mult, shift)`` with ``mult / 2**shift`` closest to ``ratio`` for a
    ``mult_bits``-bit ``mult`` (exact for a power of two; see the module doc for the bound)."""
    if not (ratio > 0 and math.isfinite(ratio)):
        raise ValueError(f"a requant ratio must be a positive finite number, not {ratio!r}")
    if mult_bits < 2:
        raise ValueError(f"mult_bits must be at least 2, not {mult_bits}")
    if is_pow2(ratio):
        k = -(math.frexp(ratio)[1] - 1)  # ratio = 2**-k
        if k >= 0:
            return 1, min(k, MAX_WIDTH)
        return 1 << -k, 0
    r = Fraction(ratio)
    # shift so that ratio * 2**shift lies in [2**(b-1), 2**b)
    e = math.frexp(ratio)[1]  # ratio in [2**(e-1), 2**e)
    shift = mult_bits - e
    if shift < 0:
        return round(r), 0
    if shift > MAX_WIDTH:
        shift = MAX_WIDTH
    mult = round(r * (1 << shift))
    if mult >= 1 << mult_bits:  # rounding carried into one more bit
        if shift > 0:
            shift -= 1
            mult = round(r * (1 << shift))
    return max(int(mult), 0), shift


def choose_mult_bits(in_bits: int, out_bits: int, mult_bits: int = MULT_BITS) -> int:
    """The multiplier width: ``max(mult_bits, out_bits + 2)``, at most what keeps the
    product of an ``in_bits``-bit input and the multiplier inside the IR's 62 bits."""
    return max(2, min(max(mult_bits, out_bits + 2), MAX_WIDTH - in_bits))


@dataclass(frozen=True)
class RequantParams:
    """Per-channel ``mult``/``shift`` and the worst relative error of ``mult / 2**shift``."""

    mult: tuple[int, ...]
    shift: tuple[int, ...]
    rel_error: float
    mult_bits: int

    @property
    def exact(self) -> bool:
        return self.rel_error == 0.0


def requant_params(
    ratios, in_bits: int, out_bits: int, mult_bits: int = MULT_BITS
) -> RequantParams:
    """Per-channel parameters for the ratios ``S_in[c] / S_out`` (see the module doc).

    All-power-of-two ratios give ``mult`` powers of two (1 unless a left shift) and zero
    error. One entry is returned when every channel has the same parameters.
    """
    r = np.atleast_1d(np.asarray(ratios, dtype=np.float64))
    b = choose_mult_bits(in_bits, out_bits, mult_bits)
    pairs = [mult_shift(float(v), b) for v in r]
    errs = [
        abs(float(Fraction(m, 1 << s) / Fraction(float(v)) - 1))
        for (m, s), v in zip(pairs, r, strict=True)
    ]
    mult = tuple(m for m, _ in pairs)
    shift = tuple(s for _, s in pairs)
    if len(set(pairs)) == 1:
        mult, shift = mult[:1], shift[:1]
    return RequantParams(mult, shift, max(errs, default=0.0), b)


def ideal_requant(x: np.ndarray, ratio, lo: int, hi: int) -> np.ndarray:
    """The ideal ``sat(round_half_even(x * ratio))`` in float64 (reference for the bound)."""
    v = np.asarray(x, dtype=np.float64) * np.asarray(ratio, dtype=np.float64)
    return np.clip(np.rint(v), lo, hi).astype(np.int64)
