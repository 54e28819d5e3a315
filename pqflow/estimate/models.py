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

import numpy as np

from ..hwgen.design import Folded, Sparse, Unrolled
from ..ir import (
    Add,
    AvgPool2d,
    BinaryConv2d,
    BinaryDense,
    Bipolar,
    Conv2d,
    Dense,
    Fixed,
    Flatten,
    MaxPool2d,
    MultiThreshold,
    ReLU,
    Requant,
    Reshape,
    bits_for,
)
from .core import EstimateError, NodeContext, NodeEstimate
from .device import Device, Dsp
from .liveness import _bias

__all__ = [
    "COEFFICIENTS_PATH",
    "SOFTMUL_PATH",
    "Features",
    "coefficient_key",
    "coefficients",
    "dsp_blocks",
    "mul_dsp",
    "node_model",
    "register",
    "registry",
    "softmul_key",
    "softmul_luts",
]

COEFFICIENTS_PATH = Path(__file__).with_name("coefficients.json")
SOFTMUL_PATH = Path(__file__).with_name("softmul.json")


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
    schedule: object = None
    """The unit's per-sample beat ``Schedule`` on a pixel stream (None: one beat)."""
    pace: float | None = None
    """Fewest cycles between two output beats (None: cycles per sample / output beats)."""

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


@cache
def _load_softmul(path: str) -> dict:
    p = Path(path)
    if not p.exists():
        raise EstimateError(
            f"no soft-product table {p.name}; run python -m pqflow.estimate.calibrate --softmul"
        )
    return json.loads(p.read_text())["luts"]


def softmul_key(width: int, signed: bool, odd: int) -> str:
    """The ``softmul.json`` key of ``x * odd`` for a ``width``-bit ``x``: ``"5sx3"``."""
    return f"{width}{'s' if signed else 'u'}x{odd}"


def softmul_luts(device: Device, width: int, signed: bool, odd: int) -> float | None:
    """LUTs yosys spends on the constant product ``x * odd`` in logic (``x`` of ``width``
    bits), measured by synthesizing it alone (``softmul.json``, written by
    ``python -m pqflow.estimate.calibrate --softmul``) for every product the family's DSP
    rule leaves in logic at its full width. A product only the bits synthesis keeps make
    soft (a wider ``x * odd``) is not in the table: costed as ``popcount(odd) - 1`` adders
    of its width (no measured product takes more than 1.25 times that). None for a family
    without a table (the iCE40s: every product is in logic there, too many to tabulate)."""
    if width <= 1:
        return 0.0  # a 1-bit operand times a constant is wiring
    table = _load_softmul(str(SOFTMUL_PATH)).get(device.family)
    if table is None:
        return None
    got = table.get(softmul_key(width, signed, odd))
    return float(got) if got is not None else (width + odd.bit_length()) * (odd.bit_count() - 1)


def coefficient_key(device: Device) -> str:
    """The coefficient set a device uses: its family, or ``family:arch`` where yosys maps
    the architecture differently (``xilinx:xcup``: UltraScale+, no DSP packing)."""
    return f"{device.family}:{device.yosys_arch}" if device.yosys_arch == "xcup" else device.family


def coefficients(family: str) -> dict[str, dict[str, float]]:
    """The fitted ``{"lut": {feature: coef}, "ff": {...}}`` of a device family (or of a
    ``coefficient_key``; a key without its own set falls back to its family's)."""
    table = _load_coefficients(str(COEFFICIENTS_PATH))
    c = table.get(family) or table.get(family.split(":")[0])
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
    c = coefs if coefs is not None else coefficients(coefficient_key(ctx.device))
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
        inputs=ctx.reads or tuple(ctx.node.inputs),
        schedule=f.schedule if f.schedule is not None else _elementwise(ctx, f),
        pace=f.pace,
    )


