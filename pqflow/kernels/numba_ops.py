"""Numba kernels for every op: the fast, bit-accurate oracle.

Each op has one ``kernel`` entry (a ``functools.singledispatch`` keyed by op class) that
calls ``@njit`` loops over the batch. They implement the definitions of
``pqflow.ir.numeric`` and ``reference.py`` exactly; the scalar rounding, overflow and
quantize helpers are rewritten here in Numba and tested against the numpy ones
exhaustively on small widths.

Matrix products (``Dense``, ``Conv2d``, ``BinaryDense``, ``BinaryConv2d``) accumulate
each output in a dtype chosen per node from its interval bound
``B = max_o sum_i |W[o, i]| * max|x|`` (``gemm_bound``; Bipolar values count as ±1):

- ``f32`` when B < 2**24. Every product W·x and every partial sum of a row is an integer
  of magnitude <= B (partial sums of any subset, in any order, are bounded by the sum of
  absolute values). Every integer of magnitude <= 2**24 is a float32, so no float32
  operation rounds; the inputs and weights that meet a nonzero partner are themselves
  <= B, so their conversions are exact, and the accumulator converts back to the same
  int64. The bias is added in int64 afterwards.
- ``f64`` when B < 2**53: the same argument with float64's 53-bit significand.
- ``int`` otherwise: int64. The verifier keeps the result within 62 bits, and int64 sums
  and products wrap modulo 2**64, so the result is exact even if a partial sum left int64.

``Options(gemm=...)`` forces a path (the tests check every path gives the same ints);
forcing a path that is not exact for a node raises ValueError.

Kernels are serial and release the GIL (``nogil``): the executor runs chunks of the
batch on a thread pool. Measured on the 2-core target, a ``prange`` inside every kernel
did not pay: its per-call barrier made a 4096-row 64x64 Dense 5x slower (0.55M vs 3.0M
rows/s) when the other core was busy, while chunk-level threads degrade gracefully.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, singledispatch

import numpy as np
from numba import njit

from pqflow.ir import (
    Add,
    AvgPool2d,
    BinaryConv2d,
    BinaryDense,
    Bipolar,
    ChannelGate,
    Conv2d,
    Dense,
    Dequantize,
    Flatten,
    Float,
    MaxPool2d,
    MultiThreshold,
    Op,
    Overflow,
    Quantize,
    ReLU,
    Requant,
    Reshape,
    Rounding,
    TensorType,
)

# Mode codes passed to the Numba helpers.
FLOOR, HALF_UP, HALF_EVEN = 0, 1, 2
SATURATE, WRAP = 0, 1
ROUNDING_CODE = {Rounding.FLOOR: FLOOR, Rounding.HALF_UP: HALF_UP, Rounding.HALF_EVEN: HALF_EVEN}
OVERFLOW_CODE = {Overflow.SATURATE: SATURATE, Overflow.WRAP: WRAP}
QUANTIZE_LIMIT = float(2**62)

GEMM_PATHS = ("auto", "f32", "f64", "int")
F32_LIMIT = 2**24
F64_LIMIT = 2**53

jit = njit(cache=True, nogil=True)


# --- scalar helpers (the contract, in Numba) -------------------------------------------------


@njit(cache=True, inline="always")
def round_shift_scalar(p, s, mode):
    """p / 2**s rounded to an integer: floor, half_up (ties up) or half_even (ties to even)."""
    q = p >> s  # floor
    if mode == FLOOR:
        return q
    r = p - (q << s)  # the dropped bits, in [0, 2**s)
    half = (np.int64(1) << s) >> 1  # 2**(s-1), or 0 when s == 0 (nothing dropped)
    if mode == HALF_UP:
        up = s > 0 and r >= half
    else:
        up = s > 0 and (r > half or (r == half and (q & 1) == 1))
    return q + 1 if up else q


@njit(cache=True, inline="always")
def overflow_scalar(v, width, signed, mode):
    """Bring v into a ``width``-bit (un)signed raw range by saturation or wrap-around."""
    if signed:
        lo = -(np.int64(1) << (width - 1))
        hi = (np.int64(1) << (width - 1)) - 1
    else:
        lo = np.int64(0)
        hi = (np.int64(1) << width) - 1
    if mode == SATURATE:
        return lo if v < lo else (hi if v > hi else v)
    u = v & ((np.int64(1) << width) - 1)
    if signed and u > hi:
        u -= np.int64(1) << width
    return u


@njit(cache=True, inline="always")
def round_float_scalar(v, mode):
    """A float rounded to an integral float: floor, half_up or half_even; NaN stays NaN."""
    if mode == FLOOR:
        return np.floor(v)
    if mode == HALF_EVEN:
        return np.rint(v)  # IEEE round-to-nearest-even
    f = np.floor(v)
    # A non-integral v has |v| < 2**52, so f + 0.5 is exact; not floor(v + 0.5), which
    # rounds the sum (0.49999999999999994 + 0.5 == 1.0). Branch-free, so it vectorizes.
    up = (v != f) & (v >= f + 0.5)
    return f + 1.0 if up else f


@njit(cache=True, inline="always")
def quantize_scalar(x, scale, rmode, width, signed, omode):
    """Float -> raw: overflow(round(x * scale)); NaN -> 0; clipped to +-2**62 first."""
    r = round_float_scalar(x * scale, rmode)
    r = 0.0 if r != r else r
    r = min(max(r, -QUANTIZE_LIMIT), QUANTIZE_LIMIT)
    return overflow_scalar(np.int64(r), width, signed, omode)


# Array versions of the helpers, for the exhaustive tests against pqflow.ir.numeric.
@jit
def round_shift_array(p, s, mode):
    out = np.empty_like(p)
    for i in range(p.size):
        out[i] = round_shift_scalar(p[i], s, mode)
    return out


@jit
def overflow_array(v, width, signed, mode):
    out = np.empty_like(v)
    for i in range(v.size):
        out[i] = overflow_scalar(v[i], width, signed, mode)
    return out


# --- elementwise and per-channel kernels (2-D: rows x channels) -----------------------------


@jit
def quantize_2d(x, scale, rmode, width, signed, omode, out):
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[n, c] = quantize_scalar(x[n, c], scale, rmode, width, signed, omode)
    return out


@jit
def dequantize_2d(x, scale, bipolar, out):
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            if bipolar:
                out[n, c] = 1.0 if x[n, c] != 0 else -1.0
            else:
                out[n, c] = np.float64(x[n, c]) * scale
    return out


@jit
def requant_2d(x, mult, shift, rmode, width, signed, omode, out):
    """mult and shift hold one entry per channel (the caller broadcasts them)."""
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            q = round_shift_scalar(x[n, c] * mult[c], shift[c], rmode)
            out[n, c] = overflow_scalar(q, width, signed, omode)
    return out


@jit
def relu_2d(x, out):
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            v = x[n, c]
            out[n, c] = v if v > 0 else 0
    return out


@jit
def add_2d(a, b, sa, sb, out):
    for n in range(a.shape[0]):
        for c in range(a.shape[1]):
            out[n, c] = a[n, c] * sa + b[n, c] * sb
    return out


@jit
def threshold_2d(x, t, offset, out):
    """out = offset + #{i : x >= t[c, i]}; t has one row per channel or one for all."""
    per_c = t.shape[0] > 1
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            row = c if per_c else 0
            v = x[n, c]
            k = offset
            for i in range(t.shape[1]):
                if v >= t[row, i]:
                    k += 1
            out[n, c] = k
    return out


