"""``DataflowTop``: a chain graph's integer nodes as streaming units joined by ``wiring.connect``.

The graph's float edges stay outside the hardware: the top's input ``i`` carries the raws
*after* the first ``Quantize`` (or the graph input itself when it is already integer),
and its output ``o`` carries the raws of the last integer node (the one a final
``Dequantize`` reads, or the graph output). ``unrolled_unit`` is the registry, keyed by
op class, that builds the hardware for one node; an op it lacks raises an error naming
the node.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import singledispatch

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ...ir import (
    Bipolar,
    Dense,
    Dequantize,
    Fixed,
    Flatten,
    Graph,
    MultiThreshold,
    Node,
    Op,
    Quantize,
    ReLU,
    Requant,
    Reshape,
    TensorType,
)
from .activation import MultiThresholdUnit, ReLUUnit
from .common import vector_signature
from .dense import PRODUCTS, UnrolledDense
from .requant import RequantUnit

__all__ = ["DataflowTop", "UnrolledOptions", "hardware_chain", "unrolled_unit"]


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


@singledispatch
def unrolled_unit(op: Op, node: Node, in_type: TensorType, options: UnrolledOptions):
    """The unrolled hardware unit for ``node`` (a Component with ``i``, ``o`` and ``latency``),
    or None when the node is pure wiring. Raises NotImplementedError for ops without one."""
    supported = ", ".join(sorted(c.__name__ for c in unrolled_unit.registry if c is not object))
    raise NotImplementedError(
        f"{node.describe()}: {type(op).__name__} has no 'unrolled' hardware implementation "
        f"yet; supported ops: {supported}"
    )


@unrolled_unit.register
def _(op: Dense, node: Node, in_type: TensorType, options: UnrolledOptions):
    return UnrolledDense(
        op,
        in_type.dtype,
        node.type.dtype,
        levels_per_stage=options.levels_per_stage,
        products=options.products,
    )


@unrolled_unit.register
def _(op: Requant, node: Node, in_type: TensorType, options: UnrolledOptions):
    return RequantUnit(
        op, in_type.dtype, node.type.dtype, in_type.shape, registered=options.register_requant
    )


@unrolled_unit.register
def _(op: ReLU, node: Node, in_type: TensorType, options: UnrolledOptions):
    return ReLUUnit(in_type.dtype, in_type.shape, op)


@unrolled_unit.register
def _(op: MultiThreshold, node: Node, in_type: TensorType, options: UnrolledOptions):
    return MultiThresholdUnit(
        op, in_type.dtype, node.type.dtype, in_type.shape, registered=options.register_threshold
    )


@unrolled_unit.register(Flatten)
@unrolled_unit.register(Reshape)
def _(op, node: Node, in_type: TensorType, options: UnrolledOptions):
    return None  # row-major reshapes keep the flat element order: no logic


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


class DataflowTop(wiring.Component):
    """A chain graph in hardware: one unit per integer node, streams joined in order.

    ``i`` takes vectors of the raws after the graph's first ``Quantize``; ``o`` gives
    the raws of its last integer node. ``latency`` is the sum of the units' latencies
    (cycles from an accepted input to its output when nothing stalls); II = 1.
    """

    def __init__(self, graph: Graph, options: UnrolledOptions | None = None) -> None:
        options = UnrolledOptions() if options is None else options
        if not isinstance(options, UnrolledOptions):
            raise TypeError(f"DataflowTop: options must be UnrolledOptions, not {options!r}")
        self.graph, self.options = graph, options
        self.in_type, nodes, self.out_type = hardware_chain(graph)
        types = graph.types()
        self.units: list[tuple[str, wiring.Component]] = []
        t = self.in_type
        for n in nodes:
            unit = unrolled_unit(n.op, n, t, options)
            if unit is not None:
                self.units.append((n.name, unit))
            t = types[n.name]
        self.latency = sum(u.latency for _, u in self.units)
        super().__init__(
            {
                "i": In(vector_signature(self.in_type.dtype, self.in_type.size)),
                "o": Out(vector_signature(self.out_type.dtype, self.out_type.size)),
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
