"""Post-training fixed-point quantization (power-of-two scales) and magnitude pruning.

Every tensor is quantized to the numeric contract's ``Fixed(width, frac, signed)``:
value = raw * 2**-frac, one ``frac`` per tensor (per layer), chosen as the largest frac
whose range still holds the tensor's calibrated maximum (so calibration data never
saturates). Rounding is ``half_even`` (``torch.round``, ``np.rint``), overflow
``saturate``.

A quantized MLP layer computes, on integer raws only::

    acc  = W_raw @ x_raw + b_raw           exact; frac = fw + fx, b_raw at that frac
    acc  = max(acc, 0)                      hidden layers only (ReLU on the accumulator)
    y    = sat(round_half_even(acc / 2**s)) s = fw + fx - fa_out, into Fixed(a_bits, fa_out)

and the last layer's output is the accumulator itself (integer logits; argmax is the
prediction). ReLU is applied to the accumulator, before the requant, because the IR's
``ReLU`` turns a signed type into an unsigned one and the requant then targets an
unsigned activation type with all ``a_bits`` bits for magnitude. (Rounding is monotone
and maps 0 to 0, so requant-then-ReLU would give the same codes.) This is exactly the
op chain ``Dense -> ReLU -> Requant`` that ``lower.lower_mlp`` emits.

``QuantizedMLP.forward`` computes the same thing in the float64 *value* domain with
fake quantization (all scales are powers of two and every intermediate is below 2**53,
so it is exact); ``QuantizedMLP.forward_int`` computes it on int64 raws with the IR's
own ``round_shift``/``apply_overflow``. The tests check the two agree bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pqflow.ir import Fixed, Overflow, Rounding, apply_overflow, quantize_float, round_shift
from pqflow.models.train import FINETUNE, TrainConfig, train

__all__ = [
    "QuantLayer",
    "QuantizedMLP",
    "quantize_mlp",
    "pow2_frac",
    "fake_quant",
    "prune_global_l1",
    "prune_and_finetune",
    "sparsity_of",
]


# --- formats --------------------------------------------------------------------------------


def pow2_frac(max_abs: float, bits: int, signed: bool) -> int:
    """The largest frac with ``max_abs * 2**frac <= max_raw`` of ``Fixed(bits, frac, signed)``.

    A value of ``max_abs`` (and everything smaller) then quantizes without saturating.
    An all-zero tensor (``max_abs == 0``) gets ``frac = bits - 1``.
    """
    if bits < 1 or (signed and bits < 2):
        raise ValueError(f"need at least {2 if signed else 1} bits, not {bits}")
    if not math.isfinite(max_abs) or max_abs < 0:
        raise ValueError(f"max_abs must be a finite non-negative number, not {max_abs!r}")
    max_raw = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    if max_abs == 0:
        return bits - 1
    frac = math.floor(math.log2(max_raw / max_abs))
    while math.ldexp(max_abs, frac + 1) <= max_raw:  # guard log2 rounding either way
        frac += 1
    while math.ldexp(max_abs, frac) > max_raw:
        frac -= 1
    return frac


def fake_quant(x: torch.Tensor, fmt: Fixed) -> torch.Tensor:
    """x rounded (half_even) and saturated onto ``fmt``'s grid, in the value domain.

    The gradient is passed straight through (STE), so it can also serve QAT.
    """
    scale = 2.0**fmt.frac
    q = torch.clamp(torch.round(x * scale), fmt.min_raw, fmt.max_raw) / scale
    return x + (q - x).detach()


# --- the quantized model --------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class QuantLayer:
    """One quantized dense layer: integer raws plus the formats that give them meaning.

    ``weight`` is (out, in) int64 raws of ``w_fmt``; ``bias`` is (out,) int64 raws of
    ``bias_fmt`` whose frac is the accumulator's (``w_fmt.frac + in_fmt.frac``).
    ``out_fmt`` is the activation type after ReLU and requant, or None for the last
    layer, whose output is the accumulator. ``pruned`` records that the float layer
    carried a pruning mask (its zeros are an unstructured sparsity pattern).
    """

    weight: np.ndarray
    bias: np.ndarray
    w_fmt: Fixed
    in_fmt: Fixed
    bias_fmt: Fixed
    out_fmt: Fixed | None
    relu: bool
    pruned: bool = False

    @property
    def acc_frac(self) -> int:
        return self.w_fmt.frac + self.in_fmt.frac

    @property
    def shift(self) -> int:
        """Right shift from the accumulator to ``out_fmt`` (negative means a left shift)."""
        if self.out_fmt is None:
            raise ValueError("the last layer has no requant: its output is the accumulator")
        return self.acc_frac - self.out_fmt.frac

    def describe(self) -> str:
        out = "acc" if self.out_fmt is None else f"{self.out_fmt} (shift {self.shift})"
        relu = " relu" if self.relu else ""
        n_out, n_in = self.weight.shape
        return (
            f"dense {n_in}->{n_out}: x {self.in_fmt}, w {self.w_fmt}, b {self.bias_fmt},"
            f"{relu} -> {out}"
        )


class QuantizedMLP(nn.Module):
    """A w{w_bits}a{a_bits} fixed-point MLP: input quantizer plus ``QuantLayer`` s.

    ``forward(x)`` returns float64 logits (accumulator raw * 2**-frac);
    ``forward_int(x)`` returns the integer codes of every stage.
    """

    def __init__(self, in_fmt: Fixed, layers: tuple[QuantLayer, ...]) -> None:
        super().__init__()
        if not layers:
            raise ValueError("a QuantizedMLP needs at least one layer")
        self.in_fmt = in_fmt
        self.layers = tuple(layers)
        self._w = [
            torch.from_numpy(ly.weight.astype(np.float64) * 2.0**-ly.w_fmt.frac)
            for ly in self.layers
        ]
        self._b = [
            torch.from_numpy(ly.bias.astype(np.float64) * 2.0**-ly.bias_fmt.frac)
            for ly in self.layers
        ]

    @property
    def out_frac(self) -> int:
        """frac of the integer logits (the last accumulator)."""
        return self.layers[-1].acc_frac

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float64 logits, by fake quantization in the value domain (exact, see module doc)."""
        v = fake_quant(torch.as_tensor(x).to(torch.float64), self.in_fmt)
        for ly, w, b in zip(self.layers, self._w, self._b, strict=True):
            v = v @ w.T + b
            if ly.relu:
                v = torch.relu(v)
            if ly.out_fmt is not None:
                v = fake_quant(v, ly.out_fmt)
        return v

    def forward_int(self, x: np.ndarray | torch.Tensor) -> list[np.ndarray]:
        """Integer codes on int64 raws: [input raws, layer 1 out, ..., last accumulator].

        Hidden entries are activation raws (``out_fmt``), the last one is the integer
        logits at frac ``out_frac``. Computed with integer arithmetic only.
        """
        xf = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        raw = quantize_float(xf, self.in_fmt, Rounding.HALF_EVEN, Overflow.SATURATE)
        codes = [raw]
        for ly in self.layers:
            acc = raw @ ly.weight.T + ly.bias
            if ly.relu:
                acc = np.maximum(acc, 0)
            if ly.out_fmt is None:
                raw = acc
            elif ly.shift >= 0:
                raw = apply_overflow(
                    round_shift(acc, ly.shift, Rounding.HALF_EVEN), ly.out_fmt, Overflow.SATURATE
                )
            else:
                raw = apply_overflow(acc << -ly.shift, ly.out_fmt, Overflow.SATURATE)
            codes.append(raw)
        return codes

    def predict_int(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Top-1 class from the integer logits (ties go to the lowest index, as argmax)."""
        return np.argmax(self.forward_int(x)[-1], axis=-1)

    def describe(self) -> str:
        lines = [f"input {self.in_fmt}"] + [ly.describe() for ly in self.layers]
        return "\n".join(lines)


def _mlp_layers(model: nn.Module) -> list[tuple[nn.Linear, bool]]:
    """(Linear, followed-by-ReLU) pairs of a Sequential of Linear and ReLU modules."""
    mods = list(model.children()) if isinstance(model, nn.Sequential) else None
    if not mods:
        raise ValueError(
            f"expected an nn.Sequential of Linear and ReLU, not {type(model).__name__}"
        )
    out: list[tuple[nn.Linear, bool]] = []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Linear):
            out.append((m, False))
        elif isinstance(m, nn.ReLU) and out and not out[-1][1]:
            out[-1] = (out[-1][0], True)
        else:
            raise ValueError(
                f"module {i} ({type(m).__name__}) is not supported in an MLP; "
                "expected Linear, each optionally followed by one ReLU"
            )
    return out


@torch.no_grad()
def quantize_mlp(
    model: nn.Module,
    calib_x: np.ndarray | torch.Tensor,
    w_bits: int = 8,
    a_bits: int = 8,
    bias_bits: int = 32,
) -> QuantizedMLP:
    """Post-training quantization of a Linear/ReLU ``nn.Sequential`` with pow-2 scales.

    Weights: ``Fixed(w_bits, fw, signed)`` per layer, ``fw = pow2_frac(max|W|)``.
    Input and activations: ``Fixed(a_bits, fa, signed=False)`` when non-negative (input
    data >= 0, ReLU outputs), else signed; ``fa`` from the min-max range of the float
    model over ``calib_x``. Bias: ``Fixed(bias_bits, fw + fx, signed)``; raises if a bias
    would saturate.
    """
    layers = _mlp_layers(model)
    x = torch.as_tensor(np.asarray(calib_x, dtype=np.float32)).reshape(len(calib_x), -1)

    def act_fmt(t: torch.Tensor) -> Fixed:
        signed = bool((t < 0).any())
        return Fixed(a_bits, pow2_frac(float(t.abs().max()), a_bits, signed), signed)

    in_fmt = act_fmt(x)
    fmt, h = in_fmt, x
    qlayers = []
    for i, (lin, relu) in enumerate(layers):
        w = lin.weight.detach().double().numpy()
        b = np.zeros(w.shape[0]) if lin.bias is None else lin.bias.detach().double().numpy()
        w_fmt = Fixed(w_bits, pow2_frac(float(np.abs(w).max()), w_bits, True), True)
        w_raw = quantize_float(w, w_fmt, Rounding.HALF_EVEN, Overflow.SATURATE)
        b_fmt = Fixed(bias_bits, w_fmt.frac + fmt.frac, True)
        b_raw = quantize_float(b, b_fmt, Rounding.HALF_EVEN, Overflow.SATURATE)
        b_exact = np.rint(b * 2.0**b_fmt.frac)
        if not np.array_equal(b_raw, b_exact):
            raise ValueError(
                f"layer {i}: bias saturates {b_fmt}; max |b| = {np.abs(b).max():.4g}, "
                f"raise bias_bits above {bias_bits}"
            )
        h = lin(h)
        if relu:
            h = torch.relu(h)
        last = i == len(layers) - 1
        out_fmt = None if last else act_fmt(h)
        pruned = getattr(lin, "weight_mask", None) is not None
        qlayers.append(QuantLayer(w_raw, b_raw, w_fmt, fmt, b_fmt, out_fmt, relu, pruned))
        fmt = out_fmt
    return QuantizedMLP(in_fmt, tuple(qlayers)).eval()


# --- pruning --------------------------------------------------------------------------------


def _prunable(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


@torch.no_grad()
def prune_global_l1(model: nn.Module, sparsity: float) -> nn.Module:
    """Element-wise global magnitude pruning of every Linear/Conv2d weight, in place.

    Exactly ``round(sparsity * N)`` of the N weights (biases excluded) are zeroed: the
    smallest |w| over the whole model (ties broken by position). Each module keeps a
    ``weight_mask`` buffer (1 kept, 0 pruned) that ``train.train`` re-applies after every
    step, so fine-tuning leaves pruned weights at zero. Weights already masked stay
    pruned (they have |w| = 0, the smallest). Returns ``model``.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], not {sparsity!r}")
    mods = _prunable(model)
    if not mods:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv2d weights to prune")
    flat = torch.cat([m.weight.detach().abs().flatten().double() for m in mods])
    k = round(sparsity * flat.numel())
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[:k]] = False
    start = 0
    for m in mods:
        n = m.weight.numel()
        mask = keep[start : start + n].reshape(m.weight.shape).to(m.weight.dtype)
        start += n
        if getattr(m, "weight_mask", None) is None:
            m.register_buffer("weight_mask", mask)
        else:
            m.weight_mask.copy_(mask)
        m.weight.mul_(mask)
    return model


def prune_and_finetune(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    sparsity: float,
    config: TrainConfig = FINETUNE,
) -> nn.Module:
    """``prune_global_l1`` then fine-tune on (x, y) with the masks fixed; in place."""
    prune_global_l1(model, sparsity)
    return train(model, x, y, config)


def sparsity_of(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over all Linear/Conv2d weights (biases excluded)."""
    mods = _prunable(model)
    total = sum(m.weight.numel() for m in mods)
    zeros = sum(int((m.weight == 0).sum()) for m in mods)
    return zeros / total