# --- pooling (N, H, W, C) ------------------------------------------------------------------


@jit
def maxpool_4d(x, kh, kw, sh, sw, out):
    n_, ho, wo, c_ = out.shape
    for n in range(n_):
        for i in range(ho):
            for j in range(wo):
                for c in range(c_):
                    m = x[n, i * sh, j * sw, c]
                    for ky in range(kh):
                        for kx in range(kw):
                            v = x[n, i * sh + ky, j * sw + kx, c]
                            if v > m:
                                m = v
                    out[n, i, j, c] = m
    return out


@jit
def sumpool_4d(x, kh, kw, sh, sw, out):
    n_, ho, wo, c_ = out.shape
    for n in range(n_):
        for i in range(ho):
            for j in range(wo):
                for c in range(c_):
                    s = np.int64(0)
                    for ky in range(kh):
                        for kx in range(kw):
                            s += x[n, i * sh + ky, j * sw + kx, c]
                    out[n, i, j, c] = s
    return out


# --- dynamic pruning ------------------------------------------------------------------------


@jit
def channel_gate_3d(x, s, k, scale, out):
    """x, out: (N, P, C); s: (N, C). Channel c is kept when fewer than k channels rank
    before it (a larger saliency, or an equal one at a lower index)."""
    n_, p_, c_ = x.shape
    keep = np.zeros(c_, dtype=np.bool_)
    for n in range(n_):
        for c in range(c_):
            v = s[n, c]
            rank = 0
            for j in range(c_):
                if s[n, j] > v or (s[n, j] == v and j < c):
                    rank += 1
            keep[c] = rank < k
        for p in range(p_):
            for c in range(c_):
                if not keep[c]:
                    out[n, p, c] = 0
                elif scale:
                    out[n, p, c] = x[n, p, c] * s[n, c]
                else:
                    out[n, p, c] = x[n, p, c]
    return out


