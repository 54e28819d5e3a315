"""Element-wise activation units: ``ReLUUnit`` and ``MultiThresholdUnit``."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ...ir import Bipolar, Fixed, IRError, MultiThreshold, ReLU, TensorType
from .common import Pipeline, check_shape, check_type, drive_vector, vector_signature

__all__ = ["MultiThresholdUnit", "ReLUUnit"]


def _infer(owner: str, op, in_type: Fixed, shape: tuple[int, ...]) -> TensorType:
    try:
        return op.infer(TensorType(in_type, shape))
    except IRError as e:
        raise ValueError(f"{owner}: {e}") from None


class ReLUUnit(wiring.Component):
    """max(x, 0) on a vector of ``in_type`` raws; combinational (latency 0).

    A signed w-bit input gives the IR's unsigned (w-1)-bit output; an unsigned input passes.
    """

    latency = 0

    def __init__(self, in_type: Fixed, shape: tuple[int, ...], op: ReLU | None = None) -> None:
        check_type("ReLUUnit", "in_type", in_type)
        shape = check_shape("ReLUUnit", shape)
        if op is not None and not isinstance(op, ReLU):
            raise TypeError(f"ReLUUnit: op must be a pqflow.ir.ReLU or None, not {op!r}")
        self.in_type, self.shape = in_type, shape
        self.out_type = _infer("ReLUUnit", op or ReLU(), in_type, shape).dtype
        self.n = TensorType(in_type, shape).size
        super().__init__(
            {
                "i": In(vector_signature(in_type, self.n)),
                "o": Out(vector_signature(self.out_type, self.n)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        pipe = Pipeline(m, self.i, self.o, 0)
        x = [self.i.payload[k] for k in range(self.n)]
        if self.in_type.signed:
            values = [Mux(v[-1], 0, v) for v in x]
        else:
            values = x
        drive_vector(m, pipe, self.o, values)
        return m


class MultiThresholdUnit(wiring.Component):
    """y = offset + sum_i [x >= T[c, i]] (FINN's >=) on a vector; channel c = k % shape[-1].

    Thresholds a raw can never reach (or always passes) become constants, so they cost no
    comparator. ``registered=True`` puts one register stage on the output (latency 1).
    """

    def __init__(
        self,
        op: MultiThreshold,
        in_type: Fixed,
        out_type: Fixed | Bipolar,
        shape: tuple[int, ...],
        *,
        registered: bool = True,
    ) -> None:
        if not isinstance(op, MultiThreshold):
            raise TypeError(
                f"MultiThresholdUnit: op must be a pqflow.ir.MultiThreshold, not {op!r}"
            )
        check_type("MultiThresholdUnit", "in_type", in_type)
        check_type("MultiThresholdUnit", "out_type", out_type, allow_bipolar=True)
        shape = check_shape("MultiThresholdUnit", shape)
        if out_type != op.out:
            raise ValueError(
                f"MultiThresholdUnit: out_type must be the op's type {op.out}, not {out_type}"
            )
        _infer("MultiThresholdUnit", op, in_type, shape)
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
        t = self.op.thresholds.data
        c, lo, hi = self.shape[-1], self.in_type.min_raw, self.in_type.max_raw
        values = []
        for k in range(self.n):
            x = self.i.payload[k]
            row = t[k % c] if t.shape[0] > 1 else t[0]
            total: Value | int = self.op.offset
            for th in (int(v) for v in row):
                if th <= lo:
                    total = total + 1
                elif th <= hi:
                    total = total + (x >= th)
            values.append(total)
        drive_vector(m, pipe, self.o, values)
        return m
