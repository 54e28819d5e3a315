"""Deterministic Verilog for a chain graph: ``generate_verilog(graph) -> VerilogDesign``.

The module's ports (names as Amaranth emits them):

==============  ====  ==========================================================
``clk``         in    clock, rising edge
``rst``         in    synchronous reset, active high
``i__valid``    in    an input vector is offered
``i__ready``    out   the input vector is taken on this edge (when valid)
``i__payload``  in    ``in_count`` raws, element k at bits [k*in_width, (k+1)*in_width)
``o__valid``    out   an output vector is offered
``o__ready``    in    the output vector is taken on this edge (when valid)
``o__payload``  out   ``out_count`` raws, element k at bits [k*out_width, (k+1)*out_width)
==============  ====  ==========================================================

An (H, W, C) tensor travels as H * W beats of C raws, raster order (``in_beats``,
``out_beats``); a vector is one beat. Raws are two's complement when signed.
``latency`` is the number of cycles from the edge an input is taken to the cycle its
output is first offered, without stalls.
Same graph and options give the same bytes (``emit_src=False``, no timestamps).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from amaranth.back import verilog

from ...ir import Graph
from ..design import STYLES, Design, DesignError
from .graph_top import dataflow_top

__all__ = ["STYLES", "VerilogDesign", "generate_verilog"]


@dataclass(frozen=True)
class VerilogDesign:
    """Generated Verilog and what a test bench needs to drive it (see the module docstring)."""

    text: str
    top: str
    in_width: int
    in_signed: bool
    in_count: int
    out_width: int
    out_signed: bool
    out_count: int
    latency: int | None
    in_frac: int = 0
    out_frac: int = 0
    cycles_per_vector: int | None = 1
    """Initiation interval with a ready consumer (None when it depends on the data)."""
    axis: bool = False
    """The ports are AXI-Stream (``pqflow.hwgen.amaranth.axis``), not ``i__*``/``o__*``."""
    design: Design | None = None
    fifo_depths: tuple[tuple[str, int], ...] = ()
    """Depth of each skip FIFO of a DAG design, by ``Add`` node (``DataflowGraphTop``)."""
    in_beats: int = 1
    """Input beats per sample: H * W for an (H, W, C) pixel stream (``in_count`` = C)."""
    out_beats: int = 1
    """Output beats per sample (``out_count`` raws each)."""

    @property
    def digest(self) -> str:
        """SHA-256 of the text: a key for build caches."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    def pack_input(self, raws) -> int:
        """One input vector of raws as the integer on ``i__payload``."""
        return _pack(raws, self.in_width, self.in_count)

    def unpack_output(self, word: int) -> np.ndarray:
        """The integer on ``o__payload`` as an int64 vector of raws."""
        return _unpack(word, self.out_width, self.out_signed, self.out_count)

    def unpack_input(self, word: int) -> np.ndarray:
        return _unpack(word, self.in_width, self.in_signed, self.in_count)

    def pack_output(self, raws) -> int:
        return _pack(raws, self.out_width, self.out_count)

    @property
    def port_names(self) -> dict:
        """The port names as ``pqflow.sim.StreamPorts(**port_names)`` takes them
        (empty: Amaranth's defaults; the AXI-Stream names when ``axis``)."""
        if not self.axis:
            return {}
        from .axis import AXIS_PORTS

        return dict(AXIS_PORTS)

    def bench_args(self, in_raws, expected_raws) -> dict:
        """Keyword arguments of ``pqflow.sim.verify_stream`` for (N * in_beats, in_count)
        input and (N * out_beats, out_count) expected raws (beats per sample included):
        the raws themselves, or for an AXI-Stream design the tdata words as bytes
        (unsigned 8-bit elements), so padding is compared too.
        Add ``ports=StreamPorts(**self.port_names)``."""
        ins, exp = np.asarray(in_raws), np.asarray(expected_raws)
        if not self.axis:
            return dict(
                in_vectors=ins,
                in_width=self.in_width,
                in_signed=self.in_signed,
                expected=exp,
                out_width=self.out_width,
                out_signed=self.out_signed,
                in_beats=self.in_beats,
                out_beats=self.out_beats,
            )
        return dict(
            in_vectors=_bytes([self.pack_input(v) for v in ins], self.in_width * self.in_count),
            in_width=8,
            in_signed=False,
            expected=_bytes([self.pack_output(v) for v in exp], self.out_width * self.out_count),
            out_width=8,
            out_signed=False,
            in_beats=self.in_beats,
            out_beats=self.out_beats,
        )


