"""Pixel-stream units: the sliding-window generator, convolution on it, and the deserializer.

An (H, W, C) tensor travels as H * W beats of C raws in raster order (see
``schedule.py``). ``WindowGenerator`` turns such a stream into one beat per output pixel
of a kh x kw window (stride, zero padding); ``ConvUnit`` feeds those windows to a Dense
engine of any style, which is how ``Conv2d``/``BinaryConv2d`` are built;
``Deserializer`` gathers the H * W beats of a sample into one vector beat (``Flatten``).

The window generator pads on the fly and keeps the last ``(kh - 1) * Wp + kw`` padded
pixels (Wp = W + left + right) in a shift register: kh - 1 line buffers plus kw taps.
Every padded pixel shifts in once, so a sample takes Hp * Wp cycles (Hp = H + top +
bottom) at full throughput; padding pixels are generated without reading the input.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ...ir import BinaryConv2d, BinaryDense, Bipolar, Conv2d, Dense, Fixed, Weight
from .common import check_type, element_shape, vector_signature
from .schedule import Schedule, compose, elementwise

__all__ = ["ConvUnit", "Deserializer", "WindowGenerator", "conv_as_dense", "window_need"]


def _pair(owner: str, name: str, v) -> tuple[int, int]:
    t = tuple(v) if isinstance(v, tuple | list) else None
    if t is None or len(t) != 2 or not all(isinstance(k, int) and k >= 1 for k in t):
        raise ValueError(f"{owner}: {name} must be two positive integers, not {v!r}")
    return t  # type: ignore[return-value]


def window_need(
    shape: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], padding
) -> tuple[int, ...]:
    """Input beats (pixels) a window generator must have read before output pixel j:
    every real pixel up to the window's bottom-right corner, in raster order (at least 1)."""
    h, w = shape
    pt, pb, pl, pr = padding
    ho = (h + pt + pb - kernel[0]) // stride[0] + 1
    wo = (w + pl + pr - kernel[1]) // stride[1] + 1
    need = []
    for oy in range(ho):
        ry = oy * stride[0] + kernel[0] - 1 - pt  # real row of the window's last row
        for ox in range(wo):
            rx = ox * stride[1] + kernel[1] - 1 - pl
            n = min(max(ry, 0), h) * w
            if 0 <= ry < h:
                n += min(max(rx + 1, 0), w)
            need.append(max(n, 1))
    return tuple(need)


