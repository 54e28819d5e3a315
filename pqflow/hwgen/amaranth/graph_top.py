"""Dataflow tops for graphs that are not plain chains (fork, skip FIFO, join), and fusions.

``DataflowGraphTop`` builds a graph with one input and one output whose integer nodes
form a DAG (a residual network): every node becomes a streaming unit as in
``DataflowTop``; a value read by several units goes through a ``StreamFork``; an ``Add``
joins its two operands beat by beat (``AddUnit``); and the operand that arrives first
(the skip edge) goes through a ``SkipFIFO`` whose depth is computed from the units'
``schedule``s (:func:`size_skip_fifos`), so that the design neither deadlocks nor runs
slower than its analytic II. The depths are in ``fifo_depths`` (by ``Add`` node name);
``fifo_depths=`` overrides them, and a depth below the computed one raises
``HardwareError``.

A *fusion* lets a generator implement a connected group of IR nodes as one streaming
unit (for example a gated convolution block, whose gate branch and convolution share one
input). Fusion finders are registered with :func:`register_fusion`; the graph top asks
each of them, in registration order, before it builds per-node units.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ...ir import Add, Bipolar, Dequantize, Fixed, Graph, Node, Quantize, TensorType
from ..design import MATRIX_OPS, Design, DesignError, HardwareError
from .add import AddUnit
from .common import beat_layout, vector_signature
from .fifo import SkipFIFO, StreamFork
from .schedule import Arrival, Schedule, fifo_depths
from .top import DataflowTop, UnrolledOptions, matrix_unit, op_unit

__all__ = [
    "FUSIONS",
    "DataflowGraphTop",
    "Fusion",
    "HardwareGraph",
    "beats_of",
    "dataflow_top",
    "hardware_graph",
    "register_fusion",
    "skip_fifo_depth",
]


@dataclass(frozen=True)
class Fusion:
    """IR nodes ``nodes`` built as one unit that reads the value ``input`` (one stream)
    and writes the value ``output``. ``build()`` returns the unit: a Component with
    ``i``, ``o``, ``latency``, ``cycles_per_vector`` and ``schedule``."""

    nodes: frozenset[str]
    input: str
    output: str
    build: Callable[[], wiring.Component]


FUSIONS: list[Callable[[Graph, Design], list[Fusion]]] = []


def register_fusion(
    finder: Callable[[Graph, Design], list[Fusion]],
) -> Callable[[Graph, Design], list[Fusion]]:
    """Register ``finder(graph, design) -> [Fusion, ...]`` (a decorator)."""
    FUSIONS.append(finder)
    return finder


def beats_of(t: TensorType) -> tuple[int, int]:
    """(beats per sample, raws per beat) of a value: an (H, W, C) tensor is H*W beats of C
    raws (one pixel per beat, raster order); anything else is one beat of all its raws
    (``common.beat_layout``)."""
    beats, shape = beat_layout(t.shape)
    return beats, TensorType(t.dtype, shape).size


# -- the integer DAG ----------------------------------------------------------------------


@dataclass(frozen=True)
class HardwareGraph:
    """The integer part of a graph: the value the hardware reads (``source``, after a
    leading ``Quantize``), the one it writes (``sink``, before a trailing ``Dequantize``),
    their types and the nodes between them in topological order."""

    source: str
    sink: str
    in_type: TensorType
    out_type: TensorType
    nodes: tuple[Node, ...]

    @property
    def is_chain(self) -> bool:
        prev = self.source
        for n in self.nodes:
            if n.inputs != (prev,):
                return False
            prev = n.name
        return prev == self.sink


def hardware_graph(graph: Graph) -> HardwareGraph:
    """The integer DAG of a one-input, one-output graph (ValueError when there is none).

    A ``Quantize`` that is the only reader of the graph input and a trailing
    ``Dequantize`` stay in software; every other node must be integer and feed the output.
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be a pqflow.ir.Graph, not {graph!r}")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(
            f"graph '{graph.name}' must have one input and one output for a dataflow design, "
            f"not {len(graph.inputs)} and {len(graph.outputs)}"
        )
    types = graph.types()
    nodes = list(graph.nodes)
    source = graph.inputs[0].name
    readers = graph.consumers(source)
    if len(readers) == 1 and isinstance(readers[0].op, Quantize):
        source = readers[0].name
        nodes.remove(readers[0])
    sink = graph.outputs[0]
    if sink != source and isinstance(graph.node(sink).op, Dequantize):
        nodes.remove(graph.node(sink))
        sink = graph.node(sink).inputs[0]
    # keep the nodes the sink depends on; every one of them must read hardware values
    needed, stack = set(), [sink]
    while stack:
        v = stack.pop()
        if v in needed or v == source:
            continue
        needed.add(v)
        node = next((n for n in nodes if n.name == v), None)
        if node is None:
            raise ValueError(
                f"graph '{graph.name}': value '{v}' is not computed by the integer part "
                f"between '{source}' and '{sink}'"
            )
        stack.extend(node.inputs)
    for n in nodes:
        if n.name not in needed:
            raise ValueError(
                f"{n.describe()}: does not feed the output '{graph.outputs[0]}'; a dataflow "
                "design computes only its one output"
            )
        if isinstance(n.op, Quantize | Dequantize):
            raise ValueError(
                f"{n.describe()}: float conversions are allowed only at the graph's edges "
                "(a leading Quantize, a trailing Dequantize)"
            )
    in_type, out_type = types[source], types[sink]
    for what, t in (("input", in_type), ("output", out_type)):
        if not isinstance(t.dtype, Fixed | Bipolar):
            raise ValueError(
                f"graph '{graph.name}': the hardware {what} must be integer raws, not {t}"
            )
    return HardwareGraph(source, sink, in_type, out_type, tuple(nodes))