# --- matrix products ------------------------------------------------------------------------


# Only reassociation and contraction (FMA): both are exact here, because every partial
# sum, in any order, is an integer the accumulator holds exactly (see the module doc).
EXACT_FASTMATH = {"reassoc", "contract"}
mjit = njit(cache=True, nogil=True, fastmath=EXACT_FASTMATH)

ROWS = 4
"""Dense computes this many batch rows at once, so each weight load feeds that many FMAs."""


@mjit
def dense_rows(x, w, bias, bipolar, out):
    """out[m, o] = sum_k x[m, k] * w[o, k] + bias[o], accumulated in w's dtype.

    x: (M, K) int64 raws (Bipolar 0/1 read as -1/+1); w: (O, K) float32, float64 or int64;
    bias: (O,) int64, added after the exact accumulator is converted back to int64.
    """
    m_, k_ = x.shape
    o_ = w.shape[0]
    rows = np.zeros((ROWS, k_), dtype=w.dtype)
    zero = np.zeros(1, dtype=w.dtype)[0]
    for m0 in range(0, m_, ROWS):
        nr = min(ROWS, m_ - m0)
        for r in range(nr):
            for k in range(k_):
                v = x[m0 + r, k]
                rows[r, k] = 2 * v - 1 if bipolar else v
        for r in range(nr, ROWS):
            rows[r, :] = zero
        for o in range(o_):
            s0, s1, s2, s3 = zero, zero, zero, zero
            for k in range(k_):
                wv = w[o, k]
                s0 += rows[0, k] * wv
                s1 += rows[1, k] * wv
                s2 += rows[2, k] * wv
                s3 += rows[3, k] * wv
            b = bias[o]
            out[m0, o] = np.int64(s0) + b
            if nr > 1:
                out[m0 + 1, o] = np.int64(s1) + b
            if nr > 2:
                out[m0 + 2, o] = np.int64(s2) + b
            if nr > 3:
                out[m0 + 3, o] = np.int64(s3) + b
    return out


@mjit
def conv_rows(x, w, bias, bipolar, c0, kh, kw, sh, sw, pt, pl, out, o0):
    """Direct grouped convolution of channels [c0, c0 + cg) into out[..., o0:o0 + O].

    w: (O, kh * kw * cg) in the accumulator dtype, columns ordered (ky, kx, c). Each
    output pixel's patch is gathered into a row (zeros in the padding), then dotted.
    """
    n_, h, wd, _ = x.shape
    _, ho, wo, _ = out.shape
    o_, k_ = w.shape
    cg = k_ // (kh * kw)
    row = np.zeros(k_, dtype=w.dtype)
    zero = np.zeros(1, dtype=w.dtype)[0]
    for n in range(n_):
        for i in range(ho):
            for j in range(wo):
                col = 0
                for ky in range(kh):
                    yy = i * sh + ky - pt
                    for kx in range(kw):
                        xx = j * sw + kx - pl
                        inside = 0 <= yy < h and 0 <= xx < wd
                        for c in range(cg):
                            if inside:
                                v = x[n, yy, xx, c0 + c]
                                row[col] = 2 * v - 1 if bipolar else v
                            else:
                                row[col] = zero
                            col += 1
                for o in range(o_):
                    acc = zero
                    for k in range(k_):
                        acc += row[k] * w[o, k]
                    out[n, i, j, o0 + o] = np.int64(acc) + bias[o]
    return out


