"""``AxisTop``: a ``DataflowTop`` behind AXI-Stream ports, ready for a vendor block design.

Ports of the generated Verilog module (``generate_verilog(..., axis=True)``):

=================  ====  =========================================================
``ap_clk``         in    clock, rising edge
``ap_rst_n``       in    synchronous reset, active low
``s_axis_tdata``   in    one input vector: the raws packed element 0 first (as ``i__payload``),
                         zero-padded to a multiple of 8 bits (the padding is ignored)
``s_axis_tvalid``  in    the beat is offered
``s_axis_tready``  out   the beat is taken on this edge (when valid)
``s_axis_tlast``   in    ignored (a sample is ``in_beats`` beats: one, or H * W pixels)
``m_axis_tdata``   out   one output vector, packed the same way, padding bits zero
``m_axis_tvalid``  out   the beat is offered
``m_axis_tready``  in    the beat is taken on this edge (when valid)
``m_axis_tlast``   out   1 on the last beat of each sample (a packet per sample): always
                         1 for a vector output, every H * W-th beat for a pixel stream
=================  ====  =========================================================

No ``tkeep``/``tstrb`` (every byte is valid). Latency and initiation interval are the
core's: the wrapper is wires only.
"""

from __future__ import annotations

from amaranth.hdl import ClockDomain, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .top import DataflowTop

__all__ = ["AXIS_PORTS", "AxisTop", "tdata_bits"]

AXIS_PORTS = {
    "clk": "ap_clk",
    "rst": "ap_rst_n",
    "rst_active_high": False,
    "in_valid": "s_axis_tvalid",
    "in_ready": "s_axis_tready",
    "in_data": "s_axis_tdata",
    "out_valid": "m_axis_tvalid",
    "out_ready": "m_axis_tready",
    "out_data": "m_axis_tdata",
}
"""The wrapper's port names as ``pqflow.sim.StreamPorts(**AXIS_PORTS)`` takes them."""


def tdata_bits(payload_bits: int) -> int:
    """``payload_bits`` rounded up to a whole number of bytes (AXI-Stream tdata width)."""
    return -(-payload_bits // 8) * 8


class AxisTop(wiring.Component):
    """``core`` (a ``DataflowTop`` or ``DataflowGraphTop``) with AXI-Stream ports; see the
    module docstring."""

    def __init__(self, core: DataflowTop) -> None:
        from .graph_top import DataflowGraphTop

        if not isinstance(core, DataflowTop | DataflowGraphTop):
            raise TypeError(
                f"AxisTop: core must be a DataflowTop or DataflowGraphTop, not {core!r}"
            )
        self.core = core
        self.in_bits = core.in_type.dtype.width * core.in_count  # one beat
        self.out_bits = core.out_type.dtype.width * core.out_count
        self.latency = core.latency
        self.cycles_per_vector = core.cycles_per_vector
        super().__init__(
            {
                "ap_clk": In(1),
                "ap_rst_n": In(1),
                "s_axis_tdata": In(tdata_bits(self.in_bits)),
                "s_axis_tvalid": In(1),
                "s_axis_tready": Out(1),
                "s_axis_tlast": In(1),
                "m_axis_tdata": Out(tdata_bits(self.out_bits)),
                "m_axis_tvalid": Out(1),
                "m_axis_tready": In(1),
                "m_axis_tlast": Out(1),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        m.domains.sync = sync = ClockDomain("sync")
        m.d.comb += [sync.clk.eq(self.ap_clk), sync.rst.eq(~self.ap_rst_n)]
        m.submodules.core = core = self.core
        m.d.comb += [
            core.i.payload.as_value().eq(self.s_axis_tdata[: self.in_bits]),
            core.i.valid.eq(self.s_axis_tvalid),
            self.s_axis_tready.eq(core.i.ready),
            self.m_axis_tdata.eq(core.o.payload.as_value()),
            self.m_axis_tvalid.eq(core.o.valid),
            core.o.ready.eq(self.m_axis_tready),
        ]
        beats = getattr(self.core, "out_beats", 1)
        if beats == 1:
            m.d.comb += self.m_axis_tlast.eq(1)
            return m
        count = Signal(range(beats), name="out_beat")
        m.d.comb += self.m_axis_tlast.eq(count == beats - 1)
        with m.If(core.o.valid & core.o.ready):
            m.d.sync += count.eq(count + 1)
            with m.If(count == beats - 1):
                m.d.sync += count.eq(0)
        return m
