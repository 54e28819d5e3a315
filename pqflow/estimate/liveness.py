"""What synthesis removes before a single LUT is counted: constant and dead elements.

yosys never sees the training data, but it does see constants. Two rounds of
simplification remove whole adder trees and multipliers from an unrolled design, and a
model that costs every row of every weight matrix overcounts them (41 DSP blocks on the
README's 80%-sparse MLP):

1. **Before DSP mapping** (``opt``, constant folding, ``opt_clean``): an unrolled Dense
   row whose weights are all zero, or that reads only constant elements, is a constant
   (its bias). A ``ReLU``/``Requant``/``MultiThreshold`` of a constant is a constant. A
   product that reads a constant is folded into the bias; logic whose value nothing reads
   is deleted, back through the chain. So is a MultiThreshold channel whose thresholds
   all lie outside its input type.
2. **During LUT mapping** (``abc9``): ABC knows of a row's output only its register's
   declared width, and evaluates the elementwise units after it, up to the next
   register, on that whole range (they are monotone: the two ends suffice). A row whose
   terms are all negative is computed as ``-S`` with ``S >= 0`` in an unsigned register
   (:func:`~pqflow.estimate.models.unrolled_trees` mirrors this), so its ``ReLU`` is
   provably 0; a Requant shifting out every bit the register can hold is too. Such a
   row's chain is constant, and every register, adder and DSP block that only fed it is
   removed. A DSP block's output is opaque to ABC (any value of the product's width),
   and so is a register: readers past it keep their multipliers.

``analyze(design)`` returns, per hardware value, the elements of each kind
(:class:`Facts`); ``contexts`` hands them to the models, which cost the effective
design: :func:`effective_dense` gives an unrolled Dense's weights and bias after both
rounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..hwgen.design import Design, Unrolled
from ..ir import (
    Dense,
    Fixed,
    Flatten,
    MultiThreshold,
    ReLU,
    Requant,
    Reshape,
    TensorType,
)

__all__ = ["Facts", "analyze", "effective_dense"]

_ELEMENTWISE = (Requant, ReLU, MultiThreshold)


@dataclass(frozen=True)
class Facts:
    """What synthesis knows of one hardware value, by flat element index.

    ``const``: elements yosys folds to a constant before mapping (element -> raw value);
    ``abc_const``: elements ABC proves constant at LUT mapping (their logic goes, the
    registers and multipliers reading them stay); ``live``: elements something still reads
    after both rounds (None: all of them)."""

    const: dict[int, int] = field(default_factory=dict)
    abc_const: frozenset[int] = frozenset()
    live: frozenset[int] | None = None

    def is_live(self, k: int) -> bool:
        return self.live is None or k in self.live


def _size(t: TensorType) -> int:
    return int(np.prod(t.shape, dtype=np.int64))


def _unrolled(design: Design, name: str) -> Unrolled | None:
    impl = design.impl(name)
    return impl if isinstance(impl, Unrolled) else None


def _bias(op: Dense) -> np.ndarray:
    if op.bias is not None:
        return np.asarray(op.bias.data, dtype=np.int64)
    return np.zeros(op.weight.shape[0], dtype=np.int64)


def _fold(op: Dense, const_in: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Weights with the constant input columns moved into the bias."""
    w = np.array(op.weight.data, dtype=np.int64)
    b = _bias(op).copy()
    for i, v in const_in.items():
        if v:
            b += w[:, i] * v
        w[:, i] = 0
    return w, b


def _elementwise_const(op, in_type: TensorType, const_in: dict[int, int]) -> dict[int, int]:
    """The constant outputs of an elementwise unit on its constant inputs (the oracle's own
    numpy reference computes them)."""
    if not const_in:
        return {}
    from ..kernels.reference import evaluate

    x = np.zeros((1, _size(in_type)), dtype=np.int64)
    for k, v in const_in.items():
        x[0, k] = v
    y = evaluate(op, [in_type], x.reshape((1, *in_type.shape))).reshape(-1)
    return {k: int(y[k]) for k in const_in}


