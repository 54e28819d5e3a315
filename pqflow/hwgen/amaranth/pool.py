"""``PoolUnit``: streaming ``MaxPool2d`` / ``AvgPool2d`` on a pixel stream.

A ``WindowGenerator`` (no padding) gives one kh x kw window per output pixel; one register
stage reduces it per channel: the maximum of the raws (for Bipolar raws, 1 = +1 > 0 = -1,
that is the OR) or, for ``AvgPool2d``, their exact sum (the IR's AvgPool raw is the window
sum, its frac grown by log2(kh * kw): no rounding happens).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ...ir import AvgPool2d, Bipolar, Fixed, IRError, MaxPool2d, TensorType
from .common import Pipeline, check_type, drive_vector, vector_signature
from .schedule import compose, elementwise
from .window import WindowGenerator

__all__ = ["PoolUnit"]


class PoolUnit(wiring.Component):
    """``op`` (MaxPool2d or AvgPool2d) on an (H, W, C) ``shape`` stream of ``in_type`` raws.

    ``i``: one pixel (C raws) per beat, raster order; ``o``: one output pixel per beat.
    ``latency`` = 2 (window register, reduction register) after the last pixel a window
    needs; ``cycles_per_vector`` = H * W cycles per sample; ``schedule`` the window's with
    one more cycle.
    """

    def __init__(
        self,
        op: MaxPool2d | AvgPool2d,
        in_type: Fixed | Bipolar,
        out_type: Fixed | Bipolar,
        shape: tuple[int, int, int],
    ) -> None:
        if not isinstance(op, MaxPool2d | AvgPool2d):
            raise TypeError(f"PoolUnit: op must be a MaxPool2d or AvgPool2d, not {op!r}")
        check_type("PoolUnit", "in_type", in_type, allow_bipolar=isinstance(op, MaxPool2d))
        try:
            t = op.infer(TensorType(in_type, tuple(shape)))
        except IRError as e:
            raise ValueError(f"PoolUnit: {e}") from None
        if t.dtype != out_type:
            raise ValueError(f"PoolUnit: out_type must be {t.dtype}, not {out_type}")
        self.op, self.in_type, self.out_type, self.shape = op, in_type, out_type, tuple(shape)
        self.window = WindowGenerator(in_type, self.shape, op.kernel, op.stride)
        self.latency = self.window.latency + 1
        self.cycles_per_vector = self.window.cycles_per_vector
        ho, wo = self.window.out_shape
        self.schedule = compose(self.window.schedule, elementwise(ho * wo, 1))
        self.pace = 1
        c = self.shape[2]
        super().__init__(
            {
                "i": In(vector_signature(in_type, c)),
                "o": Out(vector_signature(out_type, c)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.window = win = self.window
        wiring.connect(m, wiring.flipped(self.i), win.i)
        pipe = Pipeline(m, win.o, self.o, 1)
        c = self.shape[2]
        taps = self.op.kernel[0] * self.op.kernel[1]
        values = []
        for ch in range(c):
            xs = [win.o.payload[t * c + ch] for t in range(taps)]
            if isinstance(self.op, MaxPool2d):
                while len(xs) > 1:  # a balanced tree of comparators
                    pairs = [Mux(a > b, a, b) for a, b in zip(xs[::2], xs[1::2], strict=False)]
                    xs = pairs + ([xs[-1]] if len(xs) % 2 else [])
                values.append(xs[0])
            else:
                total = xs[0]
                for x in xs[1:]:
                    total = total + x
                values.append(total)
        drive_vector(m, pipe, self.o, values)
        return m
