"""Stream plumbing of dataflow graphs: ``StreamFork`` (one producer, several consumers) and
``SkipFIFO`` (the buffer on a skip edge).

``StreamFork`` hands every beat of ``i`` to each of its outputs ``o[k]`` exactly once.
The consumers take it independently (each output offers the beat until its consumer has
taken it); the fork takes the beat from the producer on the edge the last consumer takes
it, so no beat is lost or repeated whatever the back-pressure of each consumer. It has no
register on the data path (latency 0); a consumer can run at most one beat ahead of
another.

``SkipFIFO`` is an ``amaranth.lib.fifo.SyncFIFOBuffered`` (block-RAM friendly: registered
read) between two streams; ``depth`` beats of storage, ``latency`` 2 (a beat written into
an empty FIFO is offered two edges later).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .schedule import Schedule, elementwise

__all__ = ["SkipFIFO", "StreamFork"]


class StreamFork(wiring.Component):
    """One stream ``i`` to ``n`` streams ``o[0..n-1]`` of the same signature (see the module)."""

    latency = 0

    def __init__(self, signature: stream.Signature, n: int) -> None:
        if not isinstance(signature, stream.Signature):
            raise TypeError(f"StreamFork: signature must be a stream.Signature, not {signature!r}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise ValueError(f"StreamFork: n must be an integer >= 2, not {n!r}")
        self.n = n
        super().__init__({"i": In(signature), "o": Out(signature).array(n)})

    def elaborate(self, platform) -> Module:
        m = Module()
        taken = Signal(self.n, name="taken")  # consumers that took the current beat
        done = []
        for k, o in enumerate(self.o):
            m.d.comb += [o.payload.eq(self.i.payload), o.valid.eq(self.i.valid & ~taken[k])]
            done.append(taken[k] | o.ready)
        all_done = Signal(name="all_done")
        m.d.comb += self.i.ready.eq(all_done)
        acc = done[0]
        for d in done[1:]:
            acc = acc & d
        m.d.comb += all_done.eq(acc)
        with m.If(self.i.valid):
            with m.If(all_done):
                m.d.sync += taken.eq(0)
            with m.Else():
                for k, o in enumerate(self.o):
                    with m.If(o.ready):
                        m.d.sync += taken[k].eq(1)
        return m


class SkipFIFO(wiring.Component):
    """``depth`` beats of buffering between ``i`` and ``o`` (``SyncFIFOBuffered``).

    ``depth`` >= 2 (a one-entry ``SyncFIFOBuffered`` passes only every other cycle);
    ``beats`` is the number of beats per sample, for the ``schedule``.
    """

    latency = 2

    def __init__(self, signature: stream.Signature, depth: int, beats: int = 1) -> None:
        if not isinstance(signature, stream.Signature):
            raise TypeError(f"SkipFIFO: signature must be a stream.Signature, not {signature!r}")
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 2:
            raise ValueError(f"SkipFIFO: depth must be an integer >= 2, not {depth!r}")
        self.depth = depth
        self.schedule: Schedule = elementwise(beats, self.latency)
        super().__init__({"i": In(signature), "o": Out(signature)})

    def elaborate(self, platform) -> Module:
        m = Module()
        width = self.i.payload.shape().size
        m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=width, depth=self.depth)
        m.d.comb += [
            q.w_data.eq(self.i.payload.as_value()),
            q.w_en.eq(self.i.valid),
            self.i.ready.eq(q.w_rdy),
            self.o.payload.eq(q.r_data),
            self.o.valid.eq(q.r_rdy),
            q.r_en.eq(self.o.ready),
        ]
        return m