def gemm_bound(w2d: np.ndarray, x_abs_max: int) -> int:
    """max_o (sum_i |W[o, i]| * max|x|): bounds every product and partial sum of a row.

    The bias is not in it: it is added in int64 after the accumulator is converted back.
    """
    if w2d.size == 0:
        return 0
    rows = np.abs(w2d.astype(object)).sum(axis=1)
    return int(max(rows)) * int(x_abs_max)


def choose_path(bound: int, gemm: str = "auto", where: str = "") -> str:
    """The accumulator path for a node with this bound; a forced path must be exact."""
    if gemm not in GEMM_PATHS:
        raise ValueError(f"gemm must be one of {', '.join(GEMM_PATHS)}, not {gemm!r}")
    if gemm == "auto":
        return "f32" if bound < F32_LIMIT else ("f64" if bound < F64_LIMIT else "int")
    limit = {"f32": F32_LIMIT, "f64": F64_LIMIT}.get(gemm)
    if limit is not None and bound >= limit:
        raise ValueError(
            f"{where}gemm={gemm!r} is not exact here: products and partial sums reach "
            f"{bound}, {gemm} holds every integer only below {limit}"
        )
    return gemm


_DTYPES = {"f32": np.float32, "f64": np.float64, "int": np.int64}


@dataclass(frozen=True)
class MatmulPlan:
    """A matrix-product node made ready to run: path, per-group weights, bias."""

    path: str
    bound: int
    wts: tuple[np.ndarray, ...]  # per group, (O, K) in the path's dtype, ±1 for Bipolar
    bias: np.ndarray  # (O_total,) int64, zeros when the op has none
    bipolar: bool


@lru_cache(maxsize=512)
def matmul_plan(op: Op, x_type: TensorType, gemm: str = "auto") -> MatmulPlan:
    """The path and prepared weights of a Dense/Conv2d/BinaryDense/BinaryConv2d node."""
    w = op.weight
    bipolar = isinstance(w.dtype, Bipolar)
    data = 2 * w.data - 1 if bipolar else w.data
    cout = data.shape[0]
    flat = data.reshape(cout, -1)
    d = x_type.dtype
    x_abs_max = 1 if isinstance(d, Bipolar) else max(abs(d.min_raw), abs(d.max_raw))
    bound = gemm_bound(flat, x_abs_max)
    path = choose_path(bound, gemm, f"{type(op).__name__}: ")
    groups = getattr(op, "groups", 1)
    og = cout // groups
    wts = tuple(
        np.ascontiguousarray(flat[g * og : (g + 1) * og], dtype=_DTYPES[path])
        for g in range(groups)
    )
    b = getattr(op, "bias", None)
    bias = np.zeros(cout, dtype=np.int64) if b is None else np.array(b.data, dtype=np.int64)
    return MatmulPlan(path, bound, wts, bias, bipolar)


def _dense(op, x_type: TensorType, x: np.ndarray, gemm: str, out: np.ndarray) -> np.ndarray:
    p = matmul_plan(op, x_type, gemm)
    return dense_rows(np.ascontiguousarray(x), p.wts[0], p.bias, p.bipolar, out)


def _conv(op, x_type: TensorType, x: np.ndarray, gemm: str, out: np.ndarray) -> np.ndarray:
    p = matmul_plan(op, x_type, gemm)
    _, kh, kw, cg = op.weight.shape
    pt, _, pl, _ = op.padding
    sh, sw = op.stride
    x = np.ascontiguousarray(x)
    og = out.shape[-1] // len(p.wts)
    for g, wt in enumerate(p.wts):
        bias = p.bias[g * og : (g + 1) * og]
        conv_rows(x, wt, bias, p.bipolar, g * cg, kh, kw, sh, sw, pt, pl, out, g * og)
    return out


# --- the registry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """Execution options that never change results: only which exact path computes them."""

    gemm: str = "auto"


def _rows(x: np.ndarray) -> np.ndarray:
    """Rows x channels (the last axis), C-contiguous; a view when x already is."""
    return np.ascontiguousarray(x).reshape(-1, x.shape[-1])


@lru_cache(maxsize=1024)
def _per_channel(v: tuple[int, ...], c: int) -> np.ndarray:
    """A per-channel attribute (1 or c entries) as c int64 values."""
    return np.ascontiguousarray(np.broadcast_to(np.array(v, dtype=np.int64), (c,)))


