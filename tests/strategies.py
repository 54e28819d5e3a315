"""Hypothesis strategies for the IR's types, ops, batched raws and small graphs.

``op_cases(kind)`` draws a legal op of one kind together with its input types and a
batch of input raws (or floats for Quantize); ``graphs()`` draws small verified graphs
(dense chains, conv -> pool -> flatten -> dense, an Add of two branches).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

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
    Fixed,
    Flatten,
    Float,
    Graph,
    GraphBuilder,
    IRError,
    MaxPool2d,
    MultiThreshold,
    Op,
    Overflow,
    Pattern,
    Quantize,
    ReLU,
    Requant,
    Reshape,
    Rounding,
    Sparsity,
    TensorType,
    Weight,
    infer_node,
)

roundings = st.sampled_from(list(Rounding))
overflows = st.sampled_from(list(Overflow))
seeds = st.integers(0, 2**32 - 1)


@st.composite
def widths(draw, lo: int = 1, hi: int = 16, wide: int = 62) -> int:
    """Mostly ``lo..hi`` bits, sometimes up to ``wide``."""
    if wide > hi and draw(st.integers(0, 9)) == 0:
        return draw(st.integers(hi + 1, wide))
    return draw(st.integers(lo, hi))


@st.composite
def fixed_types(draw, lo: int = 1, hi: int = 16, wide: int = 62, frac=None) -> Fixed:
    f = draw(st.integers(-6, 12)) if frac is None else frac
    return Fixed(draw(widths(lo, hi, wide)), f, draw(st.booleans()))


def int_types(**kw) -> st.SearchStrategy:
    return st.one_of(fixed_types(**kw), st.just(Bipolar()))


def random_raws(rng: np.random.Generator, dtype, shape) -> np.ndarray:
    """Raws in ``dtype``'s range, with the extremes and zero over-represented."""
    lo, hi = dtype.min_raw, dtype.max_raw
    a = rng.integers(lo, hi, size=shape, endpoint=True, dtype=np.int64)
    special = np.array([v for v in (lo, hi, 0, 1, -1) if lo <= v <= hi], dtype=np.int64)
    mask = rng.random(shape) < 0.2
    a[mask] = rng.choice(special, size=int(mask.sum()))
    return a


@st.composite
def weights(draw, dtype, shape, rng=None) -> Weight:
    rng = rng or np.random.default_rng(draw(seeds))
    data = random_raws(rng, dtype, shape)
    sp = Sparsity()
    if not isinstance(dtype, Bipolar) and draw(st.booleans()):
        data = data * (rng.random(shape) < draw(st.sampled_from([0.0, 0.2, 0.5, 0.9])))
        sp = Sparsity(Pattern.UNSTRUCTURED)
    return Weight(data, dtype, sp)


@dataclass
class Case:
    """One op with its input types and a batch of inputs."""

    op: Op
    in_types: list[TensorType]
    inputs: list[np.ndarray]

    @property
    def out_type(self) -> TensorType:
        return infer_node("n", self.op, self.in_types)


def _infer_or_reject(op: Op, in_types: list[TensorType]) -> None:
    try:
        infer_node("n", op, in_types)
    except IRError:
        assume(False)


def _batch(draw) -> int:
    return draw(st.integers(1, 5))


@st.composite
def _quantize(draw):
    c = draw(st.integers(1, 6))
    to = Fixed(draw(widths(1, 16, 62)), draw(st.integers(-8, 30)), draw(st.booleans()))
    op = Quantize(to, draw(roundings), draw(overflows))
    rng = np.random.default_rng(draw(seeds))
    n = _batch(draw)
    scale = 2.0**-to.frac
    x = rng.normal(size=(n, c)) * scale * 2.0 ** draw(st.integers(0, to.width + 2))
    # ties, near-ties and special values
    kinds = rng.integers(0, 5, size=x.shape)
    ties = (rng.integers(-(2**12), 2**12, size=x.shape) + 0.5) * scale
    near = np.nextafter(ties, rng.choice([-np.inf, np.inf], size=x.shape))
    special = rng.choice(
        [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, -1e300, 2.0**62, 0.49999999999999994],
        size=x.shape,
    )
    x = np.where(kinds == 1, ties, x)
    x = np.where(kinds == 2, near, x)
    x = np.where(kinds == 3, special, x)
    return Case(op, [TensorType(Float(), (c,))], [x])


def _shape(draw, image: bool):
    if image:
        return (draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 4)))
    return (draw(st.integers(1, 8)),)


