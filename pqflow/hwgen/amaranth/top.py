"""``DataflowTop``: a chain graph's integer nodes as streaming units joined by ``wiring.connect``.

The graph's float edges stay outside the hardware: the top's input ``i`` carries the raws
*after* the first ``Quantize`` (or the graph input itself when it is already integer),
and its output ``o`` carries the raws of the last integer node (the one a final
``Dequantize`` reads, or the graph output).

Two registries build the units, both keyed by class (an op a style lacks raises a
``HardwareError`` naming the node):

- ``dense_units`` (``register_dense``): the matrix nodes (``Dense``, ``BinaryDense``), keyed
  by the node's implementation class in the ``Design`` (``Unrolled``, ``Folded``, ``Sparse``);
- ``op_unit``: every other op, one unit shared by all styles (``Requant``, ``ReLU``,
  ``MultiThreshold``, ``MaxPool2d``/``AvgPool2d``, and ``Flatten``/``Reshape`` as wiring
  or a deserializer).

Tensors travel as beats (``schedule.py``): an (H, W, C) tensor is H * W beats of one
pixel each, anything else one beat. Element-wise units and Dense engines act per beat;
``Conv2d``/``BinaryConv2d`` are a ``WindowGenerator`` feeding the node style's Dense
engine (``window.ConvUnit``; a grouped convolution is its block-diagonal Dense), pools
are ``pool.PoolUnit``, and ``Flatten`` of a pixel stream is a ``window.Deserializer``.
Every unit has a ``schedule`` (``schedule.Schedule``) besides ``latency`` and
``cycles_per_vector``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import singledispatch

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ...ir import (
    AvgPool2d,
    BinaryConv2d,
    BinaryDense,
    Bipolar,
    Conv2d,
    Dense,
    Dequantize,
    Fixed,
    Flatten,
    Graph,
    MaxPool2d,
    MultiThreshold,
    Node,
    Op,
    Quantize,
    ReLU,
    Requant,
    Reshape,
    TensorType,
    Weight,
)
from ..design import (
    MATRIX_OPS,
    Design,
    DesignError,
    Folded,
    HardwareError,
    Impl,
    Sparse,
    UnitOptions,
    Unrolled,
)
from .activation import MultiThresholdUnit, ReLUUnit
from .common import beat_layout, vector_signature
from .dense import PRODUCTS, UnrolledDense
from .folded import FoldedDense
from .pool import PoolUnit
from .requant import RequantUnit
from .schedule import Schedule, compose, elementwise
from .window import ConvUnit, Deserializer, WindowGenerator, conv_as_dense, conv_fifo_depth

__all__ = [
    "DataflowTop",
    "DenseBuilder",
    "UnrolledOptions",
    "dense_units",
    "hardware_chain",
    "matrix_unit",
    "op_unit",
    "register_dense",
]


@dataclass(frozen=True)
class UnrolledOptions:
    """Options of the ``unrolled`` style (keyword arguments of ``generate_verilog``).

    levels_per_stage: adder-tree levels between register stages in Dense units.
    products: ``"mul"`` (constant multipliers on odd weight parts) or ``"csd"`` (shifts and
        adds only).
    register_requant / register_threshold: one output register stage in Requant /
        MultiThreshold units (else they are combinational).
    """

    levels_per_stage: int = 3
    products: str = "mul"
    register_requant: bool = True
    register_threshold: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.levels_per_stage, int) or self.levels_per_stage < 1:
            raise ValueError(
                f"levels_per_stage must be a positive integer, not {self.levels_per_stage!r}"
            )
        if self.products not in PRODUCTS:
            raise ValueError(
                f"products must be one of {', '.join(PRODUCTS)}, not {self.products!r}"
            )
        for name in ("register_requant", "register_threshold"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, not {getattr(self, name)!r}")

    @classmethod
    def from_kwargs(cls, options: dict) -> UnrolledOptions:
        known = [f.name for f in fields(cls)]
        for key in options:
            if key not in known:
                raise TypeError(
                    f"unknown option {key!r} for style 'unrolled'; accepted: {', '.join(known)}"
                )
        return cls(**options)


DenseBuilder = Callable[[Dense | BinaryDense, Node, TensorType, TensorType, Impl], wiring.Component]
"""Builds the unit of one matrix node: ``(op, node, in_type, out_type, impl) -> Component``.

