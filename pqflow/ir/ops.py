"""The ops of the IR: frozen dataclasses whose fields are their attributes.

Every op is defined on integer raws (see ``numeric.py`` and ``pqflow.kernels.reference``
for the exact semantics). ``infer`` computes an op's output type from its input types
and raises ``IRError`` (without the node name; the graph adds it) when they are illegal.
Accumulating ops (``Dense``, ``Conv2d``, ``BinaryDense``, ``BinaryConv2d``, ``Add``,
``AvgPool2d``) size their output by interval analysis over the actual constant values,
so they can never overflow.

Shapes are per sample and channels-last: vectors are ``(C,)``, images ``(H, W, C)``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from .tensor import Weight
from .types import (
    MAX_WIDTH,
    Bipolar,
    Fixed,
    Float,
    IRError,
    Overflow,
    Rounding,
    TensorType,
    bits_for,
    value_range,
)


class Op:
    """Base of all ops. Subclasses are frozen dataclasses and set ``arity``."""

    arity: ClassVar[int] = 1

    def infer(self, *ins: TensorType) -> TensorType:  # pragma: no cover - abstract
        raise NotImplementedError(type(self).__name__)

    def weights(self) -> dict[str, Weight]:
        """The op's constant tensors by field name."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Weight)
        }


OPS: dict[str, type[Op]] = {}
"""Every op class by name: the one registry later stages walk to check they cover all ops."""


def _register(cls: type[Op]) -> type[Op]:
    OPS[cls.__name__] = cls
    return cls


# --- helpers --------------------------------------------------------------------------------


def _need_fixed(t: TensorType, what: str = "input") -> Fixed:
    if not isinstance(t.dtype, Fixed):
        raise IRError(f"{what} must be Fixed, not {t.dtype}")
    return t.dtype


def _pair(v, name: str) -> tuple[int, int]:
    t = tuple(v)
    if len(t) != 2 or not all(isinstance(i, int) and i >= 1 for i in t):
        raise IRError(f"{name} must be two positive integers, not {v!r}")
    return t  # type: ignore[return-value]