def _elementwise(ctx: NodeContext, f: Features):
    """The schedule of a unit acting on each beat alone (None for one-beat samples)."""
    from ..hwgen.amaranth.schedule import elementwise

    beats, _ = _beats(ctx.out_type)
    if beats == 1:
        return None
    return elementwise(beats, f.latency, max(f.ii // beats, 1))


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
    value (or None), a structural signature (equal signatures are equal bits: yosys
    merges their registers), the products it holds (for product widths), and whether it
    is a DSP block's output that yosys can pack further: ``solo`` (a DSP product used
    once, unshifted: its post-adder or its P register) or ``preg`` (a DSP post-adder's
    output: its P register)."""

    __slots__ = (
        "lo",
        "hi",
        "neg",
        "tz",
        "const",
        "sig",
        "uses",
        "solo",
        "preg",
        "chain",
        "feed",
        "dsp",
        "mono",
        "has_solo",
        "summed",
        "in_dsp",
    )

    def __init__(self, lo, hi, neg=False, tz=0, const=None, sig=None, uses=(), solo=False):
        self.lo, self.hi, self.neg, self.tz, self.const = lo, hi, neg, tz, const
        self.sig, self.uses, self.solo, self.preg = sig, uses, solo, False
        self.chain = None  # the registers holding this value unchanged: [key, bits, length]
        self.feed = 0  # FF bits of the register a constant addition into this node reads
        self.dsp = False  # a product computed in a DSP block (not yet registered)
        # a sum of products all of one sign, one of them ``solo``: yosys's alumacc makes it
        # one $macc, whose DSP chain ends in the P register of a solo product's block
        self.mono, self.has_solo = const is None, solo
        self.summed = False  # an adder's output not yet registered (one $macc with its users)
        self.in_dsp = False  # ... holding a DSP product

    @property
    def bits(self) -> int:
        return bits_for(self.lo, self.hi)


def _reg_key(sig: tuple) -> tuple:
    """What a register of a node with signature ``sig`` stores, up to its constant zero LSBs:
    a shifted leaf stores the same bits as the unshifted one."""
    if sig[0] == "x":
        return sig[:3]
    if sig[0] == "r":
        return ("r", sig[1], _reg_key(sig[2]))
    return sig


def _combine(a: _N, b: _N, adders: list) -> _N:
    """As ``dense._combine``, recording the adder ``(width, effective bits, kind)``: an
    addition (not a subtraction) of a ``solo`` DSP product is the block's post-adder
    (``"dsp"``); a sum holding a DSP product goes into the blocks' cascade (``"fed"``);
    an adder reading another adder's unregistered output is part of one ``$macc``
    (yosys's ``alumacc``), which ``maccmap`` builds as a carry-save tree (``"csa"``);
    else a carry-chain adder (``""``)."""
    if b.const is not None and a.const is None:
        a, b = b, a
    uses = a.uses + b.uses
    if a.const is not None:
        c = a.const
        if b.const is not None:
            return _N(c + b.const, c + b.const, const=c + b.const, sig=("c", c + b.const))
        if b.neg:
            n = _N(b.lo - c, b.hi - c, True, min(b.tz, _tz(c)), sig=("-c", b.sig, c), uses=uses)
        else:
            n = _N(b.lo + c, b.hi + c, False, min(b.tz, _tz(c)), sig=("+c", b.sig, c), uses=uses)
        packed = b.solo and not b.neg
        n.in_dsp = b.dsp or b.in_dsp
        kind = "dsp" if packed else "fed" if n.in_dsp else "csa" if b.summed else ""
        n.summed = True
        adders.append((n.bits, max(n.bits - max(b.tz, _tz(c)), 0), kind))
        n.preg = packed
        n.mono, n.has_solo = b.mono, b.has_solo
        if _fresh_register(b):
            n.feed = b.chain[1]  # a register + a constant: a DSP's A register and pre-adder
        return n
    if a.neg == b.neg:
        sa, sb = sorted((a.sig, b.sig), key=repr)
        n = _N(a.lo + b.lo, a.hi + b.hi, a.neg, sig=("+", sa, sb), uses=uses)
        packed = a.solo or b.solo
    elif b.neg:
        n = _N(a.lo - b.hi, a.hi - b.lo, sig=("-", a.sig, b.sig), uses=uses)
        packed = False
    else:
        n = _N(b.lo - a.hi, b.hi - a.lo, sig=("-", b.sig, a.sig), uses=uses)
        packed = False
    n.tz = min(a.tz, b.tz)
    n.mono = a.mono and b.mono and a.neg == b.neg
    n.has_solo = a.has_solo or b.has_solo
    # registers added here: a DSP48E1 multiplier reading the sum takes the adder as its
    # pre-adder and these registers as its A and D registers
    n.feed = sum(x.chain[1] for x in (a, b) if _fresh_register(x))
    n.in_dsp = a.dsp or b.dsp or a.in_dsp or b.in_dsp
    kind = "dsp" if packed else "fed" if n.in_dsp else "csa" if a.summed or b.summed else ""
    n.summed = True
    adders.append((n.bits, max(n.bits - max(a.tz, b.tz), 0), kind))
    n.preg = packed
    return n


def _root_regs(n: _N) -> int:
    """FF bits a DSP48E1 multiplier reading output register ``n`` alone takes in: a
    two-register delay line as its two A registers (AREG=2); else the register and the
    registers its last adder reads (A/D registers of the pre-adder). A longer delay line is
    an SRL already (``delay_lines``)."""
    _, bits, length = n.chain
    if length >= 3:
        return 0
    return 2 * bits if length == 2 else bits + n.feed


def _fresh_register(n: _N) -> bool:
    """A register (FFs, not a DSP's P register) read as it is."""
    return n.chain is not None and n.sig[0] == "r" and not n.sig[3]


@dataclass
class DenseTrees:
    """The structure of an ``UnrolledDense``: its adders, registers and products.

    ``adders``: ``(width, effective bits, kind)`` per adder (kind ``"dsp"``: a DSP's
    post-adder, ``"fed"``: an operand is a DSP product, ``""``: logic only); ``registers``:
    ``(bits, absorbed in a DSP)`` per distinct register (registers of equal value at one
    stage are counted once, as yosys merges them; constant low bits are left out);
    ``roots``: per output, the bits of its final register (0 for a constant output);
    ``root_regs``: per output, the FF bits a DSP multiplier reading the output alone takes
    in (its A register, and with a constant addition before it, the pre-adder's register
    and the A register before that); 0 when the output is no FF register;
    ``delay_lines``: ``(bits, length)`` of each value held unchanged through ``length``
    consecutive register stages (yosys makes one of 3 or more a shift register, SRL)."""

    depth: int
    latency: int
    adders: list
    registers: list
    products: dict  # (input, odd mult) -> [natural width, needed width, uses]
    roots: list
    root_regs: list = field(default_factory=list)
    delay_lines: list = field(default_factory=list)
    root_ranges: list = field(default_factory=list)
    """Per output, the range its final register can hold as declared (its full width,
    what logic after it can assume), negated when the tree computes ``-S`` (every term
    negative); None for a constant output."""


def unrolled_trees(
    op: Dense,
    in_type: Fixed,
    levels_per_stage: int,
    products: str,
    dsp_keys=frozenset(),
    weight=None,
    bias=None,
) -> DenseTrees:
    """Mirror ``UnrolledDense``'s adder trees on intervals (the same pairing and registers).

    ``dsp_keys`` are the products (input, odd factor) mapped to DSP blocks. As yosys's
    ``xilinx_dsp`` packs them: a product used once and unshifted takes the addition it
    feeds as its post-adder, and the register right after the product or the post-adder
    is the block's P register (no FFs). ``weight``/``bias`` replace the op's (the
    effective matrix synthesis leaves, :func:`~pqflow.estimate.liveness.effective_dense`)."""
    lo, hi = in_type.min_raw, in_type.max_raw
    w_in = in_type.width
    weight = op.weight.data if weight is None else weight
    if bias is None:
        bias = op.bias.data if op.bias is not None else [0] * op.weight.shape[0]
    rows = []
    prods: dict[tuple[int, int], list] = {}
    for row, b in zip(weight, bias, strict=True):
        terms = []
        for i, w in enumerate(int(v) for v in row):
            if w == 0:
                continue
            if products == "mul":
                k = _tz(abs(w))
                terms.append((i, abs(w) >> k, k, w < 0))
            else:
                terms.extend((i, 1, k, (w < 0) != (d < 0)) for k, d in _csd_digits(abs(w)))
        rows.append((terms, int(b)))
        for i, m, _, _ in terms:
            if m > 1:
                prods.setdefault((i, m), [w_in + m.bit_length(), 0, 0])
                prods[(i, m)][2] += 1
    trees = []
    for terms, b in rows:
        leaves = []
        for i, m, k, neg in terms:
            c = m << k
            key = (i, m) if m > 1 else None
            solo = key in dsp_keys and k == 0 and prods[key][2] == 1
            leaves.append(
                _N(
                    lo * c,
                    hi * c,
                    neg,
                    k,
                    sig=("x", i, m, k),
                    uses=((key, k),) if key else (),
                    solo=solo,
                )
            )
            leaves[-1].dsp = key in dsp_keys
        if b:
            leaves.append(_N(b, b, const=b, sig=("c", b)))
        trees.append(leaves)
    counts = [len(t) for t in trees]
    depth = 1 + max((max(c, 1) - 1).bit_length() for c in counts)
    latency = -(-depth // levels_per_stage)
    adders: list = []
    registers: list = []
    chains: list = []
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
            seen: dict = {}
            for t in trees:
                for n in t:
                    if n.const is not None:
                        continue
                    absorbed = (
                        n.solo  # a solo product: its block's P register
                        or n.preg  # a DSP post-adder's output: its P register
                        or (n.mono and n.has_solo)  # a one-sign $macc chain's P register
                        or (n.dsp and n.sig[0] == "x")  # a DSP product as it is: M register
                    )
                    key = _reg_key(n.sig)
                    bits = max(n.bits - n.tz, 1)  # constant zero LSBs: no FF
                    if key not in seen:
                        registers.append((bits, absorbed))
                        if n.sig[0] == "r" and n.chain is not None:  # unchanged: a delay line
                            n.chain[2] += 1
                            seen[key] = n.chain
                        else:
                            seen[key] = [key, bits, 1]
                            chains.append(seen[key])
                    if first:
                        for pkey, k in n.uses:
                            prods[pkey][1] = max(prods[pkey][1], n.bits - k)
                    n.chain = seen[key]
                    n.sig = ("r", level, n.sig, absorbed)
                    n.solo = n.preg = n.dsp = n.mono = n.has_solo = n.summed = n.in_dsp = False
                    n.uses = ()
            first = False
    roots = [t[0].bits if t and t[0].const is None else 0 for t in trees]
    # a negated output (-reg) puts a negation between the register and a DSP multiplier
    # reading it: the register stays in FFs
    root_regs = [
        _root_regs(t[0]) if t and t[0].const is None and not t[0].sig[3] and not t[0].neg else 0
        for t in trees
    ]
    delay_lines = [(bits, length) for _, bits, length in chains if length > 1]
    ranges = [_declared_range(t[0]) if t and t[0].const is None else None for t in trees]
    return DenseTrees(
        depth, latency, adders, registers, prods, roots, root_regs, delay_lines, ranges
    )


def _declared_range(n: _N) -> tuple[int, int]:
    """The values a register of node ``n`` can hold (``fitting_shape``'s full range), as
    the output it drives: ``-reg`` for a negated tree."""
    w = n.bits
    lo, hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if n.lo < 0 else (0, (1 << w) - 1)
    return (-hi, -lo) if n.neg else (lo, hi)


def _dsp_keys(ctx: NodeContext, t: DenseTrees) -> tuple[set, int, dict[str, float]]:
    """The DSP-mapped products of an unrolled Dense, its DSP blocks and soft-multiplier
    features: on a family with a measured table (:func:`softmul_luts`; yosys and ABC build
    ``x * m`` nothing like ``popcount(m) - 1`` adders) the product's LUTs times the share
    of its bits synthesis keeps (``softmul_luts``), elsewhere its width times the set bits
    of ``m`` less one (``softmul_bits``). A product several rows use is its own feature
    (``softmul_shared_*``): yosys builds it once as adders of its own or again in each
    row's sum, so its coefficient is fitted on its own."""
    w_in, s_in = _width(ctx.in_type.dtype)
    keys, dsp, soft = set(), 0, {}
    for key, (natural, needed, uses) in t.products.items():
        y = min(natural, needed) if needed else natural
        m = key[1]
        n = mul_dsp(ctx.device, w_in, s_in, m.bit_length() + s_in, s_in, y)
        if n:
            dsp += n
            keys.add(key)
            continue
        shared = "_shared" if uses > 1 else ""
        luts = softmul_luts(ctx.device, w_in, s_in, m)
        if luts is not None:
            feature, value = f"softmul{shared}_luts", luts * min(y / natural, 1.0)
        else:
            feature, value = f"softmul{shared}_bits", y * (m.bit_count() - 1)
        soft[feature] = soft.get(feature, 0.0) + value
    return keys, dsp, soft


def _packs_registers(device: Device) -> bool:
    """yosys packs the adders and registers around a product into the DSP block
    (``xilinx_dsp``): measured for the 7-series DSP48E1; with ``-family xcup`` (DSP48E2)
    yosys 0.70 maps the multiplier alone."""
    return device.family == "xilinx" and device.dsp is not None and device.dsp.name == "DSP48E1"


def _mirror(ctx: NodeContext) -> tuple[DenseTrees, set, int, dict[str, float]]:
    """The trees of an unrolled Dense node with its DSP products, DSP blocks and soft bits."""
    impl, it = ctx.impl, ctx.in_type.dtype
    w, b = _effective(ctx, ctx.node)
    args = (ctx.node.op, it, impl.levels_per_stage, impl.products)
    t = unrolled_trees(*args, weight=w, bias=b)
    keys, dsp, soft = _dsp_keys(ctx, t)
    if keys and _packs_registers(ctx.device):
        t = unrolled_trees(*args, frozenset(keys), weight=w, bias=b)
    return t, keys, dsp, soft


def _effective(ctx: NodeContext, node):
    """An unrolled Dense node's weights and bias as synthesis leaves them."""
    from .liveness import effective_dense

    return effective_dense(node.op, ctx.facts_of(node.inputs[0]), ctx.facts_of(node.name))


@register(Dense, "unrolled")
def _unrolled_dense(ctx: NodeContext) -> Features:
    impl = ctx.impl
    assert isinstance(impl, Unrolled)
    t, _, dsp, soft = _mirror(ctx)
    f = Features(latency=t.latency, ii=1, dsp=dsp)
    for feature, bits in soft.items():
        f.add("lut", feature, bits)
    names = {"dsp": "add_dsp_bits", "fed": "add_fed_bits", "csa": "add_csa_bits", "": "add_bits"}
    for _, eff, kind in t.adders:  # see _combine
        f.add("lut", names[kind], eff)
    absorbed_by_next = _areg_elements(ctx, t)
    for bits, absorbed in t.registers:
        if not absorbed:
            f.add("ff", "reg_bits", bits)
    for k in absorbed_by_next:
        f.add("ff", "reg_bits", -t.root_regs[k])
    if _packs_registers(ctx.device) or ctx.device.family == "xilinx":
        for bits, length in t.delay_lines:
            if length >= 3:  # xilinx_srl: a chain of 3+ FFs is one SRL LUT per bit
                f.add("ff", "reg_bits", -bits * length)
                f.add("lut", "srl_bits", bits)
    f.add("ff", "valid", t.latency)
    f.add("lut", "stages", t.latency)
    return f


def _areg_elements(ctx: NodeContext, t: DenseTrees) -> list[int]:
    """Outputs of an unrolled Dense whose final register (FFs, not a DSP's P register) a
    DSP multiplier of a following ``Requant`` reads alone (see ``_absorbed_by_requant``)."""
    regs = [k for k, r in enumerate(t.root_regs) if r]
    hit = _absorbed_by_requant(ctx, [max(b, 1) for b in t.roots])
    return [k for k in hit if k in regs]


def _absorbed_by_requant(ctx: NodeContext, widths: list[int]) -> list[int]:
    """Output elements whose output register yosys moves into a DSP48E1 of the next unit
    (its A/B input register): those of a following ``Requant`` whose product ``x * mult``
    maps to a DSP (``widths``: the bits of each element's register)."""
    if not _packs_registers(ctx.device):
        return []
    users = [n for n in ctx.design.graph.nodes if ctx.node.name in n.inputs]
    if len(users) != 1 or not isinstance(users[0].op, Requant):
        return []
    op: Requant = users[0].op
    signed = bool(ctx.out_type.dtype.signed)
    c = ctx.out_type.shape[-1]
    return [
        k
        for k, w in enumerate(widths)
        if _requant_dsp(ctx.device, w, signed, _channel(op.mult, k, c))
    ]


def _rom_columns(words: list[int], width: int) -> int:
    """The distinct, non-constant bit columns of a ROM (yosys keeps one read-register FF
    and one LUT function per such column)."""
    cols = set()
    for b in range(width):
        col = tuple((w >> b) & 1 for w in words)
        if any(col) and not all(col):
            cols.add(col)
    return len(cols)


def _requant_dsp(device: Device, w_in: int, s_in: bool, mult: int) -> int:
    """DSP blocks of one Requant element's product ``x * mult`` (``x`` of ``w_in`` bits)."""
    if mult == 0:
        return 0
    odd = mult >> _tz(mult)  # yosys turns the trailing zeros of a constant into a shift
    if odd <= 1:
        return 0
    return mul_dsp(device, w_in, s_in, odd.bit_length(), False, w_in + odd.bit_length())


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
    w, b = _effective(ctx, prev)
    t = unrolled_trees(prev.op, it, impl.levels_per_stage, impl.products, weight=w, bias=b)
    return [max(r, 1) for r in t.roots]


@register(Requant, "unit")
def _requant(ctx: NodeContext) -> Features:
    op: Requant = ctx.node.op
    it = ctx.in_type.dtype
    w_in, s_in = _width(it)
    shape = ctx.in_type.shape
    beats, n = _beats(ctx.in_type)  # one pixel (or the whole vector) per beat
    c = shape[-1]
    registered = ctx.design.options.register_requant
    f = Features(latency=1 if registered else 0, ii=beats)
    out_w = op.to.width
    widths = _element_widths(ctx)
    for k in range(n):
        state = _element_state(ctx, k, beats)
        if state == "gone":
            continue
        if state == "registers":  # ABC folds its logic to a constant; the FFs stay
            if registered:
                f.add("ff", "reg_bits", out_w)
            continue
        mult, shift = _channel(op.mult, k, c), _channel(op.shift, k, c)
        if mult == 0:
            continue
        w_in = widths[k] if widths is not None else w_in
        plo, phi = sorted((it.min_raw * mult, it.max_raw * mult))
        odd = mult >> _tz(mult)  # yosys turns the trailing zeros of a constant into a shift
        if odd > 1:
            nd = _requant_dsp(ctx.device, w_in, s_in, mult)
            if nd:
                f.dsp += nd
            else:
                y = w_in + odd.bit_length()
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
    beats, n = _beats(ctx.in_type)
    f = Features(latency=0, ii=beats)
    if it.signed:
        kept = sum(_element_state(ctx, k, beats) == "logic" for k in range(n))
        f.add("lut", "relu_bits", kept * max(it.width - 1, 1))
    return f


def _element_state(ctx: NodeContext, k: int, beats: int) -> str:
    """What synthesis leaves of element ``k`` of an elementwise unit (``liveness``):
    ``"gone"`` (constant or unread), ``"registers"`` (ABC makes its logic a constant, its
    output register stays) or ``"logic"``. Pixel streams (``beats`` > 1): ``"logic"``."""
    facts = ctx.facts_of(ctx.node.name)
    if facts is None or beats > 1:
        return "logic"
    if k in facts.const or not facts.is_live(k):
        return "gone"
    return "registers" if k in facts.abc_const else "logic"


@register(MultiThreshold, "unit")
def _threshold(ctx: NodeContext) -> Features:
    op: MultiThreshold = ctx.node.op
    it = ctx.in_type.dtype
    lo, hi = it.min_raw, it.max_raw
    t = op.thresholds.data
    beats, n = _beats(ctx.in_type)
    c = ctx.in_type.shape[-1]
    registered = ctx.design.options.register_threshold
    out_w, _ = _width(op.out)
    f = Features(latency=1 if registered else 0, ii=beats)
    for k in range(n):
        state = _element_state(ctx, k, beats)
        if state == "gone":
            continue
        if state == "registers":
            if registered:
                f.add("ff", "reg_bits", out_w)
            continue
        row = t[k % c] if t.shape[0] > 1 else t[0]
        ths = [th for th in (int(v) for v in row) if lo < th <= hi]
        if it.width <= ctx.device.lut_inputs:  # a ROM of the input: a LUT per output bit
            words = [sum(x >= th for th in ths) for x in range(lo, hi + 1)]
            f.add("lut", "rom_luts", _rom_luts(ctx.device, len(words), _rom_columns(words, out_w)))
        else:
            f.add("lut", "cmp_bits", len(ths) * it.width)
            if len(ths) > 1:
                f.add("lut", "count_bits", (len(ths) - 1) * out_w)
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
    return _blocks(ram, depth, width), 0.0


def _blocks(ram, depth: int, width: int) -> int:
    """Block RAMs for a ``depth`` x ``width`` memory: a block holds ram.bits at widths up
    to max_width; wider words use blocks side by side."""
    per_block_width = max(1, min(ram.max_width, ram.bits // max(depth, 1)))
    cols = -(-width // per_block_width)
    rows = -(-depth // max(ram.bits // min(width, ram.max_width), 1))
    return max(cols * rows, 1)


ICE40_BRAM_COST = 64
"""yosys's ``memory_libmap`` cost of one iCE40 block RAM (``ice40/brams.txt``), against
one per bit for a RAM in flip-flops: a RAM goes to block RAM when it has more bits than
its blocks cost."""


def _ram(device: Device, depth: int, width: int) -> int:
    """Block RAMs yosys spends on a ``depth`` x ``width`` RAM (0: LUT RAM or flip-flops)."""
    ram = device.bram
    if ram is None:
        return 0
    if device.family == "ice40":  # no LUT RAM: block RAM once it is cheaper than FFs
        n = _blocks(ram, depth, width)
        return n if depth * width > ICE40_BRAM_COST * n else 0
    return _rom(device, depth, width)[0]


def _bits(n: int) -> int:
    """Width of an Amaranth ``Signal(range(n))``."""
    return max(n - 1, 0).bit_length()


def _rom_luts(device: Device, depth: int, width: int) -> float:
    """LUTs of a ``depth`` x ``width`` ROM in logic: a LUT is a 2**k x 1 ROM."""
    return float(width * -(-depth // (1 << device.lut_inputs)))


@register(Dense, "folded")
@register(BinaryDense, "folded")
def _folded(ctx: NodeContext) -> Features:
    """``FoldedDense``: the input buffer (rotating by SIMD), the PE accumulators, the
    finished-fold and output registers, the weight ROM (+ biases) read one row a cycle."""
    impl = ctx.impl
    assert isinstance(impl, Folded)
    op = ctx.node.op
    mh, mw = op.weight.shape
    pe, simd = impl.pe, impl.simd
    nfs, sfs = mh // pe, mw // simd
    cycles = nfs * sfs
    f = Features(latency=cycles + 1, ii=cycles)
    binary = isinstance(op, BinaryDense)
    wb = 1 if binary else op.weight.dtype.width
    acc_w, _ = _width(ctx.out_type.dtype)
    x_w, x_s = _width(ctx.in_type.dtype)
    has_bias = not binary and op.bias is not None
    rom_w = pe * simd * wb + (pe * acc_w if has_bias else 0)
    nd = 0
    if binary:
        f.add("lut", "xnor_bits", pe * simd)
        f.add("lut", "fold_add_bits", pe * simd * _bits(mw + 1))
    else:
        w_s = bool(op.weight.dtype.signed)
        nd = mul_dsp(ctx.device, x_w, x_s, wb, w_s, min(wb + x_w, acc_w))
        if nd:
            f.dsp += pe * simd * nd
        else:
            f.add("lut", "mac_bits", pe * simd * wb * x_w)
        # the SIMD products' sum and the accumulation: DSP post-adders (cascaded) on a
        # DSP48E1, carry-chain adders otherwise. With one fold per row (SIMD = inputs) there
        # is no accumulation: bias + products is one cascade of DSP post-adders, no LUTs
        packed = nd and _packs_registers(ctx.device)
        if not (packed and sfs == 1):
            f.add("lut", "add_dsp_bits" if packed else "fold_add_bits", pe * simd * acc_w)
    bram, _ = _rom(ctx.device, cycles, rom_w)
    f.bram += bram
    if not bram:  # a ROM in logic and its read register (constant or repeated columns merge)
        from ..hwgen.amaranth.folded import FoldedDense

        unit = FoldedDense(op, ctx.in_type.dtype, ctx.out_type.dtype, pe=pe, simd=simd)
        unit._MustUse__silence = True
        live = _rom_columns(unit.rom_rows(), rom_w)
        f.add("lut", "rom_luts", _rom_luts(ctx.device, cycles, live))
        weights_in_dsp = pe * simd * wb if nd and _packs_registers(ctx.device) else 0
        f.add("ff", "fold_reg_bits", max(live - weights_in_dsp, 0))  # a DSP takes its B reg
    if sfs > 1:  # the input buffer rotates by SIMD (one fold: it only loads, an FF enable)
        # load or rotate is a 2:1 mux per bit before an enabled FF: one 6-input LUT each,
        # counted (yosys maps exactly MW * x_w on both Xilinx families); fitted on the iCE40
        xilinx = ctx.device.family == "xilinx"
        f.add("lut", "mux_luts" if xilinx else "fold_mux_bits", mw * x_w)
    acc = pe * (_bits(mw + 1) if binary else acc_w) if sfs > 1 else 0  # one fold: no acc
    f.add("ff", "fold_reg_bits", mw * x_w + mh * acc_w + (mh - pe) * acc_w + acc)
    f.add("ff", "fold_reg_bits", -acc_w * len(_absorbed_by_requant(ctx, [acc_w] * mh)))
    # busy, the output valid, the ROM row counter and the synapse-fold counter (the
    # neuron-fold counter is never read: yosys deletes it)
    f.add("ff", "valid", 2 + _bits(cycles) + _bits(sfs))
    f.add("lut", "fold_ctrl", 2 + _bits(cycles) + _bits(sfs))
    return f


@register(Dense, "sparse")
def _sparse(ctx: NodeContext) -> Features:
    """``SparseDense``: per PE a pending-column mask, a column scan, a (value, row) ROM and
    one multiply-accumulate into its rows' accumulators; the input and output buffers."""
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
    # a row without weights: its accumulator and output register only ever load the bias,
    # so yosys drops the bits that stay 0 and merges the rest into one FF per register set
    w, bias = np.asarray(op.weight.data), _bias(op)
    empty = {r for r in range(sw.n_out) if not w[r].any()}
    loads = int(any(int(bias[r]) for r in empty))
    for p in range(sw.pe):
        nnz = len(sw.values[p])
        rows = len(sw.out_rows[p])
        kept = sum(1 for r in sw.out_rows[p] if r not in empty)
        merged = int(any(int(bias[r]) for r in sw.out_rows[p] if r in empty))
        f.add("ff", "sparse_reg_bits", kept * acc_w + merged)  # accumulators (bias loaded)
        if not nnz:
            continue
        nd = mul_dsp(ctx.device, x_w, x_s, wb, bool(op.weight.dtype.signed), min(wb + x_w, acc_w))
        if nd:
            f.dsp += nd
        else:
            f.add("lut", "mac_bits", wb * x_w)
        bram, _ = _rom(ctx.device, nnz, wb + rb)
        f.bram += bram
        if not bram:
            mask = (1 << wb) - 1
            words = [(r << wb) | (v & mask) for v, r in zip(sw.values[p], sw.rows[p], strict=True)]
            live = _rom_columns(words, wb + rb)
            f.add("lut", "rom_luts", _rom_luts(ctx.device, nnz, live))
            f.add("ff", "sparse_reg_bits", live)
        live = sum(1 for c in sw.counts[p] if c)
        packed = nd and _packs_registers(ctx.device)
        f.add("lut", "add_dsp_bits" if packed else "sparse_add_bits", acc_w)
        f.add("lut", "sparse_mux_bits", rows * acc_w + live * x_w)  # acc[row], x[col]
        f.add("lut", "sparse_ctrl", live + _bits(max(sw.counts[p])) + _bits(sw.n_in))
        f.add("ff", "sparse_reg_bits", live + x_w)  # pending mask, x[col]
        f.add("ff", "valid", 1 + _bits(max(sw.counts[p])))  # in flight, step
    out = (sw.n_out - len(empty)) * acc_w + loads
    f.add("ff", "sparse_reg_bits", ctx.in_type.size * x_w + out)  # x, out
    absorbed = [k for k in _absorbed_by_requant(ctx, [acc_w] * sw.n_out) if k not in empty]
    f.add("ff", "sparse_reg_bits", -acc_w * len(absorbed))
    f.add("ff", "valid", 2)
    return f


def expected_sparse_cycles(ctx: NodeContext, x_raws):
    """Cycles per input vector of a sparse node on data (``SparseDense.expected_cycles``)."""
    from ..hwgen.amaranth.sparse import expected_cycles

    return expected_cycles(ctx.node.op, x_raws, ctx.impl.pe)


# --- pixel-stream units: sliding window, convolution, pooling, deserializer, Add, FIFO ------


def _beats(t) -> tuple[int, int]:
    """(beats per sample, raws per beat) of a tensor type: an (H, W, C) tensor streams as
    H * W pixels of C raws; anything else is one beat."""
    from ..hwgen.amaranth.common import beat_layout

    beats, shape = beat_layout(t.shape)
    n = 1
    for d in shape:
        n *= d
    return beats, n


def _window(f: Features, device: Device, dtype, shape, kernel, stride, padding) -> tuple:
    """``WindowGenerator``'s cost into ``f``; returns (Hp * Wp cycles, Ho * Wo windows).

    It keeps the last (kh - 1) * Wp + kw - 1 padded pixels in a shift register (kh - 1
    line buffers and the taps); the window is read at kh * kw taps. On Xilinx a run of 3
    or more registers read only at its end is a shift-register LUT (SRL, 32 deep), one
    per bit; elsewhere, and for shorter runs, FFs."""
    h, w, c = shape
    kh, kw = kernel
    pt, pb, pl, pr = padding
    hp, wp = h + pt + pb, w + pl + pr
    ho, wo = (hp - kh) // stride[0] + 1, (wp - kw) // stride[1] + 1
    beat = _width(dtype)[0] * c
    # shift register sr[0..n-2] (sr[k] holds tap k + 1); the window register's copy of
    # tap k (k <= n - 2) has sr[k]'s input and enable, so yosys merges the two: the
    # engine reads sr[k] itself, and only the oldest tap n - 1 adds a register
    n = (kh - 1) * wp + kw
    reads = sorted({(kh - 1 - ky) * wp + (kw - 1 - kx) for ky in range(kh) for kx in range(kw)})
    prev = -1
    fanouts = sorted({t for t in reads if t <= n - 2} | ({n - 2} if n >= 2 else set()))
    for r in fanouts:  # runs of the chain, each ending where it is read
        run = r - prev
        if device.family == "xilinx" and run >= 3:
            f.add("lut", "srl_bits", beat * -(-run // 32))
        else:
            f.add("ff", "win_reg_bits", beat * run)
        prev = r
    f.add("ff", "win_reg_bits", beat)  # the oldest tap's window register
    if any(padding):
        f.add("lut", "win_mux_bits", beat)  # padding pixels
    f.add("ff", "valid", 1 + _bits(max(hp, 2)) + _bits(max(wp, 2)))
    f.add("lut", "ctrl", 2 + _bits(max(hp, 2)) + _bits(max(wp, 2)))
    return hp * wp, ho * wo


def _engine_context(ctx: NodeContext, dense, win_dtype) -> NodeContext:
    """The context of a convolution's Dense engine: one window in, one pixel out."""
    from ..ir import Node, TensorType

    n_out, n_in = dense.weight.shape
    in_t = TensorType(win_dtype, (n_in,))
    out_t = TensorType(ctx.out_type.dtype, (n_out,))
    node = Node(ctx.node.name, dense, ctx.node.inputs, out_t)
    return NodeContext(node, in_t, out_t, ctx.impl, ctx.design, ctx.device)


@register(Conv2d, "unrolled")
@register(Conv2d, "folded")
@register(Conv2d, "sparse")
@register(BinaryConv2d, "unrolled")
@register(BinaryConv2d, "folded")
def _conv(ctx: NodeContext) -> Features:
    """``ConvUnit``: a window generator feeding the style's Dense engine (the convolution
    as the Dense over one window, ``conv_as_dense``). Latency: the window's 1 + the
    engine's; cycles per sample: max(Hp * Wp, Ho * Wo * the engine's II)."""
    from ..hwgen.amaranth.window import conv_as_dense

    op = ctx.node.op
    h, w, c = ctx.in_type.shape
    dense, bits = conv_as_dense(op, c, bits=isinstance(ctx.impl, Sparse))
    eng_ctx = _engine_context(ctx, dense, bits or ctx.in_type.dtype)
    if isinstance(dense, BinaryDense) and isinstance(ctx.impl, Unrolled):
        from ..hwgen.amaranth.top import binary_as_dense

        eng_ctx = _engine_context(ctx, binary_as_dense(dense), Fixed(1, 0, False))
    eng = node_features(eng_ctx)
    f = Features(lut=dict(eng.lut), ff=dict(eng.ff), dsp=eng.dsp, bram=eng.bram, uram=eng.uram)
    padded, windows = _window(
        f, ctx.device, ctx.in_type.dtype, (h, w, c), op.weight.shape[1:3], op.stride, op.padding
    )
    # the unit's own timing contract (no elaboration): window FIFO, schedule and pace
    from ..hwgen.amaranth.top import matrix_unit

    unit = matrix_unit(ctx.node, ctx.in_type, ctx.out_type, ctx.impl)
    for obj in (unit, unit.window, unit.engine):
        obj._MustUse__silence = True
    depth = getattr(unit, "fifo_depth", 0)
    if depth:  # windows queue before a slow engine
        # a folded engine with one fold per row loads the window into its input buffer as
        # it is (no rotation mux): the FIFO's read data goes straight into registers
        direct = isinstance(ctx.impl, Folded) and ctx.impl.simd == dense.weight.shape[1]
        q = fifo_features(
            ctx.device,
            _width(ctx.in_type.dtype)[0] * dense.weight.shape[1],
            depth,
            1,
            sync_read=False,
            read_register=direct,
        )
        for kind in ("lut", "ff"):
            for k, v in getattr(q, kind).items():
                f.add(kind, k, v)
        f.bram += q.bram
    f.latency = 1 + eng.latency + (1 if depth else 0)
    f.ii = max(padded, windows * eng.ii)
    f.schedule, f.pace = unit.schedule, getattr(unit, "pace", None)
    return f


@register(BinaryDense, "unrolled")
def _binary_unrolled(ctx: NodeContext) -> Features:
    """An unrolled ``BinaryDense`` is its exact Dense twin over the input bits."""
    from ..hwgen.amaranth.top import binary_as_dense

    return node_features(_engine_context(ctx, binary_as_dense(ctx.node.op), Fixed(1, 0, False)))


@register(MaxPool2d, "unit")
@register(AvgPool2d, "unit")
def _pool(ctx: NodeContext) -> Features:
    """``PoolUnit``: a window generator (no padding) and one register stage reducing each
    channel's kh * kw raws (a comparator tree for max, an adder chain for the average's
    sum). Latency 2; cycles per sample: H * W."""
    op = ctx.node.op
    h, w, c = ctx.in_type.shape
    f = Features(latency=2, pace=1)
    cycles, _ = _window(f, ctx.device, ctx.in_type.dtype, (h, w, c), op.kernel, op.stride, (0,) * 4)
    f.ii = cycles
    from ..hwgen.amaranth.schedule import compose, elementwise
    from ..hwgen.amaranth.window import WindowGenerator

    win = WindowGenerator(ctx.in_type.dtype, (h, w, c), op.kernel, op.stride)
    win._MustUse__silence = True
    f.schedule = compose(win.schedule, elementwise(win.out_shape[0] * win.out_shape[1], 1))
    kk = op.kernel[0] * op.kernel[1]
    in_w = _width(ctx.in_type.dtype)[0]
    out_w = _width(ctx.out_type.dtype)[0]
    if isinstance(op, MaxPool2d):
        f.add("lut", "pool_cmp_bits", (kk - 1) * in_w * c)  # comparator + mux per level
    else:
        f.add("lut", "add_bits", (kk - 1) * out_w * c)
    f.add("ff", "reg_bits", out_w * c)
    f.add("ff", "valid", 1)
    return f


@register(Flatten, "unit")
@register(Reshape, "unit")
def _deserializer(ctx: NodeContext) -> Features:
    """A pixel stream becoming one vector: ``Deserializer`` (the beats of a sample gathered
    into registers; latency 1, one sample per H * W cycles)."""
    beats, n = _beats(ctx.in_type)
    bw = _width(ctx.in_type.dtype)[0] * n
    from ..hwgen.amaranth.schedule import Schedule

    f = Features(latency=1, ii=beats, pace=beats)
    f.schedule = Schedule(beats, 1, (beats,), 1, beats)
    f.add("ff", "reg_bits", bw * (beats - 1) + bw * beats)
    f.add("ff", "valid", 1 + _bits(max(beats, 2)))
    f.add("lut", "ctrl", beats + _bits(max(beats, 2)))
    return f


@register(Add, "unit")
def _add(ctx: NodeContext) -> Features:
    """``AddUnit``: per raw of a beat, one adder of the operands aligned to the larger frac;
    one output register stage (latency 1, one beat per cycle)."""
    beats, n = _beats(ctx.out_type)
    types = ctx.design.graph.types()
    out = ctx.out_type.dtype
    f = Features(latency=1, ii=beats)
    ops = [types[v].dtype for v in ctx.node.inputs]
    tz = min(out.frac - t.frac for t in ops)  # both shifted left: constant zero LSBs
    f.add("lut", "add_bits", n * max(out.width - tz, 1))
    f.add("ff", "reg_bits", n * max(out.width - tz, 1))
    f.add("ff", "valid", 1)
    return f


def fifo_features(
    device: Device,
    width: int,
    depth: int,
    beats: int,
    sync_read: bool = True,
    read_register: bool = False,
) -> Features:
    """A ``SkipFIFO`` (``SyncFIFOBuffered``: ``depth`` - 1 words of memory and an output
    register): block RAM when yosys finds it cheaper (``_ram``), else LUT RAM; read and
    write pointers and a level counter. ``sync_read=False``: a ``SyncFIFO``, whose
    asynchronous read port no block RAM has (LUT RAM, or FFs on an iCE40) unless
    ``read_register``: its data goes straight into a register (with an enable), which
    yosys merges into the read port, making it a block RAM's synchronous read."""
    f = Features(latency=2, ii=beats)
    words = max(depth - 1, 1) if sync_read else depth  # a SyncFIFO stores all ``depth``
    bram = _ram(device, words, width) if sync_read or read_register else 0
    f.bram += bram
    if not bram and device.family == "xilinx":  # LUT RAM: 32 words x 6 bits a RAM32M, x 14
        per_cell = 14 if device.yosys_arch == "xcup" else 6  # a RAM32M16 (UltraScale+)
        f.add("lut", "lutram_cells", float(-(-width // per_cell) * -(-words // 32)))
    elif not bram:  # no LUT RAM on an iCE40: the words are FFs
        f.add("ff", "reg_bits", width * words)
        f.add("lut", "fifo_mux_bits", width * words)
    if sync_read:  # SyncFIFOBuffered's output register (a SyncFIFO reads combinationally)
        f.add("ff", "reg_bits", width)
    f.add("ff", "valid", 2 + 3 * _bits(depth + 1))
    f.add("lut", "ctrl", 3 * _bits(depth + 1))
    return f
