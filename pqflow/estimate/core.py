"""``estimate(graph or design, device) -> Estimate``: per-node resources and cycles, and totals.

Every hardware node of the design's dataflow chain (the integer part of the graph, as
``pqflow.hwgen.amaranth.top.hardware_chain`` sees it) is costed by the model registered
for its op class and implementation style (``pqflow.estimate.models``); a node without
a model raises ``EstimateError`` naming the node and the op. Totals add the nodes'
resources; the chain's latency is the sum of the nodes' latencies, its initiation
interval the slowest node's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import UserError
from ..hwgen.design import MATRIX_OPS, Design, Impl
from ..ir import Flatten, Graph, Node, Reshape, TensorType
from .device import Device
from .device import device as _device

__all__ = ["Estimate", "EstimateError", "NodeEstimate", "estimate"]

RESOURCES = ("lut", "ff", "dsp", "bram", "uram")


class EstimateError(UserError, NotImplementedError):
    """A node has no resource model for its op and style (the message names both)."""


@dataclass(frozen=True)
class NodeEstimate:
    """One node's cost: resources, ``latency`` (cycles from input taken to output offered,
    no stalls) and ``ii`` (cycles per vector; for a data-dependent unit, the worst case),
    plus the model's structural ``features`` (what the coefficients multiply)."""

    node: str
    op: str
    style: str
    lut: float
    ff: float
    dsp: int
    bram: int
    latency: int
    ii: int
    uram: int = 0
    features: dict = field(default_factory=dict)

    def resources(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in RESOURCES}


@dataclass(frozen=True)
class Estimate:
    """A whole design's estimate on ``device``: per-node entries and chain totals."""

    device: str
    nodes: tuple[NodeEstimate, ...]

    @property
    def lut(self) -> float:
        return sum(n.lut for n in self.nodes)

    @property
    def ff(self) -> float:
        return sum(n.ff for n in self.nodes)

    @property
    def dsp(self) -> int:
        return sum(n.dsp for n in self.nodes)

    @property
    def bram(self) -> int:
        return sum(n.bram for n in self.nodes)

    @property
    def uram(self) -> int:
        return sum(n.uram for n in self.nodes)

    @property
    def latency(self) -> int:
        """Cycles from an input vector taken to its output offered: the sum along the chain."""
        return sum(n.latency for n in self.nodes)

    @property
    def ii(self) -> int:
        """Initiation interval of the chain: the slowest node's (1 for an empty chain)."""
        return max((n.ii for n in self.nodes), default=1)

    def totals(self) -> dict:
        return {
            "lut": round(self.lut),
            "ff": round(self.ff),
            "dsp": self.dsp,
            "bram": self.bram,
            "uram": self.uram,
            "latency": self.latency,
            "ii": self.ii,
        }

    def node(self, name: str) -> NodeEstimate:
        for n in self.nodes:
            if n.node == name:
                return n
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "device": self.device,
            "totals": self.totals(),
            "nodes": [asdict(n) for n in self.nodes],
        }


@dataclass(frozen=True)
class NodeContext:
    """What a model sees of a node: the node, its input and output types, its
    implementation (``Unrolled``/``Folded``/``Sparse`` for matrix nodes, else None), the
    shared unit options and the device."""

    node: Node
    in_type: TensorType
    out_type: TensorType
    impl: Impl | None
    design: Design
    device: Device

    @property
    def style(self) -> str:
        return self.impl.style if self.impl is not None else "unit"


def estimate(source: Graph | Design, device: Device | str = "xc7z020", **options) -> Estimate:
    """Estimate a design's resources and cycles on ``device``.

    ``source`` is a ``Design`` or a ``Graph`` (built as ``Design.uniform(graph, "unrolled",
    **options)``, as ``generate_verilog`` does). Raises ``EstimateError`` naming the node
    and op for a node without a model.
    """
    from .models import node_model

    dev = _device(device)
    if isinstance(source, Design):
        if options:
            raise TypeError("estimate: options apply to a Graph, not to a Design")
        design = source
    elif isinstance(source, Graph):
        style = options.pop("style", "unrolled")
        design = Design.uniform(source, style, **options)
    else:
        raise TypeError(f"estimate: source must be a Graph or a Design, not {source!r}")
    out = [node_model(ctx) for ctx in contexts(design, dev)]
    return Estimate(dev.name, tuple(out))


def contexts(design: Design, device: Device) -> list[NodeContext]:
    """The hardware nodes of a design's chain (wiring-only reshapes left out), in order."""
    from ..hwgen.amaranth.top import hardware_chain

    in_type, nodes, _ = hardware_chain(design.graph)
    types = design.graph.types()
    out = []
    t = in_type
    for n in nodes:
        if not isinstance(n.op, Flatten | Reshape):
            impl = design.impl(n.name) if isinstance(n.op, MATRIX_OPS) else None
            out.append(NodeContext(n, t, types[n.name], impl, design, device))
        t = types[n.name]
    return out
