"""``RequantUnit``: y = overflow(round(x * mult[c] / 2**shift[c])) on a whole vector per cycle."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ...ir import Fixed, IRError, Overflow, Requant, Rounding, TensorType
from .common import Pipeline, check_shape, check_type, drive_vector, vector_signature

__all__ = ["RequantUnit", "requant_value"]


def _bit(v: Value, j: int) -> Value:
    """Bit j of v's two's complement value (sign extension beyond its width)."""
    if j < len(v):
        return v[j]
    return v[-1] if v.shape().signed else Value.cast(0)


def requant_value(
    x: Value, lo: int, hi: int, mult: int, shift: int, rounding: Rounding, overflow: Overflow, to
) -> Value | int:
    """The logic for one element whose raw ``x`` lies in [lo, hi]; exactly ``numeric.py``."""
    if mult == 0:
        return 0
    p = x if mult == 1 else x * mult
    plo, phi = sorted((lo * mult, hi * mult))
    v, vlo, vhi = p, plo >> shift, phi >> shift
    if shift:
        p = Value.cast(p)
        q = p >> shift
        low_any = p[: min(shift - 1, len(p))].any() if shift > 1 else Value.cast(0)
        half = _bit(p, shift - 1)
        if rounding == Rounding.FLOOR:
            v = q
        elif rounding == Rounding.HALF_UP:
            v, vhi = q + half, vhi + 1
        elif rounding == Rounding.HALF_EVEN:
            v, vhi = q + (half & (low_any | q[0])), vhi + 1
        else:
            raise ValueError(f"unknown rounding {rounding!r}")
    if overflow == Overflow.SATURATE:
        if vhi > to.max_raw:
            v = Mux(v > to.max_raw, to.max_raw, v)
        if vlo < to.min_raw:
            v = Mux(v < to.min_raw, to.min_raw, v)
    elif overflow != Overflow.WRAP:  # wrap is the truncation of the assignment
        raise ValueError(f"unknown overflow {overflow!r}")
    return v


class RequantUnit(wiring.Component):
    """Requantizes a vector of raws of ``in_type`` to ``op.to`` with per-channel constants.

    Channel c of element k is ``k % shape[-1]`` (channels last). Rounding (floor, half_up,
    half_even) and overflow (saturate, wrap) are exactly ``pqflow.ir.numeric``'s.
    ``registered=True`` puts one register stage on the output (latency 1), else the unit
    is combinational (latency 0).
    """

    def __init__(
        self,
        op: Requant,
        in_type: Fixed,
        out_type: Fixed,
        shape: tuple[int, ...],
        *,
        registered: bool = True,
    ) -> None:
        if not isinstance(op, Requant):
            raise TypeError(f"RequantUnit: op must be a pqflow.ir.Requant, not {op!r}")
        check_type("RequantUnit", "in_type", in_type)
        check_type("RequantUnit", "out_type", out_type)
        shape = check_shape("RequantUnit", shape)
        if out_type != op.to:
            raise ValueError(f"RequantUnit: out_type must be the op's type {op.to}, not {out_type}")
        try:
            op.infer(TensorType(in_type, shape))
        except IRError as e:
            raise ValueError(f"RequantUnit: {e}") from None
        self.op, self.in_type, self.out_type, self.shape = op, in_type, out_type, shape
        self.n = TensorType(in_type, shape).size
        self.latency = 1 if registered else 0
        super().__init__(
            {
                "i": In(vector_signature(in_type, self.n)),
                "o": Out(vector_signature(out_type, self.n)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        pipe = Pipeline(m, self.i, self.o, self.latency)
        op, c = self.op, self.shape[-1]
        values = []
        for k in range(self.n):
            mult = op.mult[k % c if len(op.mult) > 1 else 0]
            shift = op.shift[k % c if len(op.shift) > 1 else 0]
            values.append(
                requant_value(
                    self.i.payload[k],
                    self.in_type.min_raw,
                    self.in_type.max_raw,
                    mult,
                    shift,
                    op.rounding,
                    op.overflow,
                    op.to,
                )
            )
        drive_vector(m, pipe, self.o, values)
        return m