def _bytes(words: list[int], bits: int) -> np.ndarray:
    n = -(-bits // 8)
    return np.array([list(w.to_bytes(n, "little")) for w in words], dtype=np.int64).reshape(-1, n)


def _pack(raws, width: int, count: int) -> int:
    values = [int(v) for v in np.asarray(raws).reshape(-1)]
    if len(values) != count:
        raise ValueError(f"expected {count} raws, got {len(values)}")
    mask, word = (1 << width) - 1, 0
    for k, v in enumerate(values):
        word |= (v & mask) << (k * width)
    return word


def _unpack(word: int, width: int, signed: bool, count: int) -> np.ndarray:
    mask = (1 << width) - 1
    out = np.empty(count, dtype=np.int64)
    for k in range(count):
        v = (int(word) >> (k * width)) & mask
        if signed and v >> (width - 1):
            v -= 1 << width
        out[k] = v
    return out


@contextlib.contextmanager
def _no_comb_cycle_check() -> Iterator[None]:
    """Skip Amaranth's combinational-loop check while converting a ``DataflowTop``.

    The check walks every bit's fan-in (quadratic in adder widths) and takes half of the
    conversion time of a large unrolled layer; a ``DataflowTop`` is feed-forward by
    construction (adder trees, registers, a ready chain running against the data), so it
    cannot find anything. The output is byte-identical either way (tested). Falls back
    to the normal conversion if Amaranth's internals move.
    """
    try:
        from amaranth.hdl import _nir
    except ImportError:  # pragma: no cover - a future Amaranth
        yield
        return
    check = getattr(_nir.Netlist, "check_comb_cycles", None)
    if check is None:  # pragma: no cover
        yield
        return
    _nir.Netlist.check_comb_cycles = lambda self: None
    try:
        yield
    finally:
        _nir.Netlist.check_comb_cycles = check


def generate_verilog(
    source: Graph | Design,
    style: str = "unrolled",
    name: str | None = None,
    *,
    axis: bool = False,
    check_cycles: bool = False,
    fifo_depths: Mapping[str, int] | None = None,
    **options,
) -> VerilogDesign:
    """Verilog for the integer part of a graph: a chain (``DataflowTop``) or a DAG with one
    input and one output, such as a residual network (``DataflowGraphTop``: forks, skip
    FIFOs sized from the units' schedules, ``Add`` joins).

    ``source`` is a ``Design`` (its per-node implementations and name are used; ``style``
    and ``options`` must then be left out) or a ``Graph``, built as
    ``Design.uniform(graph, style, **options)``: ``options`` are the fields of the style's
    ``Impl`` (``levels_per_stage``/``products`` for ``unrolled``, ``pe``/``simd`` for
    ``folded``, ``pe`` for ``sparse``) and of ``UnitOptions``. ``name`` defaults to the
    design's (``pqflow_top``). ``axis=True`` wraps the top in AXI-Stream ports
    (``pqflow.hwgen.amaranth.axis.AxisTop``). ``fifo_depths`` overrides the depth of the
    skip FIFO of ``Add`` nodes by name (at least the computed depth; see
    ``VerilogDesign.fifo_depths`` for the chosen ones).

    Raises ``DesignError`` (a ValueError) for an unknown style or a folding factor that
    does not divide, TypeError for an unknown option, ``HardwareError`` (a
    NotImplementedError) naming the node for an op the style lacks.
    ``check_cycles=True`` runs Amaranth's combinational-loop check (slow on big layers;
    see ``_no_comb_cycle_check``); the text is the same either way.
    """
    if name is not None and (not isinstance(name, str) or not name.isidentifier()):
        raise DesignError(f"name must be a Verilog identifier, not {name!r}")
    if isinstance(source, Design):
        if options or style != "unrolled":
            raise TypeError("generate_verilog: style and options apply to a Graph, not a Design")
        design = source
        if name is not None and name != design.name:
            design = Design(design.graph, design.impls, design.options, name)
    else:
        design = Design.uniform(source, style, name=name or "pqflow_top", **options)
    top = dataflow_top(design, fifo_depths=fifo_depths)
    module = top
    if axis:
        from .axis import AxisTop

        module = AxisTop(top)
    with contextlib.nullcontext() if check_cycles else _no_comb_cycle_check():
        text = verilog.convert(module, name=design.name, emit_src=False)
    it, ot = top.in_type, top.out_type
    return VerilogDesign(
        text=text,
        top=design.name,
        in_width=it.dtype.width,
        in_signed=bool(it.dtype.signed),
        in_count=top.in_count,
        out_width=ot.dtype.width,
        out_signed=bool(ot.dtype.signed),
        out_count=top.out_count,
        latency=top.latency,
        in_frac=it.dtype.frac,
        out_frac=ot.dtype.frac,
        cycles_per_vector=top.cycles_per_vector,
        axis=axis,
        design=design,
        fifo_depths=tuple(sorted(getattr(top, "fifo_depths", {}).items())),
        in_beats=top.in_beats,
        out_beats=top.out_beats,
    )
