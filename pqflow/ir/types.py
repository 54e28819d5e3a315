"""Numeric types of the IR: fixed-point, bipolar and (at the edges only) float.

A raw is the integer a value is stored as. ``Fixed(width, frac, signed)`` means
value = raw * 2**-frac with raw in [-2**(width-1), 2**(width-1) - 1] (signed) or
[0, 2**width - 1] (unsigned). ``Bipolar`` is one bit: raw 0 is -1, raw 1 is +1.
``Float`` exists only at a graph's edges (before ``Quantize``, after ``Dequantize``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..errors import UserError

MAX_WIDTH = 62
"""The widest raw any value may have: products and sums of raws stay inside int64."""

MAX_FRAC = 256
"""The largest |frac|: scaling a float by 2**frac stays exact (no overflow, no subnormals)
for every input a network sees, and 2.0**frac is a finite float64."""


class IRError(UserError, ValueError):
    """A graph, op, type or IR file that breaks the IR's rules; the message says where and why."""


class Rounding(StrEnum):
    """How precision is dropped, named after the ap_fixed quantization modes."""

    FLOOR = "floor"  # AP_TRN: toward -inf
    HALF_UP = "half_up"  # AP_RND: to nearest, ties toward +inf
    HALF_EVEN = "half_even"  # AP_RND_CONV: to nearest, ties to even (torch.round)


class Overflow(StrEnum):
    """What happens to a value outside the target range, named after ap_fixed's modes."""

    SATURATE = "saturate"  # AP_SAT
    WRAP = "wrap"  # AP_WRAP: two's complement wrap-around


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Fixed:
    """A fixed-point type: value = raw * 2**-frac, raw an integer of ``width`` bits."""

    width: int
    frac: int = 0
    signed: bool = True

    def __post_init__(self) -> None:
        if not _is_int(self.width) or not 1 <= self.width <= MAX_WIDTH:
            raise IRError(
                f"Fixed: width must be an integer from 1 to {MAX_WIDTH}, not {self.width!r}"
            )
        if not _is_int(self.frac) or not -MAX_FRAC <= self.frac <= MAX_FRAC:
            raise IRError(
                f"Fixed: frac must be an integer from {-MAX_FRAC} to {MAX_FRAC}, not {self.frac!r}"
            )
        if not isinstance(self.signed, bool):
            raise IRError(f"Fixed: signed must be True or False, not {self.signed!r}")

    @property
    def min_raw(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max_raw(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    def contains(self, lo: int, hi: int) -> bool:
        """Whether every raw in [lo, hi] is representable."""
        return self.min_raw <= lo and hi <= self.max_raw

    @staticmethod
    def fitting(lo: int, hi: int, frac: int) -> Fixed:
        """The narrowest type with this ``frac`` holding every raw in [lo, hi].

        Signed when lo < 0. Raises IRError when that needs more than MAX_WIDTH bits.
        """
        width = bits_for(lo, hi)
        if width > MAX_WIDTH:
            raise IRError(
                f"range [{lo}, {hi}] needs {width} bits, the verifier allows at most {MAX_WIDTH}"
            )
        return Fixed(width, frac, int(lo) < 0)

    def __str__(self) -> str:
        return f"{'s' if self.signed else 'u'}{self.width}f{self.frac}"


@dataclass(frozen=True)
class Bipolar:
    """One bit: raw 0 means -1, raw 1 means +1 (the FINN/QONNX convention)."""

    width = 1
    signed = False
    frac = 0
    min_raw = 0
    max_raw = 1

    def contains(self, lo: int, hi: int) -> bool:
        return 0 <= lo and hi <= 1

    def __str__(self) -> str:
        return "bipolar"


@dataclass(frozen=True)
class Float:
    """A float64 value; allowed only at a graph's edges."""

    def __str__(self) -> str:
        return "f64"


DType = Fixed | Bipolar | Float
IntType = Fixed | Bipolar


@dataclass(frozen=True)
class TensorType:
    """The type of one sample of a value: element type and shape (channels last)."""

    dtype: DType
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.dtype, Fixed | Bipolar | Float):
            raise IRError(f"TensorType: dtype must be Fixed, Bipolar or Float, not {self.dtype!r}")
        shape = tuple(self.shape)
        if not shape or not all(_is_int(d) and d >= 1 for d in shape):
            raise IRError(
                f"TensorType: shape must be one or more positive integers, not {self.shape!r}"
            )
        object.__setattr__(self, "shape", shape)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


def bits_for(lo: int, hi: int) -> int:
    """Bits of the narrowest raw holding [lo, hi]: signed when lo < 0, at least 1."""
    lo, hi = int(lo), int(hi)
    if lo < 0:
        return max((-lo - 1).bit_length(), max(hi, 0).bit_length()) + 1
    return max(hi.bit_length(), 1)


def value_range(t: DType) -> tuple[int, int]:
    """The range of *values* times 2**frac, i.e. the raw range for Fixed, [-1, 1] for Bipolar."""
    if isinstance(t, Fixed):
        return t.min_raw, t.max_raw
    if isinstance(t, Bipolar):
        return -1, 1
    raise IRError(f"{t} has no integer range")