@st.composite
def _dequantize(draw):
    t = TensorType(draw(int_types()), _shape(draw, draw(st.booleans())))
    return Case(Dequantize(), [t], [])


@st.composite
def _dense(draw):
    k, o = draw(st.integers(1, 12)), draw(st.integers(1, 8))
    if draw(st.integers(0, 4)) == 0:  # products near 2**53..2**61: the int64 path
        total = draw(st.integers(52, 60)) - k.bit_length()
        xw = draw(st.integers(20, total - 20))
        xt = Fixed(xw, draw(st.integers(-4, 4)), draw(st.booleans()))
        wt = Fixed(total - xw, draw(st.integers(-4, 4)), True)
    else:
        xt = draw(fixed_types(hi=12, wide=40))
        wt = draw(fixed_types(hi=12, wide=40))
    w = draw(weights(wt, (o, k)))
    bias = None
    if draw(st.booleans()):
        bt = Fixed(draw(widths(1, 20, 40)), wt.frac + xt.frac, True)
        bias = draw(weights(bt, (o,)))
    op = Dense(w, bias)
    return Case(op, [TensorType(xt, (k,))], [])


@st.composite
def _conv_geometry(draw, padded: bool):
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg = draw(st.integers(1, 3))
    og = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pad = tuple(draw(st.integers(0, 2)) for _ in range(4)) if padded else (0, 0, 0, 0)
    assume(h + pad[0] + pad[1] >= kh and w + pad[2] + pad[3] >= kw)
    return (h, w, groups * cg), (groups * og, kh, kw, cg), stride, pad, groups


@st.composite
def _conv(draw):
    xshape, wshape, stride, pad, groups = draw(_conv_geometry(True))
    xt = draw(fixed_types(hi=10, wide=30))
    wt = draw(fixed_types(hi=10, wide=30))
    w = draw(weights(wt, wshape))
    bias = None
    if draw(st.booleans()):
        bias = draw(weights(Fixed(draw(widths(1, 16, 30)), wt.frac + xt.frac, True), (wshape[0],)))
    op = Conv2d(w, bias, stride, pad, groups)
    return Case(op, [TensorType(xt, xshape)], [])


@st.composite
def _binary_dense(draw):
    k, o = draw(st.integers(1, 40)), draw(st.integers(1, 8))
    op = BinaryDense(draw(weights(Bipolar(), (o, k))))
    return Case(op, [TensorType(Bipolar(), (k,))], [])


@st.composite
def _binary_conv(draw):
    xshape, wshape, stride, _, groups = draw(_conv_geometry(False))
    op = BinaryConv2d(draw(weights(Bipolar(), wshape)), stride, groups)
    return Case(op, [TensorType(Bipolar(), xshape)], [])


@st.composite
def _add(draw):
    shape = _shape(draw, draw(st.booleans()))
    a = draw(fixed_types(hi=16, wide=50))
    b = draw(fixed_types(hi=16, wide=50))
    return Case(Add(), [TensorType(a, shape), TensorType(b, shape)], [])


@st.composite
def _requant(draw):
    shape = _shape(draw, draw(st.booleans()))
    c = shape[-1]
    xt = draw(fixed_types(hi=24, wide=60))
    per = draw(st.booleans())
    mbits = draw(st.integers(0, min(16, max(0, 61 - xt.width))))
    mults = st.integers(-(2**mbits) + 1, 2**mbits - 1) if mbits else st.just(1)
    mult = tuple(draw(mults) for _ in range(c if per else 1))
    shift = tuple(draw(st.integers(0, 62)) for _ in range(c if draw(st.booleans()) else 1))
    to = draw(fixed_types(hi=16, wide=62))
    op = Requant(to, mult, shift, draw(roundings), draw(overflows))
    return Case(op, [TensorType(xt, shape)], [])


@st.composite
def _threshold(draw):
    shape = _shape(draw, draw(st.booleans()))
    c = shape[-1]
    xt = draw(fixed_types(hi=12, wide=40))
    bipolar = draw(st.integers(0, 3)) == 0
    n = 1 if bipolar else draw(st.integers(1, 9))
    rows = c if draw(st.booleans()) else 1
    rng = np.random.default_rng(draw(seeds))
    tt = Fixed(draw(widths(1, 14, 40)), xt.frac, True)
    t = np.sort(random_raws(rng, tt, (rows, n)), axis=1)
    if bipolar:
        out, offset = Bipolar(), 0
    else:
        offset = draw(st.integers(-4, 4))
        out = Fixed.fitting(min(offset, 0), offset + n, 0)
    op = MultiThreshold(Weight(t, tt), out, offset)
    return Case(op, [TensorType(xt, shape)], [])