def _flat(op, in_type: TensorType) -> dict[int, int]:
    """Elements of a monotone unit that are constant over its input type's whole range (a
    MultiThreshold whose thresholds all lie outside it, a ReLU of a non-positive type)."""
    if isinstance(op, Requant) or not isinstance(in_type.dtype, Fixed):
        return {}
    lo, hi = in_type.dtype.min_raw, in_type.dtype.max_raw
    c = in_type.shape[-1]
    flat = {}  # per channel: the same thresholds at every pixel
    for k in range(c):
        span = _through(op, k, lo, hi, in_type.dtype.width, None)
        if span is not None and span[0] == span[1]:
            flat[k] = span[0]
    return {k: flat[k % c] for k in range(_size(in_type)) if k % c in flat}


def analyze(design: Design, device=None) -> dict[str, Facts]:
    """Per hardware value of ``design``, the elements synthesis folds or deletes on
    ``device`` (whether a product is a DSP block, opaque to ABC, depends on it)."""
    from ..hwgen.amaranth.graph_top import hardware_graph

    graph = design.graph
    hw = hardware_graph(graph)
    types = graph.types()
    const: dict[str, dict[int, int]] = {hw.source: {}}
    folded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for n in hw.nodes:
        op, src = n.op, n.inputs[0]
        cin = const.get(src, {})
        const[n.name] = {}
        if isinstance(op, Dense) and _unrolled(design, n.name) and len(n.inputs) == 1:
            w, b = _fold(op, cin)
            folded[n.name] = (w, b)
            const[n.name] = {r: int(b[r]) for r in range(w.shape[0]) if not w[r].any()}
        elif isinstance(op, _ELEMENTWISE):
            const[n.name] = _elementwise_const(op, types[src], cin) | _flat(op, types[src])
        elif isinstance(op, Flatten | Reshape) and _wiring(types[src]):
            const[n.name] = dict(cin)
    abc: dict[str, set[int]] = {}
    for name in folded:
        for value, rows in _abc_chain(design, hw, name, folded, const, device).items():
            abc.setdefault(value, set()).update(rows)
    # liveness, back from the output: an element is read when a live reader needs it
    need: dict[str, set[int] | None] = {hw.sink: None}
    for n in reversed(hw.nodes):
        out = need.get(n.name, set())
        op = n.op
        if n.name in folded:
            w, _ = folded[n.name]
            rows = range(w.shape[0]) if out is None else out
            used = set()
            for r in rows:
                if r not in const[n.name]:
                    used.update(int(i) for i in np.flatnonzero(w[r]))
            _merge(need, n.inputs[0], used)
        elif isinstance(op, _ELEMENTWISE):
            if out is None:
                out = set(range(_size(types[n.name])))
            _merge(need, n.inputs[0], out - set(const[n.name]) - abc.get(n.name, set()))
        elif isinstance(op, Flatten | Reshape) and _wiring(types[n.inputs[0]]):
            _merge(need, n.inputs[0], out)
        else:
            for v in n.inputs:
                _merge(need, v, None)
    facts = {}
    for v in [hw.source, *(n.name for n in hw.nodes)]:
        live = need.get(v, set())
        facts[v] = Facts(
            const=const.get(v, {}),
            abc_const=frozenset(abc.get(v, ())),
            live=None if live is None else frozenset(live),
        )
    return facts


def _wiring(t: TensorType) -> bool:
    """A reshape of a one-beat value is wiring; of a pixel stream, a deserializer (its
    registers keep what they hold, so nothing is assumed through it)."""
    from ..hwgen.amaranth.common import beat_layout

    return beat_layout(t.shape)[0] == 1


def _merge(need: dict, value: str, elems: set[int] | None) -> None:
    if elems is None or need.get(value, set()) is None:
        need[value] = None
    else:
        need.setdefault(value, set()).update(elems)


