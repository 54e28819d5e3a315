"""``AddUnit``: the residual ``Add``, joining two streams beat by beat.

Each beat of ``a`` and the beat of ``b`` with the same index are taken together (on the
same edge) and summed exactly after aligning both to the larger ``frac`` with left shifts,
as ``pqflow.ir.Add`` defines it. One register stage on the output (latency 1, one beat
per cycle with a ready consumer).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ...ir import Add, Fixed, IRError, TensorType
from .common import Pipeline, check_type, drive_vector, vector_signature
from .schedule import Schedule, elementwise

__all__ = ["AddUnit"]


class _Join:
    """The two-operand handshake seen by a ``Pipeline`` as one input stream."""

    def __init__(self, m: Module, a, b) -> None:
        self.valid = Signal(name="join_valid")
        self.ready = Signal(name="join_ready")
        m.d.comb += [
            self.valid.eq(a.valid & b.valid),
            a.ready.eq(self.ready & b.valid),
            b.ready.eq(self.ready & a.valid),
        ]


class AddUnit(wiring.Component):
    """``o = (a << (f - fa)) + (b << (f - fb))`` per element, ``f = max(fa, fb)``.

    ``a_type``/``b_type`` are the operands' element types, ``n`` the raws per beat and
    ``beats`` the beats per sample (for the ``schedule``). Ports ``a``, ``b`` (in) and
    ``o`` (out) are vector streams of ``n`` raws.
    """

    latency = 1
    cycles_per_vector = 1

    def __init__(self, a_type: Fixed, b_type: Fixed, n: int, beats: int = 1) -> None:
        check_type("AddUnit", "a_type", a_type)
        check_type("AddUnit", "b_type", b_type)
        for name, v in (("n", n), ("beats", beats)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"AddUnit: {name} must be a positive integer, not {v!r}")
        try:
            out = Add().infer(TensorType(a_type, (n,)), TensorType(b_type, (n,)))
        except IRError as e:
            raise ValueError(f"AddUnit: {e}") from None
        self.a_type, self.b_type, self.out_type, self.n = a_type, b_type, out.dtype, n
        self.schedule: Schedule = elementwise(beats, self.latency)
        super().__init__(
            {
                "a": In(vector_signature(a_type, n)),
                "b": In(vector_signature(b_type, n)),
                "o": Out(vector_signature(self.out_type, n)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        pipe = Pipeline(m, _Join(m, self.a, self.b), self.o, self.latency)
        f = self.out_type.frac
        sa, sb = f - self.a_type.frac, f - self.b_type.frac
        values = [(self.a.payload[k] << sa) + (self.b.payload[k] << sb) for k in range(self.n)]
        drive_vector(m, pipe, self.o, values)
        return m