# -- timing: when each beat of each value arrives -----------------------------------------


def skip_fifo_depth(ahead: Arrival, behind: Arrival, ii: float) -> tuple[int, int]:
    """(no-deadlock depth, full-throughput depth) of the ``SkipFIFO`` on the ``ahead``
    operand of an ``Add`` (:func:`~.schedule.fifo_depths` with the FIFO's latency; a
    ``SyncFIFOBuffered`` needs at least 2 entries for one beat per cycle)."""
    dead, full = fifo_depths(ahead, behind, ii, SkipFIFO.latency)
    return max(dead, 1), max(full, 2)


def _ahead(x: Arrival, y: Arrival) -> bool:
    """True when operand ``x`` is offered before ``y`` for some beat (it needs the FIFO)."""
    return any(a < b for a, b in zip(x.time, y.time, strict=True)) and sum(x.time) <= sum(y.time)


def unit_schedule(unit, in_type: TensorType, out_type: TensorType) -> Schedule:
    """The unit's ``schedule``, or the one its ``latency``/``cycles_per_vector`` imply for a
    unit without one (data-dependent units: their latency bound, one cycle per beat)."""
    s = getattr(unit, "schedule", None)
    if s is not None:
        return s
    bi, bo = beats_of(in_type)[0], beats_of(out_type)[0]
    lat = getattr(unit, "latency", 0)
    cpv = getattr(unit, "cycles_per_vector", 1) or 1
    need = tuple(range(1, bo + 1)) if bi == bo else (bi,) * bo
    return Schedule(bi, bo, need, lat, max(cpv, bi, bo))


# -- the top ------------------------------------------------------------------------------


def _design_of(owner: str, source, options) -> Design:
    if isinstance(source, Design):
        if options is not None:
            raise TypeError(f"{owner}: options apply to a Graph, not to a Design")
        return source
    if isinstance(source, Graph):
        options = UnrolledOptions() if options is None else options
        if not isinstance(options, UnrolledOptions):
            raise TypeError(f"{owner}: options must be UnrolledOptions, not {options!r}")
        return Design.uniform(source, "unrolled", **asdict(options))
    raise TypeError(f"{owner}: source must be a Graph or a Design, not {source!r}")


@dataclass
class _Unit:
    name: str
    component: wiring.Component
    reads: tuple[str, ...]  # values, in port order (i) or (a, b)
    writes: str
    schedule: Schedule | None = None


