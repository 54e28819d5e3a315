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
from ..ir import Add, Flatten, Graph, Node, Reshape, TensorType
from .device import Device
from .device import device as _device

__all__ = ["DataCycles", "Estimate", "EstimateError", "NodeEstimate", "cycles_on_data", "estimate"]

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
    inputs: tuple[str, ...] = ()
    """The values the node reads (for the critical path of a DAG)."""
    schedule: object = None
    """Its per-sample beat ``Schedule`` on a pixel stream (None: one beat per sample)."""
    pace: float | None = None
    """Fewest cycles between two of its output beats (None: from the schedule)."""

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
        """Cycles from an input vector taken to its output offered: the sum along the chain
        (the longest path through a DAG)."""
        if any(n.schedule is not None for n in self.nodes) and self._chain():
            return self._stream_latency()
        done: dict[str, int] = {}
        for n in self.nodes:
            done[n.node] = n.latency + max((done.get(v, 0) for v in n.inputs), default=0)
        return max(done.values(), default=0)

    def _chain(self) -> bool:
        return all(
            len(b.inputs) == 1 and b.inputs[0] == a.node
            for a, b in zip(self.nodes, self.nodes[1:], strict=False)
        )

    def _stream_latency(self) -> int:
        """First input beat to first output beat of a pixel-stream chain: each unit's
        output beat j leaves ``latency`` cycles after its ``need[j]``-th input beat and no
        sooner than ``pace`` after beat j - 1 (``hwgen``'s ``stream_latency``)."""
        from ..hwgen.amaranth.schedule import elementwise
        from ..hwgen.amaranth.top import stream_latency

        units = []
        for n in self.nodes:
            s = n.schedule or elementwise(1, n.latency, n.ii)
            units.append((s, n.pace if n.pace is not None else s.cycles_per_sample / s.out_beats))
        return stream_latency(units, units[0][0].in_beats)

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
    reads: tuple[str, ...] = ()
    """The hardware values the node reads (through wiring-only reshapes)."""
    facts: dict = field(default_factory=dict, compare=False, hash=False)
    """Per hardware value, the elements synthesis folds or deletes
    (:func:`pqflow.estimate.liveness.analyze`; empty: assume none)."""

    def facts_of(self, value: str):
        """The ``Facts`` of a value (None when not analyzed)."""
        return self.facts.get(value)

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
    ctxs = contexts(design, dev)
    out = [node_model(ctx) for ctx in ctxs]
    if any(isinstance(ctx.node.op, Add) for ctx in ctxs):
        out += _fifos(design, dev)
    return Estimate(dev.name, tuple(out))


def contexts(design: Design, device: Device) -> list[NodeContext]:
    """The hardware nodes of a design (a chain or a DAG, in topological order); reshapes
    that keep the beats are wiring and left out (a pixel stream becoming a vector is a
    deserializer and kept)."""
    from ..hwgen.amaranth.common import beat_layout
    from ..hwgen.amaranth.graph_top import hardware_graph
    from .liveness import analyze

    hw = hardware_graph(design.graph)
    types = design.graph.types()
    facts = analyze(design, device)
    out = []
    alias: dict[str, str] = {}
    for n in hw.nodes:
        t = types[n.inputs[0]]
        reads = tuple(alias.get(v, v) for v in n.inputs)
        if isinstance(n.op, Flatten | Reshape):
            (bi, si), (bo, so) = beat_layout(t.shape), beat_layout(types[n.name].shape)
            if (bi, si) == (bo, so) or bi == bo == 1:
                alias[n.name] = reads[0]
                continue
        impl = design.impl(n.name) if isinstance(n.op, MATRIX_OPS) else None
        out.append(NodeContext(n, t, types[n.name], impl, design, device, reads, facts))
    return out


def _fifos(design: Design, device: Device) -> list[NodeEstimate]:
    """The skip FIFOs of a DAG design, sized as ``DataflowGraphTop`` sizes them."""
    from ..hwgen.amaranth.common import beat_layout
    from ..hwgen.amaranth.graph_top import DataflowGraphTop
    from .models import _width, coefficient_key, coefficients, fifo_features

    top = DataflowGraphTop(design)  # sizes the FIFOs; never elaborated here
    for obj in (top, *(u for _, u in top.units)):
        obj._MustUse__silence = True
    types = design.graph.types()
    out = []
    for add, depth in top.fifo_depths.items():
        node = design.graph.node(add)
        operand = node.inputs[top._fifo_port[add]]
        t = types[operand]
        beats, shape = beat_layout(t.shape)
        n = 1
        for d in shape:
            n *= d
        f = fifo_features(device, _width(t.dtype)[0] * n, depth, beats)
        c = coefficients(coefficient_key(device))
        lut = sum(c["lut"].get(k, 0.0) * v for k, v in f.lut.items())
        ff = sum(c["ff"].get(k, 0.0) * v for k, v in f.ff.items())
        out.append(
            NodeEstimate(
                node=f"{add}.fifo",
                op="SkipFIFO",
                style="unit",
                lut=max(lut, 0.0),
                ff=max(ff, 0.0),
                dsp=0,
                bram=f.bram,
                latency=0,  # on the operand that runs ahead: never the critical path
                ii=f.ii,
                features={"lut": dict(f.lut), "ff": dict(f.ff)},
                inputs=(operand,),
            )
        )
    return out


@dataclass(frozen=True)
class DataCycles:
    """Cycles of a design on real data, per input sample (int64 arrays): ``latency`` (its
    input taken to its output offered, through an empty pipeline) and ``cycles`` (the
    interval its slowest unit needs, the initiation interval it imposes on a stall-free
    stream). ``ii`` is the mean interval between outputs over samples 1..N-1, what a
    simulator measures over the same stream."""

    latency: object
    cycles: object

    @property
    def ii(self) -> float:
        c = self.cycles
        return float(c[1:].mean()) if len(c) > 1 else float(c[0])


def cycles_on_data(design: Design, x, device: Device | str = "xc7z020") -> DataCycles:
    """Latency and cycles of ``design`` on the float graph inputs ``x`` (a batch).

    A data-dependent unit (``sparse``: it skips zero activations) takes the cycles of the
    inputs the oracle computes for it; every other unit its fixed latency and II."""
    import numpy as np

    from ..hwgen.design import Sparse
    from ..kernels import run
    from .models import expected_sparse_cycles, node_model

    dev = _device(device)
    ctxs = contexts(design, dev)
    n = len(x)
    latency = np.zeros(n, dtype=np.int64)
    cycles = np.ones(n, dtype=np.int64)
    dynamic = [c for c in ctxs if isinstance(c.impl, Sparse)]
    acts = run(design.graph, x, outputs=[c.node.inputs[0] for c in dynamic]) if dynamic else {}
    for ctx in ctxs:
        if isinstance(ctx.impl, Sparse):
            a = np.asarray(acts[ctx.node.inputs[0]]).reshape(n, -1)
            c = np.asarray(expected_sparse_cycles(ctx, a), dtype=np.int64)
            latency += c + 1
            cycles = np.maximum(cycles, c)
        else:
            e = node_model(ctx)
            latency += e.latency
            cycles = np.maximum(cycles, e.ii)
    return DataCycles(latency, cycles)