def _dot_interval(w: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row [min, max] of w[r] . x over x in [lo, hi]^K, as Python ints (no overflow)."""
    wo = w.astype(object)
    a, b = wo * lo, wo * hi
    mins = np.where(a < b, a, b).sum(axis=1)
    maxs = np.where(a < b, b, a).sum(axis=1)
    return mins, maxs


def _accumulator(lo_vals, hi_vals, frac: int) -> Fixed:
    """The narrowest type holding every raw between the smallest lo and the largest hi."""
    lo = min((int(v) for v in lo_vals), default=0)
    hi = max((int(v) for v in hi_vals), default=0)
    need = bits_for(lo, hi)
    if need > MAX_WIDTH:
        raise IRError(f"accumulator needs {need} bits, the verifier allows at most {MAX_WIDTH}")
    return Fixed.fitting(lo, hi, frac)


def _conv_out(size: int, k: int, stride: int, pad: int, axis: str) -> int:
    n = size + pad - k
    if n < 0:
        raise IRError(f"kernel {k} is larger than the padded input {size + pad} along {axis}")
    return n // stride + 1


def _check_bias(
    bias: Weight | None, n: int, frac: int
) -> tuple[int, int] | tuple[np.ndarray, np.ndarray]:
    if bias is None:
        return np.zeros(n, dtype=object), np.zeros(n, dtype=object)
    if not isinstance(bias.dtype, Fixed):
        raise IRError(f"bias must be Fixed, not {bias.dtype}")
    if bias.shape != (n,):
        raise IRError(f"bias shape {bias.shape} does not match {n} outputs")
    if bias.dtype.frac != frac:
        raise IRError(
            f"bias frac {bias.dtype.frac} must equal the accumulator frac {frac} "
            "(weight frac + input frac)"
        )
    b = bias.data.astype(object)
    return b, b


# --- edges ----------------------------------------------------------------------------------


@_register
@dataclass(frozen=True)
class Quantize(Op):
    """Float -> Fixed: raw = overflow(round(x * 2**to.frac)). NaN becomes 0."""

    to: Fixed
    rounding: Rounding = Rounding.HALF_EVEN
    overflow: Overflow = Overflow.SATURATE

    def __post_init__(self) -> None:
        if not isinstance(self.to, Fixed):
            raise IRError(f"Quantize: to must be Fixed, not {self.to!r}")
        object.__setattr__(self, "rounding", Rounding(self.rounding))
        object.__setattr__(self, "overflow", Overflow(self.overflow))

    def infer(self, x: TensorType) -> TensorType:
        if not isinstance(x.dtype, Float):
            raise IRError(f"input must be Float, not {x.dtype}")
        return TensorType(self.to, x.shape)


@_register
@dataclass(frozen=True)
class Dequantize(Op):
    """Fixed -> Float (raw * 2**-frac); Bipolar -> -1.0 / +1.0."""

    def infer(self, x: TensorType) -> TensorType:
        if isinstance(x.dtype, Float):
            raise IRError("input is already Float")
        return TensorType(Float(), x.shape)


# --- arithmetic -----------------------------------------------------------------------------


@_register
@dataclass(frozen=True)
class Dense(Op):
    """y[o] = sum_i W[o, i] * x[i] + b[o], exact. W is (out, in); b is at frac W.frac + x.frac."""

    weight: Weight
    bias: Weight | None = None

    def infer(self, x: TensorType) -> TensorType:
        xt = _need_fixed(x)
        if not isinstance(self.weight.dtype, Fixed):
            raise IRError(f"weight must be Fixed, not {self.weight.dtype} (use BinaryDense)")
        if len(self.weight.shape) != 2:
            raise IRError(f"weight must be 2-D (out, in), not shape {self.weight.shape}")
        n_out, n_in = self.weight.shape
        if x.shape != (n_in,):
            raise IRError(f"input shape {x.shape} does not match weight shape {self.weight.shape}")
        frac = self.weight.dtype.frac + xt.frac
        lo, hi = _dot_interval(self.weight.data, *value_range(xt))
        blo, bhi = _check_bias(self.bias, n_out, frac)
        return TensorType(_accumulator(lo + blo, hi + bhi, frac), (n_out,))


@_register
@dataclass(frozen=True)
class Conv2d(Op):
    """2-D convolution, channels-last, zero padding, exact.

    ``weight`` is (out_ch, kh, kw, in_ch // groups); ``padding`` is (top, bottom, left,
    right); output channel o of group g = o // (out_ch // groups) reads input channels
    g * in_ch // groups ... (g + 1) * in_ch // groups - 1.
    """

    weight: Weight
    bias: Weight | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    groups: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "stride", _pair(self.stride, "stride"))
        pad = tuple(self.padding)
        if len(pad) != 4 or not all(isinstance(p, int) and p >= 0 for p in pad):
            raise IRError(f"padding must be four non-negative integers, not {self.padding!r}")
        object.__setattr__(self, "padding", pad)

    def infer(self, x: TensorType) -> TensorType:
        xt = _need_fixed(x)
        if not isinstance(self.weight.dtype, Fixed):
            raise IRError(f"weight must be Fixed, not {self.weight.dtype} (use BinaryConv2d)")
        return _conv_infer(self, x, xt, self.weight.dtype.frac + xt.frac, self.bias)


def _conv_infer(op, x: TensorType, xt, frac: int, bias) -> TensorType:
    w = op.weight
    if len(w.shape) != 4:
        raise IRError(f"weight must be 4-D (out, kh, kw, in/groups), not shape {w.shape}")
    if len(x.shape) != 3:
        raise IRError(f"input must be (H, W, C), not shape {x.shape}")
    cout, kh, kw, cg = w.shape
    h, wd, cin = x.shape
    g = op.groups
    if not isinstance(g, int) or g < 1 or cin % g or cout % g:
        raise IRError(f"groups={g!r} must divide in channels {cin} and out channels {cout}")
    if cg != cin // g:
        raise IRError(f"weight has {cg} input channels per group, input gives {cin // g}")
    pt, pb, pl, pr = op.padding
    ho = _conv_out(h, kh, op.stride[0], pt + pb, "height")
    wo = _conv_out(wd, kw, op.stride[1], pl + pr, "width")
    lo, hi = _dot_interval(w.data.reshape(cout, -1), *value_range(xt))
    blo, bhi = _check_bias(bias, cout, frac)
    return TensorType(_accumulator(lo + blo, hi + bhi, frac), (ho, wo, cout))


@_register
@dataclass(frozen=True)
class BinaryDense(Op):
    """Bipolar x Bipolar: y[o] = sum_i w[o, i] * x[i] in {-1, +1}, i.e. 2 * popcount(xnor) - N."""

    weight: Weight

    def infer(self, x: TensorType) -> TensorType:
        if not isinstance(x.dtype, Bipolar):
            raise IRError(f"input must be Bipolar, not {x.dtype} (use Dense)")
        if not isinstance(self.weight.dtype, Bipolar):
            raise IRError(f"weight must be Bipolar, not {self.weight.dtype}")
        if len(self.weight.shape) != 2:
            raise IRError(f"weight must be 2-D (out, in), not shape {self.weight.shape}")
        n_out, n_in = self.weight.shape
        if x.shape != (n_in,):
            raise IRError(f"input shape {x.shape} does not match weight shape {self.weight.shape}")
        return TensorType(Fixed.fitting(-n_in, n_in, 0), (n_out,))


@_register
@dataclass(frozen=True)
class BinaryConv2d(Op):
    """Bipolar convolution (XNOR-popcount), channels-last, no padding; weight as in Conv2d."""

    weight: Weight
    stride: tuple[int, int] = (1, 1)
    groups: int = 1
    padding: ClassVar[tuple[int, int, int, int]] = (0, 0, 0, 0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stride", _pair(self.stride, "stride"))

    def infer(self, x: TensorType) -> TensorType:
        if not isinstance(x.dtype, Bipolar):
            raise IRError(f"input must be Bipolar, not {x.dtype} (use Conv2d)")
        if not isinstance(self.weight.dtype, Bipolar):
            raise IRError(f"weight must be Bipolar, not {self.weight.dtype}")
        t = _conv_infer(self, x, x.dtype, 0, None)
        n = self.weight.data[0].size
        return TensorType(Fixed.fitting(-n, n, 0), t.shape)


@_register
@dataclass(frozen=True)
class Add(Op):
    """Residual add: both operands aligned to the larger frac (left shifts), then summed exactly."""

    arity: ClassVar[int] = 2

    def infer(self, a: TensorType, b: TensorType) -> TensorType:
        at, bt = _need_fixed(a, "first input"), _need_fixed(b, "second input")
        if a.shape != b.shape:
            raise IRError(f"operand shapes differ: {a.shape} and {b.shape}")
        f = max(at.frac, bt.frac)
        sa, sb = 1 << (f - at.frac), 1 << (f - bt.frac)
        lo = at.min_raw * sa + bt.min_raw * sb
        hi = at.max_raw * sa + bt.max_raw * sb
        return TensorType(_accumulator([lo], [hi], f), a.shape)


@_register
@dataclass(frozen=True)
class Requant(Op):
    """y = overflow(round(x * mult[c] / 2**shift[c])) into ``to``; c is the last axis.

    One entry in ``mult``/``shift`` applies to every channel. mult = 1 is the pure
    power-of-two case; an integer mult carries an arbitrary scale.
    """

    to: Fixed
    mult: tuple[int, ...] = (1,)
    shift: tuple[int, ...] = (0,)
    rounding: Rounding = Rounding.HALF_EVEN
    overflow: Overflow = Overflow.SATURATE

    def __post_init__(self) -> None:
        if not isinstance(self.to, Fixed):
            raise IRError(f"to must be Fixed, not {self.to!r}")
        object.__setattr__(self, "mult", tuple(int(m) for m in np.atleast_1d(self.mult)))
        object.__setattr__(self, "shift", tuple(int(s) for s in np.atleast_1d(self.shift)))
        object.__setattr__(self, "rounding", Rounding(self.rounding))
        object.__setattr__(self, "overflow", Overflow(self.overflow))
        if not all(0 <= s <= MAX_WIDTH for s in self.shift):
            raise IRError(f"shift must be from 0 to {MAX_WIDTH}, not {self.shift}")

    def infer(self, x: TensorType) -> TensorType:
        xt = _need_fixed(x)
        c = x.shape[-1]
        for name, v in (("mult", self.mult), ("shift", self.shift)):
            if len(v) not in (1, c):
                raise IRError(f"{name} has {len(v)} entries; need 1 or {c} (channels)")
        mbits = max(abs(m).bit_length() for m in self.mult)
        xbits = xt.width - (1 if xt.signed else 0)
        if xbits + mbits > MAX_WIDTH:
            raise IRError(
                f"product x * mult needs {xbits + mbits + 1} bits, at most {MAX_WIDTH} allowed"
            )
        return TensorType(self.to, x.shape)


@_register
@dataclass(frozen=True)
class MultiThreshold(Op):
    """y = offset + sum_i [x >= T[c, i]] (FINN's >=); T is (C or 1, n), sorted per row.

    Thresholds are raws in the input's units. With ``out`` = Bipolar there is one
    threshold and offset 0: raw 1 (+1) where x >= T, else raw 0 (-1).
    """

    thresholds: Weight
    out: Fixed | Bipolar
    offset: int = 0

    def infer(self, x: TensorType) -> TensorType:
        xt = _need_fixed(x)
        t = self.thresholds
        if not isinstance(t.dtype, Fixed):
            raise IRError(f"thresholds must be Fixed, not {t.dtype}")
        if t.dtype.frac != xt.frac:
            raise IRError(f"thresholds frac {t.dtype.frac} must equal the input frac {xt.frac}")
        if len(t.shape) != 2 or t.shape[0] not in (1, x.shape[-1]) or t.shape[1] < 1:
            raise IRError(f"thresholds shape {t.shape} must be (1 or {x.shape[-1]}, n >= 1)")
        if t.shape[1] > 1 and np.any(np.diff(t.data, axis=1) < 0):
            raise IRError("thresholds must be sorted ascending in every channel")
        n = t.shape[1]
        if isinstance(self.out, Bipolar):
            if n != 1 or self.offset != 0:
                raise IRError("a Bipolar output needs exactly one threshold and offset 0")
        elif not isinstance(self.out, Fixed):
            raise IRError(f"out must be Fixed or Bipolar, not {self.out!r}")
        elif not self.out.contains(self.offset, self.offset + n):
            raise IRError(f"outputs [{self.offset}, {self.offset + n}] do not fit {self.out}")
        return TensorType(self.out, x.shape)


@_register
@dataclass(frozen=True)
class ReLU(Op):
    """max(x, 0); a signed w-bit input gives an unsigned (w-1)-bit output (at least 1 bit)."""

    def infer(self, x: TensorType) -> TensorType:
        xt = _need_fixed(x)
        if xt.signed:
            return TensorType(Fixed(max(xt.width - 1, 1), xt.frac, False), x.shape)
        return x


# --- pooling and shape ----------------------------------------------------------------------


@_register
@dataclass(frozen=True)
class MaxPool2d(Op):
    """Max over kh x kw windows of an (H, W, C) input; no padding. Bipolar max is OR."""

    kernel: tuple[int, int]
    stride: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel", _pair(self.kernel, "kernel"))
        stride = self.kernel if self.stride is None else self.stride
        object.__setattr__(self, "stride", _pair(stride, "stride"))

    def infer(self, x: TensorType) -> TensorType:
        if isinstance(x.dtype, Float):
            raise IRError("input must be Fixed or Bipolar, not f64")
        return TensorType(x.dtype, _pool_shape(self, x))


def _pool_shape(op, x: TensorType) -> tuple[int, int, int]:
    if len(x.shape) != 3:
        raise IRError(f"input must be (H, W, C), not shape {x.shape}")
    h, w, c = x.shape
    return (
        _conv_out(h, op.kernel[0], op.stride[0], 0, "height"),
        _conv_out(w, op.kernel[1], op.stride[1], 0, "width"),
        c,
    )


@_register
@dataclass(frozen=True)
class AvgPool2d(Op):
    """Mean over kh x kw windows, exact: raw = window sum, frac grows by log2(kh * kw).

    Only power-of-two windows are exact; other windows need a sum plus a Requant.
    """

    kernel: tuple[int, int]
    stride: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel", _pair(self.kernel, "kernel"))
        stride = self.kernel if self.stride is None else self.stride
        object.__setattr__(self, "stride", _pair(stride, "stride"))
        k = self.kernel[0] * self.kernel[1]
        if k & (k - 1):
            raise IRError(
                f"window {self.kernel[0]}x{self.kernel[1]} has {k} elements; only power-of-two "
                "windows are exact (use a sum and a Requant)"
            )

    @property
    def log2_window(self) -> int:
        return (self.kernel[0] * self.kernel[1]).bit_length() - 1

    def infer(self, x: TensorType) -> TensorType:
        xt = _need_fixed(x)
        k = self.kernel[0] * self.kernel[1]
        t = _accumulator([xt.min_raw * k], [xt.max_raw * k], xt.frac + self.log2_window)
        return TensorType(t, _pool_shape(self, x))


@_register
@dataclass(frozen=True)
class Flatten(Op):
    """(H, W, C) -> (H * W * C,) in row-major (channels-last) order."""

    def infer(self, x: TensorType) -> TensorType:
        return TensorType(x.dtype, (x.size,))


@_register
@dataclass(frozen=True)
class Reshape(Op):
    """Row-major reshape to ``shape`` (per sample)."""

    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    def infer(self, x: TensorType) -> TensorType:
        t = TensorType(x.dtype, self.shape)
        if t.size != x.size:
            raise IRError(f"cannot reshape {x.shape} ({x.size} elements) to {self.shape}")
        return t


# --- dynamic pruning ------------------------------------------------------------------------


@_register
@dataclass(frozen=True)
class ChannelGate(Op):
    """Per-sample channel gating (FBS): keep the ``k`` channels of ``x`` with the largest
    saliency ``s``, zero the others.

    Inputs: ``x`` (H, W, C) or (C,) Fixed, ``s`` (C,) Fixed (one saliency per channel,
    per sample). The kept channels are the first ``k`` of a stable descending sort of
    ``s``: channel c is kept when fewer than ``k`` channels rank before it, where j ranks
    before c if ``s[j] > s[c]`` or (``s[j] == s[c]`` and ``j < c``) (ties go to the lower
    index, as ``torch.sort(stable=True, descending=True)``). Output on kept channels:
    ``x * s`` exactly (``scale=True``; frac ``x.frac + s.frac``) or ``x`` (``scale=False``;
    the type of ``x``); 0 elsewhere.
    """

    arity: ClassVar[int] = 2

    k: int
    scale: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise IRError(f"k must be a positive integer, not {self.k!r}")
        if not isinstance(self.scale, bool):
            raise IRError(f"scale must be True or False, not {self.scale!r}")

    def infer(self, x: TensorType, s: TensorType) -> TensorType:
        xt, st = _need_fixed(x, "x (first input)"), _need_fixed(s, "s (second input)")
        if len(x.shape) not in (1, 3):
            raise IRError(f"x must be (H, W, C) or (C,), not shape {x.shape}")
        c = x.shape[-1]
        if s.shape != (c,):
            raise IRError(f"s must be one saliency per channel, shape ({c},), not {s.shape}")
        if self.k > c:
            raise IRError(f"k={self.k} exceeds the {c} channels")
        if not self.scale:
            return x
        corners = [a * b for a in (xt.min_raw, xt.max_raw) for b in (st.min_raw, st.max_raw)]
        return TensorType(_accumulator([min(corners)], [max(corners)], xt.frac + st.frac), x.shape)