class WindowGenerator(wiring.Component):
    """Sliding kh x kw windows over a pixel stream of ``shape`` = (H, W, C) raws of ``dtype``.

    ``i`` takes one pixel (C raws) per beat in raster order; ``o`` gives one window per
    output pixel, in raster order, as kh * kw * C raws in the order of a Conv2d weight
    (element (ky * kw + kx) * C + c is input pixel (oy * sy + ky - top, ox * sx + kx -
    left), channel c). ``padding`` = (top, bottom, left, right) pixels of raw ``pad_raw``
    (the raw of real 0). Output shape (Ho, Wo) as the IR's Conv2d. ``latency`` = 1 (the
    output register, after the last pixel a window needs); ``cycles_per_vector`` = Hp *
    Wp, cycles per sample at full throughput; ``schedule`` from ``window_need``.
    """

    def __init__(
        self,
        dtype: Fixed | Bipolar,
        shape: tuple[int, int, int],
        kernel: tuple[int, int],
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int, int, int] = (0, 0, 0, 0),
        pad_raw: int = 0,
    ) -> None:
        check_type("WindowGenerator", "dtype", dtype, allow_bipolar=True)
        if (
            not isinstance(shape, tuple | list)
            or len(shape) != 3
            or not all(isinstance(d, int) and d >= 1 for d in shape)
        ):
            raise ValueError(f"WindowGenerator: shape must be (H, W, C) positive, not {shape!r}")
        kernel = _pair("WindowGenerator", "kernel", kernel)
        stride = _pair("WindowGenerator", "stride", stride)
        pad = tuple(padding)
        if len(pad) != 4 or not all(isinstance(p, int) and p >= 0 for p in pad):
            raise ValueError(
                f"WindowGenerator: padding must be four non-negative integers, not {padding!r}"
            )
        lo, hi = (0, 1) if isinstance(dtype, Bipolar) else (dtype.min_raw, dtype.max_raw)
        if any(pad) and not lo <= pad_raw <= hi:
            raise ValueError(f"WindowGenerator: pad_raw {pad_raw} does not fit {dtype}")
        h, w, c = shape
        pt, pb, pl, pr = pad
        self.hp, self.wp = h + pt + pb, w + pl + pr
        if kernel[0] > self.hp or kernel[1] > self.wp:
            raise ValueError(
                f"WindowGenerator: kernel {kernel} is larger than the padded input "
                f"({self.hp}, {self.wp})"
            )
        self.dtype, self.shape, self.kernel, self.stride = dtype, tuple(shape), kernel, stride
        self.padding, self.pad_raw = pad, pad_raw
        self.out_shape = (
            (self.hp - kernel[0]) // stride[0] + 1,
            (self.wp - kernel[1]) // stride[1] + 1,
        )
        self.n_out = kernel[0] * kernel[1] * c
        self.latency = 1
        self.cycles_per_vector = self.hp * self.wp
        self.pace = 1  # windows of one row can leave on consecutive cycles
        self.schedule = Schedule(
            h * w,
            self.out_shape[0] * self.out_shape[1],
            window_need((h, w), kernel, stride, pad),
            self.latency,
            self.cycles_per_vector,
        )
        super().__init__(
            {
                "i": In(vector_signature(dtype, c)),
                "o": Out(vector_signature(dtype, self.n_out)),
            }
        )

    def _mask(self, n: int, k: int, s: int, count: int) -> int:
        """Bit p set when padded row/column p ends a window of an output row/column."""
        return sum(1 << p for p in range(n) if p >= k - 1 and (p - k + 1) % s == 0) & (
            (1 << (k - 1 + (count - 1) * s + 1)) - 1
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        h, w, c = self.shape
        kh, kw = self.kernel
        pt, pb, pl, pr = self.padding
        hp, wp = self.hp, self.wp
        ew = element_shape(self.dtype).width
        beat = ew * c
        taps_needed = (kh - 1) * wp + kw  # tap k = the pixel k steps before the newest
        sr = [Signal(beat, name=f"line{k}", reset_less=True) for k in range(taps_needed - 1)]
        py = Signal(range(max(hp, 2)), name="py")
        px = Signal(range(max(wp, 2)), name="px")

        is_pad = Signal(name="is_pad")
        pads = []
        if pt:
            pads.append(py < pt)
        if pb:
            pads.append(py >= pt + h)
        if pl:
            pads.append(px < pl)
        if pr:
            pads.append(px >= pl + w)
        m.d.comb += is_pad.eq(Cat(*pads).any() if pads else 0)
        pad_word = 0
        for k in range(c):
            pad_word |= (self.pad_raw & ((1 << ew) - 1)) << (k * ew)
        src = Signal(beat, name="src")
        m.d.comb += src.eq(Mux(is_pad, Const(pad_word, beat), self.i.payload.as_value()))

        out_valid = Signal(name="out_valid")
        out = Signal(beat * kh * kw, name="window", reset_less=True)
        free = Signal(name="free")
        shift = Signal(name="shift")
        m.d.comb += [
            free.eq(~out_valid | self.o.ready),
            shift.eq((is_pad | self.i.valid) & free),
            self.i.ready.eq(~is_pad & free),
            self.o.valid.eq(out_valid),
            self.o.payload.as_value().eq(out),
        ]
        ho, wo = self.out_shape
        row_mask = Const(self._mask(hp, kh, self.stride[0], ho), hp)
        col_mask = Const(self._mask(wp, kw, self.stride[1], wo), wp)
        emit = row_mask.bit_select(py, 1) & col_mask.bit_select(px, 1)
        taps = [src, *sr]
        window = [taps[(kh - 1 - ky) * wp + (kw - 1 - kx)] for ky in range(kh) for kx in range(kw)]
        with m.If(shift):
            if sr:
                m.d.sync += sr[0].eq(src)
                m.d.sync += [sr[k].eq(sr[k - 1]) for k in range(1, len(sr))]
            m.d.sync += [out_valid.eq(emit), out.eq(Cat(*window))]
            with m.If(px == wp - 1):
                m.d.sync += px.eq(0)
                m.d.sync += py.eq(Mux(py == hp - 1, 0, py + 1))
            with m.Else():
                m.d.sync += px.eq(px + 1)
        with m.Elif(self.o.ready):
            m.d.sync += out_valid.eq(0)
        return m


def conv_as_dense(op: Conv2d | BinaryConv2d, in_channels: int, bits: bool = False):
    """The matrix a window of ``op`` is multiplied by: ``(dense_op, element type or None)``.

    A window holds kh * kw * C raws (``WindowGenerator`` order), so ``weight`` reshaped to
    (out, kh * kw * in / groups) is the Dense of an ungrouped convolution. A grouped (or
    depthwise) convolution becomes the block-diagonal Dense over the whole window: output
    o of group g has zero weights on the channels of other groups (the unrolled and
    sparse styles spend nothing on them; the folded style walks them).

    A ``BinaryConv2d`` becomes a ``BinaryDense`` (element type None: the window's own);
    with ``groups > 1`` or ``bits=True`` it becomes the exact Dense over the input *bits*
    b in {0, 1} (``top.binary_as_dense``'s identity, zero off the group), element type
    ``Fixed(1, 0, False)``.
    """
    w = op.weight.data
    cout, kh, kw, cg = w.shape
    g = op.groups
    full = np.zeros((cout, kh, kw, in_channels), dtype=np.int64)
    per = cout // g
    for grp in range(g):
        rows = slice(grp * per, (grp + 1) * per)
        full[rows, :, :, grp * cg : (grp + 1) * cg] = w[rows]
    if isinstance(op, Conv2d):
        return Dense(Weight(full.reshape(cout, -1), op.weight.dtype), op.bias), None
    if g == 1 and not bits:
        return BinaryDense(Weight(w.reshape(cout, -1), Bipolar())), None
    signs = 2 * full - 1  # -1/+1 on the group's taps (the zeros off the group become -1)
    inside = np.zeros_like(full, dtype=bool)
    for grp in range(g):
        inside[grp * per : (grp + 1) * per, :, :, grp * cg : (grp + 1) * cg] = True
    signs = np.where(inside, signs, 0).reshape(cout, -1)
    n = kh * kw * cg
    dense = Dense(
        Weight(2 * signs, Fixed(3, 0, True)),
        Weight(-signs.sum(axis=1), Fixed.fitting(-n, n, 0)),
    )
    return dense, Fixed(1, 0, False)


def conv_fifo_depth(window: WindowGenerator, engine: wiring.Component) -> int:
    """Windows a ``ConvUnit`` queues between its generator and a slow engine (II > 1):
    enough engine work to cover the generator's refill between two samples (the padded
    pixels from the last window of a sample to the first of the next, one per cycle)
    plus two; 0 for an engine that takes a window every cycle."""
    cpv = getattr(engine, "cycles_per_vector", 1)
    if cpv == 1:
        return 0
    per = cpv if cpv is not None else 1
    hp, wp = window.hp, window.wp
    kh, kw = window.kernel
    ho, wo = window.out_shape
    first = (kh - 1) * wp + kw - 1
    last = ((ho - 1) * window.stride[0] + kh - 1) * wp + (wo - 1) * window.stride[1] + kw - 1
    gap = hp * wp - last + first
    return min(ho * wo, -(-gap // per) + 2)


class ConvUnit(wiring.Component):
    """A convolution on a pixel stream: a ``WindowGenerator`` feeding a Dense ``engine``.

    ``engine`` is any matrix unit (``i`` one window, ``o`` one output pixel): unrolled,
    folded or sparse. With ``fifo_depth`` > 0 (``conv_fifo_depth``: slow engines) up to
    that many windows queue in a ``SyncFIFO`` between the two, one more cycle of latency.
    ``latency`` = the window's + the FIFO's + the engine's; ``cycles_per_vector`` (per
    sample) = max(Hp * Wp, Ho * Wo * engine II), None when the engine's II depends on the
    data; ``schedule`` composes both (a data-dependent engine counts its slowest vector).
    """

    def __init__(
        self, window: WindowGenerator, engine: wiring.Component, fifo_depth: int = 0
    ) -> None:
        if not isinstance(fifo_depth, int) or fifo_depth < 0:
            raise ValueError(f"ConvUnit: fifo_depth must be >= 0, not {fifo_depth!r}")
        self.window, self.engine, self.fifo_depth = window, engine, fifo_depth
        beats = window.out_shape[0] * window.out_shape[1]
        cpv = getattr(engine, "cycles_per_vector", 1)
        bound = cpv if cpv is not None else getattr(engine, "max_cycles", engine.latency)
        through = engine.latency + (1 if fifo_depth else 0)  # a FIFO adds one cycle
        self.latency = window.latency + through
        self.cycles_per_vector = None if cpv is None else max(window.cycles_per_vector, beats * cpv)
        self.schedule = compose(window.schedule, elementwise(beats, through, bound))
        self.pace = bound  # cycles between two windows through the engine
        super().__init__(
            {
                "i": In(window.signature.members["i"].signature.flip()),
                "o": Out(engine.signature.members["o"].signature),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.window = self.window
        m.submodules.engine = self.engine
        wiring.connect(m, wiring.flipped(self.i), self.window.i)
        if self.fifo_depth:  # windows queue while the engine works: the generator runs ahead
            w = self.window.o.payload.as_value()
            m.submodules.fifo = fifo = SyncFIFO(width=len(w), depth=self.fifo_depth)
            m.d.comb += [
                fifo.w_data.eq(w),
                fifo.w_en.eq(self.window.o.valid),
                self.window.o.ready.eq(fifo.w_rdy),
                self.engine.i.payload.as_value().eq(fifo.r_data),
                self.engine.i.valid.eq(fifo.r_rdy),
                fifo.r_en.eq(self.engine.i.ready),
            ]
        else:
            wiring.connect(m, self.window.o, self.engine.i)
        wiring.connect(m, self.engine.o, wiring.flipped(self.o))
        return m


class Deserializer(wiring.Component):
    """Gathers ``beats`` beats of ``n`` raws into one vector of ``beats * n`` raws (beat 0
    first): ``Flatten`` of an (H, W, C) pixel stream. The next sample is gathered while
    the vector waits; ``latency`` = 1 after the last beat; ``cycles_per_vector`` = beats.
    """

    def __init__(self, dtype: Fixed | Bipolar, beats: int, n: int) -> None:
        check_type("Deserializer", "dtype", dtype, allow_bipolar=True)
        for name, v in (("beats", beats), ("n", n)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"Deserializer: {name} must be a positive integer, not {v!r}")
        self.dtype, self.beats, self.n = dtype, beats, n
        self.latency = 1
        self.cycles_per_vector = beats
        self.schedule = Schedule(beats, 1, (beats,), 1, beats)
        self.pace = beats
        super().__init__(
            {
                "i": In(vector_signature(dtype, n)),
                "o": Out(vector_signature(dtype, beats * n)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        bw = element_shape(self.dtype).width * self.n
        parts = [Signal(bw, name=f"beat{k}", reset_less=True) for k in range(self.beats - 1)]
        count = Signal(range(max(self.beats, 2)), name="count")
        out_valid = Signal(name="out_valid")
        out = Signal(bw * self.beats, name="vector", reset_less=True)
        last = count == self.beats - 1
        m.d.comb += [
            self.i.ready.eq(~last | ~out_valid | self.o.ready),
            self.o.valid.eq(out_valid),
            self.o.payload.as_value().eq(out),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            x = self.i.payload.as_value()
            with m.If(last):
                m.d.sync += [out.eq(Cat(*parts, x)), out_valid.eq(1), count.eq(0)]
            with m.Else():
                for k, p in enumerate(parts):
                    with m.If(count == k):
                        m.d.sync += p.eq(x)
                m.d.sync += count.eq(count + 1)
        return m