``in_type``/``out_type`` are the node's input and output ``TensorType``s (the output
element type is the IR's exact accumulator type). The component must have

- ``i: In(vector_signature(in_type.dtype, in_type.size))`` and
  ``o: Out(vector_signature(out_type.dtype, out_type.size))`` -- ready/valid streams
  (``amaranth.lib.stream``) whose payload is a whole vector, element k at bits
  [k*w, (k+1)*w); every accepted input vector yields exactly one output vector, in order;
  it must honour back-pressure (hold ``o`` while ``o.ready`` is low) and may stall ``i``;
- ``latency: int`` -- cycles from the edge an input vector is taken to the first cycle its
  output is offered, with no stalls (for a data-dependent engine: with the first vector
  of the stall-free run as measured, or an upper bound; say which in its docstring);
- ``cycles_per_vector: int | None`` -- the initiation interval with a ready consumer
  (1 for a fully pipelined unit; None when it depends on the data).

It is built with the default ``sync`` domain (synchronous reset). Raise
``HardwareError`` (naming ``node.describe()``) for an op the builder cannot handle.
"""

dense_units: dict[type[Impl], DenseBuilder] = {}
"""The matrix-node builders by implementation class (``Unrolled``, ``Folded``, ``Sparse``)."""


def register_dense(impl_cls: type[Impl]) -> Callable[[DenseBuilder], DenseBuilder]:
    """Decorator registering the builder of ``impl_cls`` nodes in ``dense_units``::

    @register_dense(Sparse)
    def build_sparse(op, node, in_type, out_type, impl: Sparse) -> wiring.Component: ...
    """
    if not (isinstance(impl_cls, type) and issubclass(impl_cls, Impl)):
        raise TypeError(f"register_dense: expected an Impl subclass, not {impl_cls!r}")

    def register(builder: DenseBuilder) -> DenseBuilder:
        dense_units[impl_cls] = builder
        return builder

    return register


def _per_beat(unit, beats: int):
    """``unit`` (acting on each beat alone) with its ``schedule`` for ``beats`` beats."""
    if unit is not None and not hasattr(unit, "schedule"):
        cpv = getattr(unit, "cycles_per_vector", 1)
        if cpv is None:  # data-dependent: its slowest vector
            cpv = getattr(unit, "max_cycles", unit.latency)
        unit.schedule = elementwise(beats, unit.latency, cpv)
    return unit


def matrix_unit(node: Node, in_type: TensorType, out_type: TensorType, impl: Impl):
    """The unit of a matrix node (``Dense``, ``BinaryDense``, ``Conv2d``, ``BinaryConv2d``)
    in implementation ``impl``; a convolution is a ``ConvUnit`` (window generator + the
    style's Dense engine on each window)."""
    builder = dense_units.get(type(impl))
    if builder is None:
        known = ", ".join(sorted(c.style for c in dense_units))
        raise HardwareError(
            f"{node.describe()}: no builder is registered for style {impl.style!r} "
            f"(registered: {known}); import its module (e.g. pqflow.hwgen.amaranth.sparse)"
        )
    op = node.op
    if not isinstance(op, Conv2d | BinaryConv2d):
        beats, _ = beat_layout(in_type.shape)
        if beats != 1:
            raise HardwareError(
                f"{node.describe()}: a Dense reads one vector, not a pixel stream of shape "
                f"{in_type.shape}; flatten it first"
            )
        return _per_beat(builder(op, node, in_type, out_type, impl), 1)
    h, w, c = in_type.shape
    dense, bits = conv_as_dense(op, c, bits=isinstance(impl, Sparse))
    pad_raw = 0  # zero padding: the raw of real 0 (Fixed raws have no zero point)
    window = WindowGenerator(
        in_type.dtype, (h, w, c), op.weight.shape[1:3], op.stride, op.padding, pad_raw
    )
    win_type = TensorType(bits or in_type.dtype, (window.n_out,))
    engine = builder(dense, node, win_type, TensorType(out_type.dtype, (out_type.shape[-1],)), impl)
    return ConvUnit(window, engine, conv_fifo_depth(window, engine))


def binary_as_dense(op: BinaryDense) -> Dense:
    """The exact Dense twin of a BinaryDense over the input *bits* b in {0, 1}.

    With x = 2b - 1 and w in {-1, +1}: sum_i w_i x_i = sum_i (2 w_i) b_i - sum_i w_i,
    so the weights become 2w (Fixed(3, 0)) and the bias -sum_i w_i. Its accumulator range
    over b in [0, 1] is exactly [-N, N], the BinaryDense output type.
    """
    w = 2 * op.weight.data.astype(np.int64) - 1
    return Dense(
        Weight(2 * w, Fixed(3, 0, True)),
        Weight(-w.sum(axis=1), Fixed.fitting(-w.shape[1], w.shape[1], 0)),
    )


@register_dense(Unrolled)
def _(op, node: Node, in_type: TensorType, out_type: TensorType, impl: Unrolled):
    in_dtype = in_type.dtype
    if isinstance(op, BinaryDense):  # XNOR-popcount with constant weights: a +-2 adder tree
        op, in_dtype = binary_as_dense(op), Fixed(1, 0, False)
    return UnrolledDense(
        op,
        in_dtype,
        out_type.dtype,
        levels_per_stage=impl.levels_per_stage,
        products=impl.products,
    )


@register_dense(Folded)
def _(op, node: Node, in_type: TensorType, out_type: TensorType, impl: Folded):
    try:
        return FoldedDense(op, in_type.dtype, out_type.dtype, pe=impl.pe, simd=impl.simd)
    except ValueError as e:
        raise DesignError(f"{node.describe()}: {e}") from None


@singledispatch
def op_unit(op: Op, node: Node, in_type: TensorType, options: UnitOptions, style: str):
    """The unit of a non-matrix node, the same in every style (a Component with ``i``,
    ``o`` and ``latency``), or None when the node is pure wiring. Raises HardwareError
    naming the node for an op without one."""
    supported = ", ".join(
        sorted(
            [c.__name__ for c in op_unit.registry if c is not object]
            + [c.__name__ for c in MATRIX_OPS]
        )
    )
    raise HardwareError(
        f"{node.describe()}: {type(op).__name__} has no {style!r} hardware implementation "
        f"yet; supported ops: {supported}"
    )


@op_unit.register
def _(op: Requant, node: Node, in_type: TensorType, options: UnitOptions, style: str):
    beats, shape = beat_layout(in_type.shape)
    unit = RequantUnit(
        op, in_type.dtype, node.type.dtype, shape, registered=options.register_requant
    )
    return _per_beat(unit, beats)


@op_unit.register
def _(op: ReLU, node: Node, in_type: TensorType, options: UnitOptions, style: str):
    beats, shape = beat_layout(in_type.shape)
    return _per_beat(ReLUUnit(in_type.dtype, shape, op), beats)


@op_unit.register
def _(op: MultiThreshold, node: Node, in_type: TensorType, options: UnitOptions, style: str):
    beats, shape = beat_layout(in_type.shape)
    unit = MultiThresholdUnit(
        op, in_type.dtype, node.type.dtype, shape, registered=options.register_threshold
    )
    return _per_beat(unit, beats)


@op_unit.register(MaxPool2d)
@op_unit.register(AvgPool2d)
def _(op, node: Node, in_type: TensorType, options: UnitOptions, style: str):
    try:
        return PoolUnit(op, in_type.dtype, node.type.dtype, in_type.shape)
    except ValueError as e:
        raise HardwareError(f"{node.describe()}: {e}") from None


@op_unit.register(Flatten)
@op_unit.register(Reshape)
def _(op, node: Node, in_type: TensorType, options: UnitOptions, style: str):
    """Row-major reshapes keep the flat element order: wiring when the beats stay the
    same, a ``Deserializer`` when a pixel stream becomes one vector."""
    beats_in, beat_in = beat_layout(in_type.shape)
    beats_out, beat_out = beat_layout(node.type.shape)
    if (beats_in, beat_in) == (beats_out, beat_out) or (beats_in == beats_out == 1):
        return None
    if beats_out == 1:
        return Deserializer(in_type.dtype, beats_in, beat_in[0])
    raise HardwareError(
        f"{node.describe()}: {type(op).__name__} from {in_type.shape} to {node.type.shape} "
        "changes the pixel stream; supported: a pixel stream to a vector, or the same beats"
    )


def hardware_chain(graph: Graph) -> tuple[TensorType, list[Node], TensorType]:
    """The integer part of a chain graph: (input type, nodes, output type).

    A leading ``Quantize`` and a trailing ``Dequantize`` are dropped (they stay in
    software); every other node must read the previous one. Raises ValueError otherwise.
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be a pqflow.ir.Graph, not {graph!r}")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(
            f"graph '{graph.name}' must have one input and one output for a dataflow chain, "
            f"not {len(graph.inputs)} and {len(graph.outputs)}"
        )
    nodes = list(graph.nodes)
    prev = graph.inputs[0].name
    for n in nodes:
        if n.inputs != (prev,):
            raise ValueError(
                f"{n.describe()}: reads {', '.join(n.inputs)}, but a dataflow chain needs every "
                f"node to read only the previous value '{prev}'"
            )
        prev = n.name
    if graph.outputs[0] != prev:
        raise ValueError(f"graph '{graph.name}': output '{graph.outputs[0]}' is not the last node")
    in_type = graph.inputs[0].type
    if nodes and isinstance(nodes[0].op, Quantize):
        in_type = nodes.pop(0).type
    out_type = nodes[-1].type if nodes else in_type
    if nodes and isinstance(nodes[-1].op, Dequantize):
        nodes.pop()
        out_type = graph.types()[graph.node(graph.outputs[0]).inputs[0]]
    for n in nodes:
        if isinstance(n.op, Quantize | Dequantize):
            raise ValueError(
                f"{n.describe()}: float conversions are allowed only at the graph's edges "
                "(a leading Quantize, a trailing Dequantize)"
            )
    for what, t in (("input", in_type), ("output", out_type)):
        if not isinstance(t.dtype, Fixed | Bipolar):
            raise ValueError(
                f"graph '{graph.name}': the hardware {what} must be integer raws, not {t}"
            )
    return in_type, nodes, out_type


def _pace(unit) -> float:
    """Fewest cycles between two output beats of ``unit``: its ``pace`` attribute (a
    window unit: 1; a convolution: its engine's II), else its average."""
    s = unit.schedule
    return getattr(unit, "pace", s.cycles_per_sample / s.out_beats)


def stream_latency(units: list[tuple[Schedule, float]], in_beats: int) -> int:
    """Cycles from the first input beat of a sample to its first output beat through units
    given as (schedule, pace), stall-free, input beats arriving one per cycle.

    Each unit's output beat j leaves ``latency`` cycles after its ``need[j]``-th input
    beat, and no sooner than ``pace`` cycles after beat j - 1. For one-beat samples this
    is the sum of the units' latencies.
    """
    times: list[float] = list(range(in_beats))
    for s, pace in units:
        out: list[float] = []
        for n in s.need:
            t = times[n - 1] + s.latency
            out.append(max(t, out[-1] + pace) if out else t)
        times = out
    return math.ceil(times[0])


def _flat_beats(t: TensorType) -> tuple[int, tuple[int]]:
    beats, shape = beat_layout(t.shape)
    return beats, (int(np.prod(shape)),)


class DataflowTop(wiring.Component):
    """A chain graph in hardware: one unit per integer node, streams joined in order.

    ``source`` is a ``Design`` (per-node implementations) or a ``Graph``, built all
    unrolled with ``options`` (``UnrolledOptions``). ``i`` takes beats of the raws after
    the graph's first ``Quantize``; ``o`` gives the beats of its last integer node (one
    beat per sample for a vector, H * W beats of C raws for an (H, W, C) tensor:
    ``in_beats``/``in_count`` and ``out_beats``/``out_count`` per sample and per beat).
    ``latency`` is the cycles from the first accepted input beat to the first output beat
    when nothing stalls (``stream_latency``: for vectors the sum of the units'
    latencies; for pixel streams a model from the units' schedules, input beats one per
    cycle); ``cycles_per_vector`` (the II) is the largest
    of the units' cycles per *sample* (per image for a pixel-stream CNN; None when one of
    them depends on the data); ``schedule`` composes the units' schedules.
    """

    def __init__(self, source: Graph | Design, options: UnrolledOptions | None = None) -> None:
        if isinstance(source, Design):
            if options is not None:
                raise TypeError("DataflowTop: options apply to a Graph, not to a Design")
            design = source
        elif isinstance(source, Graph):
            options = UnrolledOptions() if options is None else options
            if not isinstance(options, UnrolledOptions):
                raise TypeError(f"DataflowTop: options must be UnrolledOptions, not {options!r}")
            design = Design.uniform(source, "unrolled", **asdict(options))
        else:
            raise TypeError(f"DataflowTop: source must be a Graph or a Design, not {source!r}")
        graph = design.graph
        self.design, self.graph = design, graph
        self.in_type, nodes, self.out_type = hardware_chain(graph)
        self.in_beats, (self.in_count,) = _flat_beats(self.in_type)
        self.out_beats, (self.out_count,) = _flat_beats(self.out_type)
        types = graph.types()
        self.units: list[tuple[str, wiring.Component]] = []
        styles = sorted({impl.style for _, impl in design.impls}) or ["unrolled"]
        style = styles[0] if len(styles) == 1 else "/".join(styles)
        t = self.in_type
        for n in nodes:
            if isinstance(n.op, MATRIX_OPS):
                unit = matrix_unit(n, t, types[n.name], design.impl(n.name))
            else:
                unit = op_unit(n.op, n, t, design.options, style)
            if unit is not None:
                self.units.append((n.name, unit))
            t = types[n.name]
        lat = [getattr(u, "latency", None) for _, u in self.units]
        self.latency = (
            None
            if None in lat
            else stream_latency([(u.schedule, _pace(u)) for _, u in self.units], self.in_beats)
        )
        cpv = [getattr(u, "cycles_per_vector", 1) for _, u in self.units]
        if None in cpv:
            self.cycles_per_vector = None
        else:  # per sample: a pixel-stream unit's II is already per sample (its schedule)
            self.cycles_per_vector = max(
                (u.schedule.cycles_per_sample for _, u in self.units), default=1
            )
        self.schedule: Schedule = elementwise(self.in_beats, 0)
        for _, u in self.units:
            self.schedule = compose(self.schedule, u.schedule)
        super().__init__(
            {
                "i": In(vector_signature(self.in_type.dtype, self.in_count)),
                "o": Out(vector_signature(self.out_type.dtype, self.out_count)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        if not self.units:
            m.d.comb += [
                self.o.payload.eq(self.i.payload),
                self.o.valid.eq(self.i.valid),
                self.i.ready.eq(self.o.ready),
            ]
            return m
        for name, unit in self.units:
            m.submodules[name] = unit
        wiring.connect(m, wiring.flipped(self.i), self.units[0][1].i)
        for (_, a), (_, b) in zip(self.units, self.units[1:], strict=False):
            wiring.connect(m, a.o, b.i)
        wiring.connect(m, self.units[-1][1].o, wiring.flipped(self.o))
        return m