@st.composite
def _relu(draw):
    return Case(ReLU(), [TensorType(draw(fixed_types()), _shape(draw, draw(st.booleans())))], [])


@st.composite
def _pool(draw, cls):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if cls is AvgPool2d:
        kh, kw = draw(st.sampled_from([(1, 1), (1, 2), (2, 1), (2, 2), (1, 4), (4, 2), (2, 4)]))
    h, w, c = draw(st.integers(kh, kh + 4)), draw(st.integers(kw, kw + 4)), draw(st.integers(1, 3))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    dtype = draw(int_types(wide=55)) if cls is MaxPool2d else draw(fixed_types(wide=55))
    op = cls((kh, kw), stride)
    return Case(op, [TensorType(dtype, (h, w, c))], [])


@st.composite
def _flatten(draw):
    return Case(Flatten(), [TensorType(draw(int_types()), _shape(draw, True))], [])


@st.composite
def _reshape(draw):
    shape = _shape(draw, True)
    size = shape[0] * shape[1] * shape[2]
    new = draw(st.sampled_from([(size,), (1, size), (size, 1, 1), shape[::-1]]))
    return Case(Reshape(new), [TensorType(draw(int_types()), shape)], [])


@st.composite
def _channel_gate(draw):
    shape = _shape(draw, draw(st.booleans()))
    c = draw(st.integers(1, 12))
    shape = (*shape[:-1], c)
    xt = draw(fixed_types(hi=16, wide=30))
    st_ = draw(fixed_types(hi=10, wide=30))
    op = ChannelGate(draw(st.integers(1, c)), draw(st.booleans()))
    rng = np.random.default_rng(draw(seeds))
    n = _batch(draw)
    x = random_raws(rng, xt, (n, *shape))
    s = random_raws(rng, st_, (n, c))
    if draw(st.booleans()):  # many ties: saliencies from a few values
        s = rng.choice(np.unique(s[:, :2]), size=(n, c))
    return Case(op, [TensorType(xt, shape), TensorType(st_, (c,))], [x, s])


OP_CASES = {
    "Quantize": _quantize(),
    "Dequantize": _dequantize(),
    "Dense": _dense(),
    "Conv2d": _conv(),
    "BinaryDense": _binary_dense(),
    "BinaryConv2d": _binary_conv(),
    "Add": _add(),
    "Requant": _requant(),
    "MultiThreshold": _threshold(),
    "ReLU": _relu(),
    "MaxPool2d": _pool(MaxPool2d),
    "AvgPool2d": _pool(AvgPool2d),
    "Flatten": _flatten(),
    "Reshape": _reshape(),
    "ChannelGate": _channel_gate(),
}
"""A strategy of legal cases for every op kind in ``pqflow.ir.OPS``."""


@st.composite
def op_cases(draw, kind: str) -> Case:
    """A legal ``kind`` op, its input types and a batch of inputs."""
    case = draw(OP_CASES[kind])
    _infer_or_reject(case.op, case.in_types)
    if not case.inputs:
        rng = np.random.default_rng(draw(seeds))
        n = _batch(draw)
        case.inputs = [random_raws(rng, t.dtype, (n, *t.shape)) for t in case.in_types]
    return case


# --- graphs ---------------------------------------------------------------------------------


def _dense_layer(draw, b: GraphBuilder, h: str, rng, n_out: int) -> str:
    xt = b.type_of(h).dtype
    wt = Fixed(draw(st.integers(2, 8)), draw(st.integers(0, 6)), True)
    w = draw(weights(wt, (n_out, b.type_of(h).shape[0]), rng=rng))
    bias = None
    if draw(st.booleans()):
        bias = Weight(rng.integers(-100, 100, size=n_out), Fixed(8, wt.frac + xt.frac, True))
    return b.add(Dense(w, bias), h)


def _requant_to(draw, b: GraphBuilder, h: str, bits: int) -> str:
    acc = b.type_of(h).dtype
    shift = max(0, acc.width - bits)
    to = Fixed(bits, acc.frac - shift, True)
    return b.add(Requant(to, (1,), (shift,), draw(roundings), draw(overflows)), h)


