"""What every streaming unit shares: element shapes, vector stream signatures, the stall rule.

A vector of ``n`` raws of one IR element type travels as one stream payload,
``data.ArrayLayout(shape, n)``: element ``k`` occupies bits ``[k*w, (k+1)*w)``.

Every unit is a pipeline of ``latency`` register stages (0 means combinational) that
moves as one: ``advance = ~valid_last | o.ready``. When the output holds a vector nobody
takes, every stage holds and the input is not ready; otherwise everything shifts by one.
No vector is lost or duplicated, and with a ready consumer the unit accepts one vector
per cycle (II = 1).
"""

from __future__ import annotations

from contextlib import nullcontext

from amaranth.hdl import Cat, Module, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream

from ...ir import Bipolar, Fixed, bits_for

__all__ = [
    "Pipeline",
    "beat_layout",
    "check_shape",
    "check_type",
    "drive_vector",
    "element_shape",
    "fitting_shape",
    "vector_signature",
]


def element_shape(dtype: Fixed | Bipolar) -> Shape:
    """The Amaranth shape of one raw: ``signed(w)``/``unsigned(w)``; Bipolar is ``unsigned(1)``."""
    if isinstance(dtype, Bipolar):
        return unsigned(1)
    if isinstance(dtype, Fixed):
        return signed(dtype.width) if dtype.signed else unsigned(dtype.width)
    raise TypeError(f"element type must be Fixed or Bipolar, not {dtype!r}")


def fitting_shape(lo: int, hi: int) -> Shape:
    """The narrowest shape holding every integer in [lo, hi] (signed when lo < 0)."""
    w = bits_for(lo, hi)
    return signed(w) if lo < 0 else unsigned(w)


def beat_layout(shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """(beats per sample, shape of one beat) of a tensor of per-sample ``shape``: an
    (H, W, C) tensor is H * W beats of (C,) (a pixel stream, raster order); any other
    tensor is one beat of itself (see ``schedule.py``)."""
    shape = tuple(shape)
    if len(shape) == 3:
        return shape[0] * shape[1], (shape[2],)
    return 1, shape


def vector_signature(dtype: Fixed | Bipolar, n: int) -> stream.Signature:
    """A stream of vectors of ``n`` raws of ``dtype``, packed element 0 first (LSBs)."""
    return stream.Signature(data.ArrayLayout(element_shape(dtype), n))


class Pipeline:
    """The valid bits and global stall of a ``latency``-stage pipeline between two streams.

    ``advance`` enables every data register of the unit (``m.d.sync`` under
    ``with m.If(pipe.advance)``). With ``latency == 0`` the unit is combinational and
    valid/ready pass straight through.
    """

    def __init__(self, m: Module, i: stream.Interface, o: stream.Interface, latency: int) -> None:
        self.latency = latency
        if latency == 0:
            self.advance = o.ready
            m.d.comb += [o.valid.eq(i.valid), i.ready.eq(o.ready)]
            return
        valid = Signal(latency, name="valid")
        self.advance = Signal(name="advance")
        m.d.comb += [
            self.advance.eq(~valid[-1] | o.ready),
            i.ready.eq(self.advance),
            o.valid.eq(valid[-1]),
        ]
        with m.If(self.advance):
            m.d.sync += valid.eq(Cat(i.valid, valid[:-1]))


def check_type(owner: str, what: str, t: object, allow_bipolar: bool = False) -> None:
    """Raise TypeError unless ``t`` is a Fixed (or Bipolar when allowed) element type."""
    ok = (Fixed, Bipolar) if allow_bipolar else (Fixed,)
    if not isinstance(t, ok):
        need = "a Fixed or Bipolar" if allow_bipolar else "a Fixed"
        raise TypeError(f"{owner}: {what} must be {need} element type, not {t!r}")


def check_shape(owner: str, shape: object) -> tuple[int, ...]:
    """The per-sample shape as a tuple of positive ints, or a ValueError saying what was wrong."""
    try:
        t = tuple(shape)  # type: ignore[arg-type]
    except TypeError:
        t = None
    if not t or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in t):
        raise ValueError(f"{owner}: shape must be a tuple of positive integers, not {shape!r}")
    return t


def drive_vector(m: Module, pipe: Pipeline, o: stream.Interface, values: list) -> None:
    """Drive ``o.payload`` element by element with ``values`` (Amaranth values or ints),
    through one register stage when ``pipe.latency == 1`` or combinationally when 0."""
    if pipe.latency == 0:
        target, domain = o.payload, m.d.comb
    else:
        target = Signal(o.payload.shape(), reset_less=True, name="out")
        m.d.comb += o.payload.eq(target)
        domain = m.d.sync
    with m.If(pipe.advance) if pipe.latency else nullcontext():
        for k, v in enumerate(values):
            domain += target[k].eq(v)