class DataflowGraphTop(wiring.Component):
    """A one-input, one-output DAG graph in hardware (see the module docstring).

    ``source`` is a ``Design`` or a ``Graph`` (built unrolled with ``options``).
    ``fifo_depths`` maps an ``Add`` node's name to the depth of its skip FIFO (at least
    the computed one). After construction: ``units`` (name, component), ``fifo_depths``
    (the depth of every skip FIFO, by ``Add`` name), ``fifo_operands`` (the operand value
    each one buffers), ``fifo_needs`` (name -> (no-deadlock depth, full-throughput
    depth)), ``latency`` (cycles from the first input beat taken to the first output beat
    offered, stall-free: exact for vectors, an estimate for pixel streams, whose input
    beats it spreads evenly over the II; None when a unit is data-dependent) and
    ``cycles_per_vector`` (the analytic II per sample; None when data-dependent).
    """

    def __init__(
        self,
        source: Graph | Design,
        options: UnrolledOptions | None = None,
        *,
        fifo_depths: Mapping[str, int] | None = None,
    ) -> None:
        design = _design_of("DataflowGraphTop", source, options)
        graph = design.graph
        self.design, self.graph = design, graph
        hw = hardware_graph(graph)
        self.hw = hw
        self.in_type, self.out_type = hw.in_type, hw.out_type
        types = graph.types()
        styles = sorted({impl.style for _, impl in design.impls}) or ["unrolled"]
        style = styles[0] if len(styles) == 1 else "/".join(styles)

        units: list[_Unit] = []
        alias: dict[str, str] = {}  # wiring-only values -> the value they equal
        covered: dict[str, Fusion] = {}
        hw_names = {n.name for n in hw.nodes}
        for finder in FUSIONS:
            for f in finder(graph, design):
                inside = set(f.nodes)
                if not inside <= hw_names or inside & set(covered):
                    continue
                for n in hw.nodes:
                    if n.name in inside and n.name != f.output:
                        outside = [c.name for c in graph.consumers(n.name) if c.name not in inside]
                        if outside or n.name == hw.sink:
                            raise HardwareError(
                                f"{n.describe()}: fused into '{f.output}' but also read by "
                                f"{', '.join(outside) or 'the output'}; unregister the fusion"
                            )
                covered.update((name, f) for name in inside)

        def canon(v: str) -> str:
            while v in alias:
                v = alias[v]
            return v

        built_fusions: set[str] = set()
        for n in hw.nodes:
            if n.name in covered:
                f = covered[n.name]
                if f.output not in built_fusions:
                    built_fusions.add(f.output)
                    units.append(_Unit(f.output, f.build(), (canon(f.input),), f.output))
                continue
            reads = tuple(canon(v) for v in n.inputs)
            if isinstance(n.op, Add):
                (ta, tb), beats = (types[v] for v in n.inputs), beats_of(n.type)
                unit = AddUnit(ta.dtype, tb.dtype, beats[1], beats[0])
            elif isinstance(n.op, MATRIX_OPS):
                unit = matrix_unit(n, types[n.inputs[0]], types[n.name], design.impl(n.name))
            else:
                unit = op_unit(n.op, n, types[n.inputs[0]], design.options, style)
            if unit is None:
                alias[n.name] = reads[0]
                continue
            units.append(_Unit(n.name, unit, reads, n.name))
        sink = canon(hw.sink)

        # analytic timing: per value, when its beats arrive
        cps = []
        for u in units:
            u.schedule = unit_schedule(u.component, types[u.reads[0]], types[u.writes])
            cps.append(
                None
                if getattr(u.component, "cycles_per_vector", 1) is None
                else u.schedule.cycles_per_sample
            )
        self.cycles_per_vector = None if None in cps else max(cps, default=1)
        ii = max((c or 1) for c in cps) if cps else 1
        in_beats = beats_of(hw.in_type)[0]
        arrival = {hw.source: Arrival.source(in_beats, ii / in_beats)}
        self.fifo_needs: dict[str, tuple[int, int]] = {}
        self.fifo_depths: dict[str, int] = {}
        self._fifo_port: dict[str, int] = {}  # Add unit -> operand port index with the FIFO
        overrides = dict(fifo_depths or {})
        for u in units:
            if isinstance(u.component, AddUnit):
                x, y = (arrival[v] for v in u.reads)
                k = 0 if _ahead(x, y) else 1 if _ahead(y, x) else None
                if k is not None:
                    ahead, behind = (x, y) if k == 0 else (y, x)
                    dead, full = skip_fifo_depth(ahead, behind, ii)
                    depth = overrides.pop(u.name, full)
                    _check_depth(u.name, u.reads[k], depth, dead, full)
                    self.fifo_needs[u.name] = (dead, full)
                    self.fifo_depths[u.name] = depth
                    self._fifo_port[u.name] = k
                    t = [a + SkipFIFO.latency for a in ahead.time]
                    ahead = Arrival(ahead.need, tuple(t))
                    x, y = (ahead, behind) if k == 0 else (behind, ahead)
                arrival[u.writes] = x.join(y).through(u.schedule)
            else:
                arrival[u.writes] = arrival[u.reads[0]].through(u.schedule)
        if overrides:
            known = ", ".join(sorted(self.fifo_depths)) or "none"
            raise DesignError(
                f"fifo_depths: {', '.join(map(repr, sorted(overrides)))} is not an Add with a "
                f"skip FIFO in graph '{graph.name}'; its skip FIFOs are {known}"
            )
        data_dependent = any(getattr(u.component, "latency", None) is None for u in units)
        self.latency = (
            None
            if data_dependent or self.cycles_per_vector is None
            else int(round(arrival[sink].time[0]))
        )
        self.arrival = arrival
        self.fifo_operands: dict[str, str] = {
            add: next(u.reads[k] for u in units if u.name == add)
            for add, k in self._fifo_port.items()
        }
        self.in_beats, self.in_count = beats_of(hw.in_type)
        self.out_beats, self.out_count = beats_of(hw.out_type)
        self.units = [(u.name, u.component) for u in units]
        self._units, self._sink = units, sink
        super().__init__(
            {
                "i": In(vector_signature(hw.in_type.dtype, beats_of(hw.in_type)[1])),
                "o": Out(vector_signature(hw.out_type.dtype, beats_of(hw.out_type)[1])),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        producer = {u.writes: u for u in self._units}
        consumers: dict[str, list] = {}
        for u in self._units:
            m.submodules[u.name] = u.component
            ports = [u.component.i] if len(u.reads) == 1 else [u.component.a, u.component.b]
            for k, (v, port) in enumerate(zip(u.reads, ports, strict=True)):
                if self._fifo_port.get(u.name) == k:
                    beats = beats_of(self.graph.types()[v])[0]
                    q = SkipFIFO(port.signature.flip(), self.fifo_depths[u.name], beats)
                    m.submodules[f"skip_{u.name}"] = q
                    wiring.connect(m, q.o, port)
                    port = q.i
                consumers.setdefault(v, []).append(port)
        consumers.setdefault(self._sink, []).append(wiring.flipped(self.o))
        for v, sinks in consumers.items():
            src = producer[v].component.o if v in producer else wiring.flipped(self.i)
            if len(sinks) == 1:
                wiring.connect(m, src, sinks[0])
                continue
            fork = StreamFork(src.signature, len(sinks))
            m.submodules[f"fork_{v}"] = fork
            wiring.connect(m, src, fork.i)
            for k, s in enumerate(sinks):
                wiring.connect(m, fork.o[k], s)
        return m


def _check_depth(add: str, operand: str, depth: int, dead: int, full: int) -> None:
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 2:
        raise DesignError(
            f"fifo_depths['{add}'] must be an integer >= 2 (a SyncFIFOBuffered), not {depth!r}"
        )
    if depth < full:
        harm = "deadlocks" if depth < dead else "loses throughput"
        raise HardwareError(
            f"skip FIFO of Add '{add}' (operand '{operand}'): depth {depth} {harm}, it needs "
            f"{full} (no deadlock from {dead}); set fifo_depths['{add}'] >= {full} or drop "
            "the override"
        )


def dataflow_top(
    design: Design, *, fifo_depths: Mapping[str, int] | None = None
) -> DataflowTop | DataflowGraphTop:
    """The top of ``design``: a ``DataflowTop`` for a chain graph (no fusion, no FIFO
    override), else a ``DataflowGraphTop``."""
    if not isinstance(design, Design):
        raise TypeError(f"dataflow_top: design must be a Design, not {design!r}")
    fused = any(finder(design.graph, design) for finder in FUSIONS)
    if hardware_graph(design.graph).is_chain and not fused and not fifo_depths:
        return DataflowTop(design)
    return DataflowGraphTop(design, fifo_depths=fifo_depths)