@st.composite
def dense_chains(draw) -> Graph:
    rng = np.random.default_rng(draw(seeds))
    b = GraphBuilder("chain")
    c = draw(st.integers(1, 8))
    h = b.add(Quantize(Fixed(draw(st.integers(2, 8)), 3, False)), b.input("x", Float(), (c,)))
    for _ in range(draw(st.integers(1, 3))):
        h = _dense_layer(draw, b, h, rng, draw(st.integers(1, 8)))
        h = _requant_to(draw, b, h, draw(st.integers(2, 8)))
        if draw(st.booleans()):
            h = b.add(ReLU(), h)
        else:
            xt = b.type_of(h).dtype
            t = np.sort(rng.integers(xt.min_raw, xt.max_raw + 1, size=(1, 3)), axis=1)
            h = b.add(MultiThreshold(Weight(t, xt), Fixed(2, 0, False)), h)
    if draw(st.booleans()):
        h = b.add(Dequantize(), h)
    return b.build(h)


@st.composite
def conv_chains(draw) -> Graph:
    rng = np.random.default_rng(draw(seeds))
    b = GraphBuilder("convnet")
    hw, c = draw(st.integers(4, 7)), draw(st.integers(1, 3))
    h = b.add(Quantize(Fixed(6, 4, True)), b.input("img", Float(), (hw, hw, c)))
    wt = Fixed(draw(st.integers(2, 6)), 4, True)
    cout = draw(st.integers(1, 4))
    pad = draw(st.integers(0, 1))
    w = draw(weights(wt, (cout, 3, 3, c), rng=rng))
    h = b.add(Conv2d(w, None, (1, 1), (pad,) * 4), h)
    h = _requant_to(draw, b, h, 6)
    h = b.add(ReLU(), h)
    pool = MaxPool2d((2, 2)) if draw(st.booleans()) else AvgPool2d((2, 2))
    h = b.add(pool, h)
    h = b.add(Flatten(), h)
    h = _dense_layer(draw, b, h, rng, draw(st.integers(1, 5)))
    return b.build(h)


@st.composite
def branch_adds(draw) -> Graph:
    rng = np.random.default_rng(draw(seeds))
    b = GraphBuilder("branches")
    c = draw(st.integers(1, 6))
    q = b.add(Quantize(Fixed(8, 4, True)), b.input("x", Float(), (c,)))
    left = _requant_to(draw, b, _dense_layer(draw, b, q, rng, c), 8)
    right = q if draw(st.booleans()) else b.add(ReLU(), q)
    s = b.add(Add(), left, right)
    return b.build(s, left) if draw(st.booleans()) else b.build(s)


@st.composite
def gated_blocks(draw) -> Graph:
    """A gated conv block: conv -> requant -> relu, gated by the top-k of a saliency
    computed from the same input (global average pool -> dense -> requant -> relu)."""
    rng = np.random.default_rng(draw(seeds))
    b = GraphBuilder("gated")
    hw, c = draw(st.sampled_from([2, 4])), draw(st.integers(1, 3))
    q = b.add(Quantize(Fixed(6, 4, False)), b.input("img", Float(), (hw, hw, c)))
    cout = draw(st.integers(1, 6))
    w = draw(weights(Fixed(4, 3, True), (cout, 3, 3, c), rng=rng))
    h = b.add(Conv2d(w, None, (1, 1), (1, 1, 1, 1)), q)
    h = b.add(ReLU(), _requant_to(draw, b, h, 6))
    p = b.add(Flatten(), b.add(AvgPool2d((hw, hw)), q))
    sal = _dense_layer(draw, b, _requant_to(draw, b, p, 6), rng, cout)
    sal = b.add(ReLU(), _requant_to(draw, b, sal, draw(st.integers(2, 6))))
    k = draw(st.integers(1, cout))
    return b.build(b.add(ChannelGate(k, draw(st.booleans())), h, sal))


def graphs() -> st.SearchStrategy[Graph]:
    """Small verified graphs of the four shapes."""
    return st.one_of(dense_chains(), conv_chains(), branch_adds(), gated_blocks())


def graph_inputs(graph: Graph, n: int, seed: int) -> dict[str, np.ndarray]:
    """A batch of inputs for ``graph``: floats spanning each Quantize's range, raws otherwise."""
    rng = np.random.default_rng(seed)
    out = {}
    for v in graph.inputs:
        shape = (n, *v.type.shape)
        if isinstance(v.type.dtype, Float):
            out[v.name] = rng.normal(size=shape) * 4
        else:
            out[v.name] = random_raws(rng, v.type.dtype, shape)
    return out
