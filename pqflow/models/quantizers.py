"""Quantizer specs and fake-quantization with straight-through estimators.

A ``QuantSpec`` (frozen) says *what* grid a tensor lives on; a ``Quantizer`` module holds
*where* that grid is (its scale and zero point, learned or calibrated) and fake-quantizes:
its outputs are floats that lie exactly on the grid ``(code - zero_point) * scale``, with
integer ``codes`` in ``[qmin, qmax]`` retrievable for the lowering.

Modes (``QuantSpec.mode``):

- ``uniform``: ``code = clamp(round_half_even(x / scale) + zero_point, qmin, qmax)``.
  Signed codes span ``[-2**(b-1), 2**(b-1) - 1]``, narrow range drops ``-2**(b-1)``;
  unsigned codes span ``[0, 2**b - 1]`` (narrow: ``2**b - 2``). Symmetric specs have
  ``zero_point = 0``; asymmetric ones an integer zero point, so 0.0 is exact either way.
  ``scale="pow2"`` makes every scale a power of two, ``2**-frac``: the numeric contract's
  ``Fixed(bits, frac, signed)`` (``Quantizer.fmt``). ``scale="float"`` allows any scale
  (a ``Requant`` with integer ``mult``/``shift`` carries it). Gradients: STE through
  the rounding, zero outside the clamp (Jacob et al. 2018). ``learn="lsq"`` makes the
  step a parameter with LSQ's gradient scale ``1 / sqrt(N * qmax)`` (Esser et al. 2020);
  ``learn="pact"`` (unsigned activations) makes the clip ``alpha`` a parameter whose
  gradient is 1 where ``x >= alpha`` (Choi et al. 2018).
- ``binary``: ``code = +1 if x >= 0 else -1`` (0 goes to +1, the IR's ``MultiThreshold``
  ``>=`` convention). Backward: the gradient where ``|x| <= 1``, else 0 (BinaryConnect,
  BNN). ``scale="unit"``: value = code; ``"float"``: XNOR-Net's ``alpha = mean|W|`` per
  channel; ``"pow2"``: that alpha rounded to a power of two.
- ``ternary``: TWN: ``delta = 0.7 * mean|W|``, ``code = sign(W) * [|W| > delta]`` in
  {-1, 0, +1}, ``alpha = mean |W| over |W| > delta`` (``"float"``, ``"pow2"`` or ``"unit"``).
  Backward: straight through.

Rounding is half to even everywhere (``torch.round``), the IR's ``half_even``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from pqflow.ir import Fixed

__all__ = [
    "QuantSpec",
    "Quantizer",
    "binary_quantize",
    "fake_quantize",
    "grad_scale",
    "pact_quantize",
    "pow2_ceil",
    "qparams_from_range",
    "round_ste",
    "sign_ste",
    "ternary_quantize",
]

MODES = ("uniform", "binary", "ternary")
SCALES = ("pow2", "float", "unit")
LEARN = ("none", "lsq", "pact")
UNIFORM_BITS = (2, 3, 4, 5, 6, 7, 8, 16)
TWN_DELTA = 0.7


@dataclass(frozen=True)
class QuantSpec:
    """The grid of one tensor: bit width, signedness, zero point, granularity, scale kind.

    ``axis`` is the channel axis for per-channel scales (0 for a weight's output
    channels), None for one scale per tensor.
    """

    bits: int = 8
    signed: bool = True
    symmetric: bool = True
    narrow: bool = False
    axis: int | None = None
    scale: str = "pow2"
    mode: str = "uniform"
    learn: str = "none"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"QuantSpec: mode must be one of {MODES}, not {self.mode!r}")
        if self.scale not in SCALES:
            raise ValueError(f"QuantSpec: scale must be one of {SCALES}, not {self.scale!r}")
        if self.learn not in LEARN:
            raise ValueError(f"QuantSpec: learn must be one of {LEARN}, not {self.learn!r}")
        if self.mode == "uniform":
            if self.bits not in UNIFORM_BITS:
                raise ValueError(
                    f"QuantSpec: uniform bits must be one of {UNIFORM_BITS}, not {self.bits!r}"
                )
            if self.scale == "unit":
                raise ValueError("QuantSpec: scale='unit' is for binary and ternary modes only")
            if self.learn == "pact" and (self.signed or not self.symmetric):
                raise ValueError(
                    "QuantSpec: learn='pact' clips to [0, alpha]: it needs signed=False "
                    "and symmetric=True"
                )
            if self.learn == "lsq" and not self.symmetric:
                raise ValueError("QuantSpec: learn='lsq' needs symmetric=True (no zero point)")
        else:
            need = 1 if self.mode == "binary" else 2
            if self.bits != need:
                raise ValueError(
                    f"QuantSpec: mode={self.mode!r} needs bits={need}, not {self.bits!r} "
                    f"(use QuantSpec.{self.mode}())"
                )
            if not self.signed or not self.symmetric or self.learn != "none":
                raise ValueError(
                    f"QuantSpec: mode={self.mode!r} is signed, symmetric and not learned"
                )

    @staticmethod
    def binary(scale: str = "unit", axis: int | None = None) -> QuantSpec:
        """Sign quantization: ``unit`` (BNN/BinaryConnect) or ``float`` (XNOR-Net alpha)."""
        return QuantSpec(bits=1, scale=scale, mode="binary", axis=axis)

    @staticmethod
    def ternary(scale: str = "float", axis: int | None = None) -> QuantSpec:
        """TWN ternary weights {-alpha, 0, +alpha}."""
        return QuantSpec(bits=2, scale=scale, mode="ternary", axis=axis)

    def with_bits(self, bits: int) -> QuantSpec:
        return replace(self, bits=bits)

    @property
    def qmin(self) -> int:
        """Smallest integer code."""
        if self.mode != "uniform":
            return -1
        if not self.signed:
            return 0
        return -(1 << (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def qmax(self) -> int:
        """Largest integer code."""
        if self.mode != "uniform":
            return 1
        if not self.signed:
            return (1 << self.bits) - (2 if self.narrow else 1)
        return (1 << (self.bits - 1)) - 1

    def __str__(self) -> str:
        if self.mode != "uniform":
            return f"{self.mode}({self.scale}{'' if self.axis is None else ', per-channel'})"
        parts = [f"{'s' if self.signed else 'u'}{self.bits}", self.scale]
        if not self.symmetric:
            parts.append("asym")
        if self.narrow:
            parts.append("narrow")
        if self.axis is not None:
            parts.append(f"axis={self.axis}")
        if self.learn != "none":
            parts.append(self.learn)
        return "/".join(parts)


# --- differentiable building blocks ---------------------------------------------------------


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``torch.round`` (half to even) forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """``x`` forward, gradient multiplied by ``g`` backward (LSQ's step-size scaling)."""
    return (x - x * g).detach() + x * g


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """+1 where ``x >= 0`` else -1; backward passes the gradient where ``|x| <= 1`` (htanh)."""
    s = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
    c = torch.clamp(x, -1.0, 1.0)
    return c + (s - c).detach()


def pow2_ceil(ratio: torch.Tensor) -> torch.Tensor:
    """The smallest power of two >= ``ratio`` (elementwise, ratio > 0), exactly."""
    r = ratio.detach().double()
    e = torch.ceil(torch.log2(r))
    e = torch.where(torch.exp2(e - 1) >= r, e - 1, e)  # guard log2 rounding either way
    e = torch.where(torch.exp2(e) < r, e + 1, e)
    return torch.exp2(e).to(ratio.dtype)


def _pow2_ste(s: torch.Tensor) -> torch.Tensor:
    """``pow2_ceil(s)`` forward, identity backward."""
    return s + (pow2_ceil(s) - s).detach()


def _bshape(x: torch.Tensor, axis: int | None, v: torch.Tensor) -> torch.Tensor:
    """Reshape a per-channel vector ``v`` to broadcast along ``axis`` of ``x``."""
    if axis is None or v.dim() == 0:
        return v
    shape = [1] * x.dim()
    shape[axis] = -1
    return v.reshape(shape)


def _reduce_dims(x: torch.Tensor, axis: int | None) -> list[int]:
    return (
        list(range(x.dim())) if axis is None else [d for d in range(x.dim()) if d != axis % x.dim()]
    )


def fake_quantize(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int
) -> torch.Tensor:
    """``(clamp(round(x / scale) + zp, qmin, qmax) - zp) * scale``; STE inside the clamp.

    ``scale``/``zero_point`` must already broadcast against ``x``.
    """
    q = torch.clamp(round_ste(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def pact_quantize(x: torch.Tensor, alpha: torch.Tensor, qmax: int, pow2: bool) -> torch.Tensor:
    """PACT: ``y = clip(x, 0, alpha')``, then quantized to ``qmax`` steps with STE.

    ``alpha' = qmax * scale`` with ``scale = alpha / qmax`` (or its power-of-two ceiling),
    so the clip is the top of the grid. ``d y / d alpha`` is 1 where ``x >= alpha'``.
    """
    scale = alpha / qmax
    if pow2:
        scale = _pow2_ste(scale)
    y = torch.minimum(torch.relu(x), scale * qmax)
    q = torch.round(y / scale).detach() * scale.detach()
    return y + (q - y).detach()


def _masked_mean_abs(w: torch.Tensor, axis: int | None, keep: torch.Tensor | None):
    a = w.abs() if keep is None else w.abs() * keep
    dims = _reduce_dims(w, axis)
    n = torch.ones_like(w) if keep is None else keep
    return a.sum(dims) / n.sum(dims).clamp(min=1), dims


def _alpha_kind(alpha: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "unit":
        return torch.ones_like(alpha)
    alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
    return _pow2_ste(alpha) if kind == "pow2" else alpha


def binary_quantize(
    w: torch.Tensor, spec: QuantSpec, keep: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fake-quantized value ``alpha * sign(w)``, alpha per channel or scalar)."""
    alpha, _ = _masked_mean_abs(w.detach(), spec.axis, keep)
    alpha = _alpha_kind(alpha, spec.scale).detach()
    return _bshape(w, spec.axis, alpha) * sign_ste(w), alpha


def ternary_quantize(
    w: torch.Tensor, spec: QuantSpec, keep: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fake-quantized TWN value ``alpha * code``, alpha); codes in {-1, 0, +1}."""
    wd = w.detach()
    mean, dims = _masked_mean_abs(wd, spec.axis, keep)
    delta = TWN_DELTA * _bshape(w, spec.axis, mean)
    big = (wd.abs() > delta).to(w.dtype)
    alpha = (wd.abs() * big).sum(dims) / big.sum(dims).clamp(min=1)
    alpha = _alpha_kind(alpha, spec.scale).detach()
    q = _bshape(w, spec.axis, alpha) * torch.sign(wd) * big
    return w + (q - w).detach(), alpha


def qparams_from_range(
    spec: QuantSpec, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) of a uniform ``spec`` so that [lo, hi] fits without saturating.

    Zero is always exactly representable: the range is widened to contain it. A zero
    range gets scale ``2**-(bits-1)`` (pow2) or 1 (float).
    """
    lo = torch.minimum(torch.as_tensor(lo, dtype=torch.float64), torch.zeros(()))
    hi = torch.maximum(torch.as_tensor(hi, dtype=torch.float64), torch.zeros(()))
    qmin, qmax = spec.qmin, spec.qmax
    if spec.symmetric:
        m = torch.maximum(lo.abs(), hi) if spec.signed else hi
        ratio = m / qmax
    else:
        ratio = (hi - lo) / (qmax - qmin)
    zero = ratio <= 0
    if spec.scale == "pow2":
        scale = torch.where(
            zero,
            torch.full_like(ratio, 2.0 ** -(spec.bits - 1)),
            pow2_ceil(ratio.clamp(min=1e-300)),
        )
    else:
        scale = torch.where(zero, torch.ones_like(ratio), ratio)
    if spec.symmetric:
        zp = torch.zeros_like(scale)
    else:
        zp = torch.clamp(torch.round(qmin - lo / scale), qmin, qmax)
    return scale.float(), zp.float()


# --- the module -----------------------------------------------------------------------------


class Quantizer(nn.Module):
    """Fake-quantizes tensors onto ``spec``'s grid; holds the grid's scale and zero point.

    Two ways to get a scale: ``dynamic=True`` (weights) recomputes it from each tensor's
    min/max (per channel along ``spec.axis``); otherwise (activations) it is set once by
    ``set_range`` (calibration, see ``calibrate.py``) and then fixed, or learned
    (``learn='lsq'``: the step; ``'pact'``: the clip alpha). ``enabled = False`` passes
    inputs through unchanged (calibration observes float activations that way).

    After a forward pass, ``scale`` and ``zero_point`` are the effective values used
    (powers of two for ``pow2``), and ``codes(x)`` gives the integer codes of ``x``.
    """

    def __init__(self, spec: QuantSpec, dynamic: bool = False) -> None:
        super().__init__()
        if not isinstance(spec, QuantSpec):
            raise TypeError(f"spec must be a QuantSpec, not {spec!r}")
        self.spec = spec
        self.dynamic = dynamic
        self.enabled = True
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("zero_point", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        if spec.learn == "lsq":
            self.step = nn.Parameter(torch.ones(()))
        elif spec.learn == "pact":
            self.alpha = nn.Parameter(torch.ones(()))

    def extra_repr(self) -> str:
        return f"{self.spec}, dynamic={self.dynamic}"

    # -- range setting ---------------------------------------------------------------------

    @torch.no_grad()
    def set_range(self, lo: torch.Tensor | float, hi: torch.Tensor | float) -> None:
        """Fix the grid so [lo, hi] fits (per channel when ``lo``/``hi`` are vectors)."""
        if self.spec.mode != "uniform":
            self.initialized.fill_(True)
            return
        scale, zp = qparams_from_range(self.spec, torch.as_tensor(lo), torch.as_tensor(hi))
        self._set(scale, zp)
        if self.spec.learn == "lsq":
            self.step.data = scale.clone()
        elif self.spec.learn == "pact":
            self.alpha.data = (scale * self.spec.qmax).clone()

    def _set(self, scale: torch.Tensor, zp: torch.Tensor) -> None:
        self.scale = scale.detach().clone()
        self.zero_point = zp.detach().clone()
        self.initialized.fill_(True)

    @torch.no_grad()
    def _range_of(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dims = _reduce_dims(x, self.spec.axis)
        return x.amin(dims) if dims else x, x.amax(dims) if dims else x

    def _lsq_init(self, x: torch.Tensor) -> None:
        """LSQ's initial step: 2 * mean|x| / sqrt(qmax) (per channel along ``axis``)."""
        with torch.no_grad():
            dims = _reduce_dims(x, self.spec.axis)
            m = x.detach().abs().mean(dims) if dims else x.detach().abs()
            step = (2 * m / math.sqrt(self.spec.qmax)).clamp(min=1e-8)
            self.step.data = step.float()
            self.initialized.fill_(True)

    # -- forward ---------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Fake-quantize ``x``; ``keep`` (a 0/1 mask) limits XNOR/TWN statistics to kept weights."""
        if not self.enabled:
            return x
        spec = self.spec
        if spec.mode == "binary":
            if spec.scale == "unit":
                self._set(torch.ones(()), torch.zeros(()))
                return sign_ste(x)
            v, alpha = binary_quantize(x, spec, keep)
            self._set(alpha, torch.zeros_like(alpha))
            return v
        if spec.mode == "ternary":
            v, alpha = ternary_quantize(x, spec, keep)
            self._set(alpha, torch.zeros_like(alpha))
            return v
        if spec.learn == "lsq":
            return self._lsq(x)
        if spec.learn == "pact":
            self._need_init()
            v = pact_quantize(x, self.alpha, spec.qmax, spec.scale == "pow2")
            s = self.alpha.detach() / spec.qmax
            self._set(pow2_ceil(s) if spec.scale == "pow2" else s, torch.zeros(()))
            return v
        if self.dynamic:
            scale, zp = qparams_from_range(spec, *self._range_of(x.detach()))
            self._set(scale, zp)
        else:
            self._need_init()
        scale = _bshape(x, spec.axis, self.scale).to(x.dtype)
        zp = _bshape(x, spec.axis, self.zero_point).to(x.dtype)
        return fake_quantize(x, scale, zp, spec.qmin, spec.qmax)

    def _lsq(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        if not bool(self.initialized):
            if not self.dynamic:
                self._need_init()
            self._lsq_init(x)
        n = x.numel() if self.dynamic else x[0].numel()  # weights: all; activations: a sample
        if spec.axis is not None and self.dynamic:
            n //= x.shape[spec.axis]
        s = grad_scale(self.step, 1.0 / math.sqrt(n * spec.qmax))
        s = s.abs().clamp(min=1e-8)
        if spec.scale == "pow2":
            s = _pow2_ste(s)
        self.scale = s.detach().clone()
        self.zero_point = torch.zeros_like(self.scale)
        sb = _bshape(x, spec.axis, s).to(x.dtype)
        q = round_ste(torch.clamp(x / sb, spec.qmin, spec.qmax))
        return q * sb

    def _need_init(self) -> None:
        if not bool(self.initialized):
            raise RuntimeError(
                f"Quantizer({self.spec}) has no range yet: calibrate the model "
                "(pqflow.models.calibrate.calibrate) or call set_range first"
            )

    # -- what the lowering reads -----------------------------------------------------------

    @torch.no_grad()
    def codes(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The int64 codes of ``x`` (runs a forward pass to refresh ``scale``)."""
        enabled, self.enabled = self.enabled, True
        try:
            v = self.forward(x, keep)
        finally:
            self.enabled = enabled
        s = _bshape(x, self.spec.axis, self.scale).to(v.dtype)
        zp = _bshape(x, self.spec.axis, self.zero_point).to(v.dtype)
        return torch.round(v / s + zp).to(torch.int64)

    @property
    def frac(self) -> int | torch.Tensor:
        """``-log2(scale)`` (an int per tensor, an int64 vector per channel); pow2 only."""
        if self.spec.scale == "float":
            raise ValueError(f"Quantizer({self.spec}): a float scale has no frac")
        f = -torch.log2(self.scale.double())
        if not torch.equal(f, torch.round(f)):
            raise ValueError(f"Quantizer({self.spec}): scale {self.scale} is not a power of two")
        f = f.to(torch.int64)
        return int(f) if f.dim() == 0 else f

    @property
    def fmt(self) -> Fixed:
        """The IR type ``Fixed(bits, frac, signed)`` of a per-tensor pow2 symmetric grid."""
        spec = self.spec
        if spec.mode != "uniform" or not spec.symmetric or self.scale.dim() != 0:
            raise ValueError(
                f"Quantizer({spec}): only a per-tensor, symmetric, uniform grid is one Fixed type"
            )
        return Fixed(spec.bits, self.frac, spec.signed)