def _registered(design: Design, op) -> bool:
    o = design.options
    return (isinstance(op, Requant) and o.register_requant) or (
        isinstance(op, MultiThreshold) and o.register_threshold
    )


def _abc_chain(design: Design, hw, name: str, folded: dict, const: dict, device):
    """Elements ABC proves constant after the unrolled Dense ``name``: the elementwise
    units reading its output, up to the first register, evaluated on the range each
    row's final register can hold (monotone units: the ends of the range suffice). A row
    whose chain collapses to one value is dead; the units from there to the register
    lose their logic (``{value: rows}``)."""
    from .models import unrolled_trees

    chain, v = [], name
    while True:
        readers = [n for n in hw.nodes if v in n.inputs]
        if len(readers) != 1 or not isinstance(readers[0].op, _ELEMENTWISE):
            break
        chain.append(readers[0])
        if _registered(design, readers[0].op):
            break  # past a register ABC knows only its width (measured: no further)
        v = readers[0].name
    if not chain:
        return {}
    graph = design.graph
    node = graph.node(name)
    impl = _unrolled(design, name)
    w, b = folded[name]
    it = graph.types()[node.inputs[0]].dtype
    t = unrolled_trees(node.op, it, impl.levels_per_stage, impl.products, weight=w, bias=b)
    out: dict[str, set[int]] = {}
    for r, span in enumerate(t.root_ranges):
        if span is None or r in const[name]:
            continue
        lo, hi = span
        bits = max(t.roots[r], 1)
        for k, unit in enumerate(chain):
            span = _through(unit.op, r, lo, hi, bits, device)
            if span is None:
                break
            lo, hi = span
            if lo == hi:
                for u in chain[k:]:
                    out.setdefault(u.name, set()).add(r)
                break

    return out


def _through(op, k: int, lo: int, hi: int, bits: int, device) -> tuple[int, int] | None:
    """The output range of element ``k`` of a monotone unit on inputs in [lo, hi] (None
    when ABC cannot tell: a wrapping Requant)."""
    from ..ir import Overflow
    from ..ir.numeric import apply_overflow, round_shift
    from .models import _requant_dsp

    if isinstance(op, ReLU):
        return max(lo, 0), max(hi, 0)
    if isinstance(op, MultiThreshold):
        th = op.thresholds.data
        row = th[k % th.shape[0]] if th.shape[0] > 1 else th[0]
        return tuple(op.offset + int((x >= row).sum()) for x in (lo, hi))
    if op.overflow != Overflow.SATURATE:
        return None
    mult = op.mult[k % len(op.mult)] if len(op.mult) > 1 else op.mult[0]
    shift = op.shift[k % len(op.shift)] if len(op.shift) > 1 else op.shift[0]
    tz = (mult & -mult).bit_length() - 1 if mult else 0
    odd = mult >> tz if mult else 0
    if odd > 1 and device is not None and _requant_dsp(device, bits, True, mult):
        # a DSP block's output is opaque to ABC: any value of the (signed) product's width
        pw = bits + (lo >= 0) + odd.bit_length() + 1  # signed A times signed B
        p = np.array([-(1 << (pw - 1)) << tz, ((1 << (pw - 1)) - 1) << tz], dtype=np.int64)
    else:
        p = np.array([lo * mult, hi * mult], dtype=np.int64)
    y = apply_overflow(round_shift(p, np.array([shift]), op.rounding), op.to, op.overflow)
    return int(y[0]), int(y[1])


def effective_dense(op: Dense, facts_in: Facts | None, facts_out: Facts | None):
    """An unrolled Dense's ``(weight, bias)`` as synthesis leaves it: constant inputs folded
    into the bias, rows nothing reads (or that are constant) emptied."""
    w, b = _fold(op, facts_in.const if facts_in is not None else {})
    if facts_out is not None:
        for r in range(w.shape[0]):
            if not facts_out.is_live(r):
                w[r], b[r] = 0, 0
    return w, b