@singledispatch
def kernel(
    op: Op, in_types: list[TensorType], *xs: np.ndarray, options: Options, out: np.ndarray
) -> np.ndarray:
    """Compute ``op`` on batched raws into ``out`` (C-contiguous, shaped (N, *out_shape),
    float64 for Dequantize, else int64) and return the result: ``out``, or a view of the
    input for the shape ops. ``kernel_alloc`` allocates ``out`` for you.
    """
    raise NotImplementedError(
        f"no Numba kernel for op {type(op).__name__}; "
        "add a @kernel.register entry in pqflow/kernels/numba_ops.py"
    )


VIEW_OPS = (Flatten, Reshape)
"""Ops whose kernel returns a view of its input and ignores ``out``."""


def kernel_alloc(
    op: Op, in_types: list[TensorType], out_type: TensorType, *xs: np.ndarray, options: Options
) -> np.ndarray:
    """``kernel`` with a fresh output array."""
    dt = np.float64 if isinstance(out_type.dtype, Float) else np.int64
    out = np.empty((xs[0].shape[0], *out_type.shape), dtype=dt)
    return kernel(op, in_types, *xs, options=options, out=out)


@kernel.register
def _(op: Quantize, in_types, x, *, options, out):
    t = op.to
    x2 = np.ascontiguousarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
    scale = float(2.0**t.frac)
    r, o = ROUNDING_CODE[op.rounding], OVERFLOW_CODE[op.overflow]
    quantize_2d(x2, scale, r, t.width, t.signed, o, _rows(out))
    return out


@kernel.register
def _(op: Dequantize, in_types, x, *, options, out):
    d = in_types[0].dtype
    bipolar = isinstance(d, Bipolar)
    scale = 1.0 if bipolar else float(2.0**-d.frac)
    dequantize_2d(_rows(x), scale, bipolar, _rows(out))
    return out


@kernel.register
def _(op: Dense, in_types, x, *, options, out):
    return _dense(op, in_types[0], x, options.gemm, out)


@kernel.register
def _(op: BinaryDense, in_types, x, *, options, out):
    return _dense(op, in_types[0], x, options.gemm, out)


@kernel.register
def _(op: Conv2d, in_types, x, *, options, out):
    return _conv(op, in_types[0], x, options.gemm, out)


@kernel.register
def _(op: BinaryConv2d, in_types, x, *, options, out):
    return _conv(op, in_types[0], x, options.gemm, out)


@kernel.register
def _(op: Add, in_types, a, b, *, options, out):
    fa, fb = in_types[0].dtype.frac, in_types[1].dtype.frac
    f = max(fa, fb)
    sa, sb = np.int64(1 << (f - fa)), np.int64(1 << (f - fb))
    add_2d(_rows(a), _rows(b), sa, sb, _rows(out))
    return out


@kernel.register
def _(op: Requant, in_types, x, *, options, out):
    t = op.to
    c = x.shape[-1]
    r, o = ROUNDING_CODE[op.rounding], OVERFLOW_CODE[op.overflow]
    m, s = _per_channel(op.mult, c), _per_channel(op.shift, c)
    requant_2d(_rows(x), m, s, r, t.width, t.signed, o, _rows(out))
    return out


@kernel.register
def _(op: MultiThreshold, in_types, x, *, options, out):
    threshold_2d(_rows(x), op.thresholds.data, np.int64(op.offset), _rows(out))
    return out


@kernel.register
def _(op: ReLU, in_types, x, *, options, out):
    relu_2d(_rows(x), _rows(out))
    return out


@kernel.register
def _(op: MaxPool2d, in_types, x, *, options, out):
    return maxpool_4d(np.ascontiguousarray(x), *op.kernel, *op.stride, out)


@kernel.register
def _(op: AvgPool2d, in_types, x, *, options, out):
    return sumpool_4d(np.ascontiguousarray(x), *op.kernel, *op.stride, out)


@kernel.register
def _(op: Flatten, in_types, x, *, options, out):
    return x.reshape(x.shape[0], -1)


@kernel.register
def _(op: Reshape, in_types, x, *, options, out):
    return x.reshape(x.shape[0], *op.shape)


@kernel.register
def _(op: ChannelGate, in_types, x, s, *, options, out):
    c = x.shape[-1]
    x3 = np.ascontiguousarray(x).reshape(x.shape[0], -1, c)
    channel_gate_3d(x3, np.ascontiguousarray(s), op.k, op.scale, out.reshape(x3.shape))
    return out
