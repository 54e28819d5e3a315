"""Resource and cycle models, one per (op class, style), in a registry whose default raises.

A model turns a node (``NodeContext``: op, input/output types, implementation, device)
into structural *features* -- counts read off the RTL's own structure (adder bits,
register bits, soft-multiplier bits, comparator bits, ...) -- and exact counts
(DSP blocks, block RAMs, cycles). LUTs and FFs are a linear function of the features
whose coefficients are fitted per device family by ``pqflow.estimate.calibrate``
(``coefficients.json``); DSPs follow yosys's own mapping rule exactly (see
:func:`dsp_blocks`), and cycles are the RTL's.

Register a model with::

    @register(Dense, "unrolled")
    def _(ctx: NodeContext) -> Features: ...

``style`` is the node's implementation style (``unrolled``, ``folded``, ``sparse``) for
matrix ops and ``"unit"`` for the ops every style shares (``Requant``, ``ReLU``,
``MultiThreshold``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ..hwgen.design import Folded, Sparse, Unrolled
from ..ir import BinaryDense, Bipolar, Dense, Fixed, MultiThreshold, ReLU, Requant, bits_for
from .core import EstimateError, NodeContext, NodeEstimate
from .device import Device, Dsp

__all__ = [
    "COEFFICIENTS_PATH",
    "Features",
    "coefficients",
    "dsp_blocks",
    "mul_dsp",
    "node_model",
    "register",
    "registry",
]

COEFFICIENTS_PATH = Path(__file__).with_name("coefficients.json")


@dataclass
class Features:
    """What a model returns: linear features for LUTs and FFs, exact DSP/BRAM/cycles."""

    lut: dict[str, float] = field(default_factory=dict)
    ff: dict[str, float] = field(default_factory=dict)
    dsp: int = 0
    bram: int = 0
    uram: int = 0
    latency: int = 0
    ii: int = 1

    def add(self, kind: str, name: str, value: float) -> None:
        d = getattr(self, kind)
        d[name] = d.get(name, 0) + value


Model = Callable[[NodeContext], Features]

registry: dict[tuple[type, str], Model] = {}
"""The models by (op class, style)."""


def register(op_cls: type, style: str) -> Callable[[Model], Model]:
    def deco(fn: Model) -> Model:
        registry[(op_cls, style)] = fn
        return fn

    return deco


@cache
def _load_coefficients(path: str) -> dict:
    p = Path(path)
    if not p.exists():
        return {}
    return json.loads(p.read_text())["coefficients"]


def coefficients(family: str) -> dict[str, dict[str, float]]:
    """The fitted ``{"lut": {feature: coef}, "ff": {...}}`` of a device family."""
    c = _load_coefficients(str(COEFFICIENTS_PATH)).get(family)
    if c is None:
        raise EstimateError(
            f"no calibrated coefficients for family {family!r} in {COEFFICIENTS_PATH.name}; "
            "run python -m pqflow.estimate.calibrate"
        )
    return c


def node_features(ctx: NodeContext) -> Features:
    """The features of one node, from its registered model (EstimateError when none)."""
    op = ctx.node.op
    model = None
    for cls in type(op).__mro__:
        model = registry.get((cls, ctx.style))
        if model is not None:
            break
    if model is None:
        known = ", ".join(sorted(f"{c.__name__}/{s}" for c, s in registry))
        raise EstimateError(
            f"{ctx.node.describe()}: no resource model for {type(op).__name__} in style "
            f"{ctx.style!r}; models exist for {known}"
        )
    return model(ctx)


def apply(features: dict[str, float], coefs: dict[str, float]) -> float:
    return sum(coefs.get(k, 0.0) * v for k, v in features.items())


def node_model(ctx: NodeContext, coefs: dict | None = None) -> NodeEstimate:
    """A node's estimate: features from its model, LUT/FF through the family's coefficients."""
    f = node_features(ctx)
    c = coefs if coefs is not None else coefficients(ctx.device.family)
    return NodeEstimate(
        node=ctx.node.name,
        op=type(ctx.node.op).__name__,
        style=ctx.style,
        lut=max(apply(f.lut, c["lut"]), 0.0),
        ff=max(apply(f.ff, c["ff"]), 0.0),
        dsp=f.dsp,
        bram=f.bram,
        uram=f.uram,
        latency=f.latency,
        ii=f.ii,
        features={"lut": dict(f.lut), "ff": dict(f.ff)},
    )


# --- multipliers: yosys's mul2dsp rule --------------------------------------------------------


def dsp_blocks(dsp: Dsp, a: int, a_signed: bool, b: int, b_signed: bool, y: int) -> int:
    """DSP blocks yosys's ``mul2dsp`` spends on an ``a`` x ``b`` -> ``y``-bit ``$mul``.

    The wider operand becomes A; the product stays in LUTs (0) when A < a_min, B < b_min
    or Y < y_min. On a signed-only block an unsigned product gains a bit per operand.
    A product wider than the block is split into ceil(A/A_max) x ceil(B/B_max) blocks
    (each partial losing the sign bit of headroom on a signed-only block).
    """
    if a < b:
        a, b, a_signed, b_signed = b, a, b_signed, a_signed
    if a < dsp.a_min or b < dsp.b_min or y < dsp.y_min:
        return 0
    if dsp.signed_only and not a_signed and not b_signed:
        a, b = a + 1, b + 1
    head = 1 if dsp.signed_only else 0
    na = 1 if a <= dsp.a_width else 1 + -(-(a - dsp.a_width) // (dsp.a_width - head))
    nb = 1 if b <= dsp.b_width else 1 + -(-(b - dsp.b_width) // (dsp.b_width - head))
    return na * nb


def mul_dsp(device: Device, a: int, a_signed: bool, b: int, b_signed: bool, y: int) -> int:
    """DSP blocks for a product on ``device`` (0 without a DSP)."""
    if device.dsp is None or device.dsps == 0:
        return 0
    return dsp_blocks(device.dsp, a, a_signed, b, b_signed, y)


def _width(t) -> tuple[int, bool]:
    if isinstance(t, Bipolar):
        return 1, False
    return t.width, bool(t.signed)


# --- unrolled Dense: a mirror of UnrolledDense's trees on intervals ---------------------------


def _csd_digits(w: int) -> list[tuple[int, int]]:
    out, k = [], 0
    while w:
        if w & 1:
            d = 2 - (w & 3)
            out.append((k, d))
            w -= d
        w >>= 1
        k += 1
    return out


def _tz(v: int) -> int:
    return (v & -v).bit_length() - 1 if v else 64


class _N:
    """A partial sum on intervals: [lo, hi], sign, known trailing zero bits, the constant
    value (or None), where it came from (for DSP packing), the products it contains."""

    __slots__ = ("lo", "hi", "neg", "tz", "const", "dsp", "packed", "uses")

    def __init__(self, lo, hi, neg=False, tz=0, const=None, dsp=False, uses=()):
        self.lo, self.hi, self.neg, self.tz, self.const = lo, hi, neg, tz, const
        self.dsp, self.packed, self.uses = dsp, False, uses

    @property
    def bits(self) -> int:
        return bits_for(self.lo, self.hi)


def _combine(a: _N, b: _N, adders: list) -> _N:
    """As ``dense._combine``, recording the adder (width, effective bits, DSP-fed)."""
    if b.const is not None and a.const is None:
        a, b = b, a
    uses = a.uses + b.uses
    if a.const is not None:
        c = a.const
        if b.const is not None:
            return _N(c + b.const, c + b.const, const=c + b.const)
        if b.neg:
            n = _N(b.lo - c, b.hi - c, True, min(b.tz, _tz(c)), uses=uses)
        else:
            n = _N(b.lo + c, b.hi + c, False, min(b.tz, _tz(c)), uses=uses)
        adders.append((n.bits, max(n.bits - max(b.tz, _tz(c)), 0), b.dsp))
        n.packed = b.dsp
        return n
    if a.neg == b.neg:
        n = _N(a.lo + b.lo, a.hi + b.hi, a.neg, uses=uses)
    elif b.neg:
        n = _N(a.lo - b.hi, a.hi - b.lo, uses=uses)
    else:
        n = _N(b.lo - a.hi, b.hi - a.lo, uses=uses)
    n.tz = min(a.tz, b.tz)
    fed = a.dsp or b.dsp
    adders.append((n.bits, max(n.bits - max(a.tz, b.tz), 0), fed))
    n.packed = fed  # a DSP's post-adder: its output register is the DSP's PREG
    return n


@dataclass
class DenseTrees:
    """The structure of an ``UnrolledDense``: its adders, registers and products."""

    depth: int
    latency: int
    adders: list  # (width, effective bits, fed by a DSP product)
    registers: list  # (bits, fed by a DSP product)
    products: dict  # (input, odd mult) -> [natural width, needed width, uses]
    roots: list  # per output: bits of its final register (0 for a constant output)


def unrolled_trees(
    op: Dense, in_type: Fixed, levels_per_stage: int, products: str, dsp_keys=frozenset()
) -> DenseTrees:
    """Mirror ``UnrolledDense``'s adder trees on intervals (the same pairing and registers).

    ``dsp_keys`` are the products (input, odd factor) mapped to DSP blocks: an adder fed
    by one is the block's post-adder, a register after either is absorbed in the block."""
    lo, hi = in_type.min_raw, in_type.max_raw
    w_in = in_type.width
    bias = op.bias.data if op.bias is not None else [0] * op.weight.shape[0]
    trees = []
    prods: dict[tuple[int, int], list] = {}
    for row, b in zip(op.weight.data, bias, strict=True):
        leaves = []
        for i, w in enumerate(int(v) for v in row):
            if w == 0:
                continue
            terms = []
            if products == "mul":
                k = _tz(abs(w))
                terms.append((abs(w) >> k, k, w < 0))
            else:
                terms.extend((1, k, (w < 0) != (d < 0)) for k, d in _csd_digits(abs(w)))
            for m, k, neg in terms:
                c = m << k
                key = (i, m) if m > 1 else None
                leaf = _N(
                    lo * c, hi * c, neg, k, dsp=key in dsp_keys, uses=((key, k),) if key else ()
                )
                if key is not None:
                    prods.setdefault(key, [w_in + m.bit_length(), 0, 0])
                    prods[key][2] += 1
                leaves.append(leaf)
        if int(b):
            leaves.append(_N(int(b), int(b), const=int(b)))
        trees.append(leaves)
    counts = [len(t) for t in trees]
    depth = 1 + max((max(c, 1) - 1).bit_length() for c in counts)
    latency = -(-depth // levels_per_stage)
    adders: list = []
    registers: list = []
    first = True
    for level in range(1, depth + 1):
        if level > 1:
            trees = [
                [
                    _combine(t[j], t[j + 1], adders) if j + 1 < len(t) else t[j]
                    for j in range(0, len(t), 2)
                ]
                for t in trees
            ]
        if level % levels_per_stage == 0 or level == depth:
            for t in trees:
                for n in t:
                    if n.const is not None:
                        continue
                    registers.append((max(n.bits - n.tz, 1), n.dsp or n.packed))  # zero LSBs: no FF
                    if first:
                        for key, k in n.uses:
                            prods[key][1] = max(prods[key][1], n.bits - k)
                    n.dsp, n.packed, n.uses = False, False, ()
            first = False
    roots = [t[0].bits if t and t[0].const is None else 0 for t in trees]
    return DenseTrees(depth, latency, adders, registers, prods, roots)


def _dense_out(ctx: NodeContext) -> int:
    return ctx.out_type.size


@register(Dense, "unrolled")
def _unrolled_dense(ctx: NodeContext) -> Features:
    impl = ctx.impl
    assert isinstance(impl, Unrolled)
    op, it = ctx.node.op, ctx.in_type.dtype
    t = unrolled_trees(op, it, impl.levels_per_stage, impl.products)
    f = Features(latency=t.latency, ii=1)
    w_in, s_in = _width(it)
    dsp_keys = set()
    for key, (natural, needed, _) in t.products.items():
        y = min(natural, needed) if needed else natural
        m = key[1]
        n = mul_dsp(ctx.device, w_in, s_in, m.bit_length() + s_in, s_in, y)
        if n:
            f.dsp += n
            dsp_keys.add(key)
        else:
            f.add("lut", "softmul_bits", y * (bin(m).count("1") - 1))
    if dsp_keys:  # again, with the DSP-mapped products known (post-adders, PREGs)
        t = unrolled_trees(op, it, impl.levels_per_stage, impl.products, frozenset(dsp_keys))
    for _, eff, fed in t.adders:
        f.add("lut", "add_dsp_bits" if fed else "add_bits", eff)
    for bits, fed in t.registers:
        f.add("ff", "reg_dsp_bits" if fed else "reg_bits", bits)
    f.add("ff", "valid", t.latency)
    f.add("lut", "stages", t.latency)
    return f


# --- shared units --------------------------------------------------------------------------


def _channel(values: tuple[int, ...], k: int, c: int) -> int:
    return values[k % c if len(values) > 1 else 0]


def _element_widths(ctx: NodeContext) -> list[int] | None:
    """Per element, the bits the producer really drives (yosys drops repeated sign bits):
    the root registers of an unrolled Dense right before; None when unknown."""
    graph = ctx.design.graph
    src = ctx.node.inputs[0]
    if src not in {n.name for n in graph.nodes}:
        return None
    prev = graph.node(src)
    if not isinstance(prev.op, Dense):
        return None
    impl = ctx.design.impl(src)
    if not isinstance(impl, Unrolled):
        return None
    it = graph.types()[prev.inputs[0]].dtype
    t = unrolled_trees(prev.op, it, impl.levels_per_stage, impl.products)
    return [max(r, 1) for r in t.roots]


@register(Requant, "unit")
def _requant(ctx: NodeContext) -> Features:
    op: Requant = ctx.node.op
    it = ctx.in_type.dtype
    w_in, s_in = _width(it)
    shape = ctx.in_type.shape
    c, n = shape[-1], ctx.in_type.size
    registered = ctx.design.options.register_requant
    f = Features(latency=1 if registered else 0, ii=1)
    out_w = op.to.width
    widths = _element_widths(ctx)
    for k in range(n):
        mult, shift = _channel(op.mult, k, c), _channel(op.shift, k, c)
        if mult == 0:
            continue
        w_in = widths[k] if widths is not None else w_in
        plo, phi = sorted((it.min_raw * mult, it.max_raw * mult))
        odd = mult >> _tz(mult)  # yosys turns the trailing zeros of a constant into a shift
        if odd > 1:
            y = w_in + odd.bit_length()
            nd = mul_dsp(ctx.device, w_in, s_in, odd.bit_length(), False, y)
            if nd:
                f.dsp += nd
            else:
                f.add("lut", "rq_softmul_bits", y * (bin(odd).count("1") - 1))
        if shift and op.rounding != "floor":
            f.add("lut", "rq_round_bits", max(bits_for(plo >> shift, (phi >> shift) + 1), 1))
            f.add("lut", "rq_sticky_bits", max(shift - 1, 0) if op.rounding == "half_even" else 0)
        vlo, vhi = plo >> shift, (phi >> shift) + (shift > 0 and op.rounding != "floor")
        if op.overflow == "saturate":
            sides = (vhi > op.to.max_raw) + (vlo < op.to.min_raw)
            f.add("lut", "rq_sat_bits", sides * bits_for(vlo, vhi))
        if registered:
            f.add("ff", "reg_bits", out_w)
    if registered:
        f.add("ff", "valid", 1)
    return f


@register(ReLU, "unit")
def _relu(ctx: NodeContext) -> Features:
    it = ctx.in_type.dtype
    f = Features(latency=0, ii=1)
    if it.signed:
        f.add("lut", "relu_bits", ctx.in_type.size * max(it.width - 1, 1))
    return f


@register(MultiThreshold, "unit")
def _threshold(ctx: NodeContext) -> Features:
    op: MultiThreshold = ctx.node.op
    it = ctx.in_type.dtype
    lo, hi = it.min_raw, it.max_raw
    t = op.thresholds.data
    c, n = ctx.in_type.shape[-1], ctx.in_type.size
    registered = ctx.design.options.register_threshold
    out_w, _ = _width(op.out)
    f = Features(latency=1 if registered else 0, ii=1)
    for k in range(n):
        row = t[k % c] if t.shape[0] > 1 else t[0]
        live = sum(1 for th in (int(v) for v in row) if lo < th <= hi)
        f.add("lut", "cmp_bits", live * it.width)
        if live > 1:
            f.add("lut", "count_bits", (live - 1) * out_w)
        if registered:
            f.add("ff", "reg_bits", out_w)
    if registered:
        f.add("ff", "valid", 1)
    return f


# --- folded and sparse matrix units ---------------------------------------------------------


def _rom(device: Device, depth: int, width: int) -> tuple[int, float]:
    """(block RAMs, LUT-ROM bits) of a ``depth`` x ``width`` ROM: yosys maps a ROM to block
    RAM when it is at least 1/4 of a block (else LUTs)."""
    ram = device.bram
    bits = depth * width
    if ram is None or bits * 4 < ram.bits:
        return 0, float(bits)
    # a block holds ram.bits at widths up to max_width; wider words use blocks side by side
    per_block_width = max(1, min(ram.max_width, ram.bits // max(depth, 1)))
    cols = -(-width // per_block_width)
    rows = -(-depth // max(ram.bits // min(width, ram.max_width), 1))
    return max(cols * rows, 1), 0.0


@register(Dense, "folded")
@register(BinaryDense, "folded")
def _folded(ctx: NodeContext) -> Features:
    impl = ctx.impl
    assert isinstance(impl, Folded)
    op = ctx.node.op
    mh, mw = op.weight.shape
    pe, simd = impl.pe, impl.simd
    cycles = (mh // pe) * (mw // simd)
    f = Features(latency=cycles + 1, ii=cycles)
    binary = isinstance(op, BinaryDense)
    wb = 1 if binary else op.weight.dtype.width
    acc_w, _ = _width(ctx.out_type.dtype)
    x_w, x_s = _width(ctx.in_type.dtype)
    if binary:
        f.add("lut", "xnor_bits", pe * simd)
    else:
        w_s = bool(op.weight.dtype.signed)
        y = min(wb + x_w, acc_w)
        nd = mul_dsp(ctx.device, x_w, x_s, wb, w_s, y)
        if nd:
            f.dsp += pe * simd * nd
        else:
            f.add("lut", "mac_bits", pe * simd * wb * x_w)
    f.add("lut", "add_bits", pe * simd * acc_w)
    bram, rom_bits = _rom(ctx.device, cycles, pe * simd * wb)
    f.bram += bram
    f.add("lut", "rom_bits", rom_bits)
    f.add("lut", "mux_bits", mw * x_w + mh * acc_w)
    f.add("ff", "reg_bits", mw * x_w + 2 * mh * acc_w + pe * acc_w)
    f.add("ff", "valid", 3 + 2 * max(cycles - 1, 1).bit_length())
    return f


@register(Dense, "sparse")
def _sparse(ctx: NodeContext) -> Features:
    impl = ctx.impl
    assert isinstance(impl, Sparse)
    from ..hwgen.amaranth.sparse import compress

    op = ctx.node.op
    sw = compress(op.weight.data, impl.pe)
    worst = max((sum(c) for c in sw.counts), default=0)
    cycles = 1 + worst + (worst > 0)
    f = Features(latency=cycles + 1, ii=cycles)
    acc_w, _ = _width(ctx.out_type.dtype)
    x_w, x_s = _width(ctx.in_type.dtype)
    wb = op.weight.dtype.width
    rb = max(1, (sw.local_rows - 1).bit_length())
    for p in range(sw.pe):
        nnz = len(sw.values[p])
        if not nnz:
            continue
        nd = mul_dsp(ctx.device, x_w, x_s, wb, bool(op.weight.dtype.signed), min(wb + x_w, acc_w))
        if nd:
            f.dsp += nd
        else:
            f.add("lut", "mac_bits", wb * x_w)
        bram, rom_bits = _rom(ctx.device, nnz, wb + rb)
        f.bram += bram
        f.add("lut", "rom_bits", rom_bits)
        f.add("lut", "add_bits", acc_w)
        f.add("lut", "mux_bits", sw.local_rows * acc_w + sw.n_in * x_w)
        f.add("ff", "reg_bits", sw.n_in + x_w + 2 * max(1, (sw.n_in - 1).bit_length()))
    f.add("ff", "reg_bits", (ctx.in_type.size * x_w) + 2 * sw.n_out * acc_w)
    f.add("ff", "valid", 2)
    return f


def expected_sparse_cycles(ctx: NodeContext, x_raws):
    """Cycles per input vector of a sparse node on data (``SparseDense.expected_cycles``)."""
    from ..hwgen.amaranth.sparse import expected_cycles

    return expected_cycles(ctx.node.op, x_raws, ctx.impl.pe)
