"""Quantized layers and ``quantize_model``, which swaps them into a zoo model.

A quantized model keeps its float model's structure (an ``nn.Sequential`` with the same
child names) with these substitutions:

- an ``input_quant`` ``QuantAct`` is inserted first: the graph's ``Quantize``;
- ``nn.ReLU`` -> ``QuantAct(relu=True)``: ReLU then the activation quantizer (the IR's
  ``ReLU -> Requant`` or ``MultiThreshold``); for a binary activation spec
  ``QuantAct(relu=False)``: sign of the pre-activation (``MultiThreshold`` to Bipolar);
- ``nn.Linear`` / ``nn.Conv2d`` -> ``QuantLinear`` / ``QuantConv2d``: weights through
  ``weight_quant`` (then times ``weight_mask``, so a pruned weight is exactly 0), bias
  fake-quantized at the accumulator scale ``weight scale * input scale`` with
  ``bias_bits``; the output is the exact accumulator (no output quantizer);
- batch norms are folded first (``bnfold.fold_batchnorm``) and become ``nn.Identity``;
- a ``dynamic.GatedConvBlock`` -> ``QuantGatedConvBlock`` (see there): its batch norm
  folded into the conv, its gate's ``BatchNorm1d`` into the predictor, and quantizers on
  the pooled gate input, the saliency and (``scale=True``) the gated output.

Each layer knows the quantizer that produced its input (``input_quant``; a plain
attribute, not a submodule) by a walk in forward order through ``Sequential``,
``ResidualBlock`` (both paths read the block input) and grid-preserving modules
(pooling, ``ChannelsFirst``, ``FlattenHWC``, ``Identity``).

What the lowering reads from a layer: ``weight_codes()`` (int64, zeros where masked),
``weight_quant.scale``/``.zero_point``/``.frac``/``.spec``, ``bias_codes()`` (int64 at
``bias_scale()``), ``input_quant``, and from a ``QuantAct``: ``relu``, ``quant.fmt``/
``.scale``/``.zero_point``/``.spec``.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pqflow.models.bnfold import _fold, fold_batchnorm
from pqflow.models.dynamic import ChannelGate, GatedConvBlock
from pqflow.models.quantizers import Quantizer, QuantSpec, _bshape, fake_quantize
from pqflow.models.zoo import ResidualBlock

__all__ = [
    "QuantAct",
    "QuantConfig",
    "QuantChannelGate",
    "QuantConv2d",
    "QuantGatedConvBlock",
    "QuantLinear",
    "quant_layers",
    "quantize_model",
    "weight_bits",
]


@dataclass(frozen=True)
class QuantConfig:
    """How ``quantize_model`` quantizes a model.

    ``weight``: default spec of every Linear/Conv2d weight; ``layers`` overrides it by
    the float model's module name (e.g. ``{"0": QuantSpec(bits=4)}``; mixed precision).
    ``act``: every ReLU's output (None keeps float activations). ``input``: the model
    input (None: not quantized). ``bias_bits``: bias at the accumulator scale (None:
    float bias). ``first_weight``/``last_weight`` override the first/last layer's weight.
    """

    weight: QuantSpec = QuantSpec(bits=8, signed=True, narrow=True)
    act: QuantSpec | None = QuantSpec(bits=8, signed=False)
    input: QuantSpec | None = QuantSpec(bits=8, signed=False)
    bias_bits: int | None = 32
    layers: Mapping[str, QuantSpec] = field(default_factory=dict)
    first_weight: QuantSpec | None = None
    last_weight: QuantSpec | None = None
    fold_bn: bool = True

    @staticmethod
    def wa(w_bits: int, a_bits: int, scale: str = "pow2", **kw) -> QuantConfig:
        """``w{w_bits}a{a_bits}``: symmetric narrow signed weights, unsigned activations,
        an 8-bit unsigned input."""
        return QuantConfig(
            weight=QuantSpec(bits=w_bits, signed=True, narrow=True, scale=scale),
            act=QuantSpec(bits=a_bits, signed=False, scale=scale),
            input=QuantSpec(bits=8, signed=False, scale=scale),
            **kw,
        )


# --- modules --------------------------------------------------------------------------------


class QuantAct(nn.Module):
    """An activation: optional ReLU, then ``quant`` (``Quantizer``)."""

    def __init__(self, spec: QuantSpec, relu: bool) -> None:
        super().__init__()
        self.relu = relu
        self.quant = Quantizer(spec, dynamic=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant(torch.relu(x) if self.relu else x)

    def extra_repr(self) -> str:
        return f"relu={self.relu}"


class _QuantWeighted:
    """Mixin of ``QuantLinear`` and ``QuantConv2d``: weight, mask and bias quantization."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    weight_quant: Quantizer
    bias_bits: int | None
    _producer: tuple[Quantizer | None]

    def _init_quant(self, spec: QuantSpec, bias_bits: int | None) -> None:
        self.weight_quant = Quantizer(spec, dynamic=True)
        self.bias_bits = bias_bits
        self._producer = (None,)

    @property
    def input_quant(self) -> Quantizer | None:
        """The quantizer whose grid this layer's input lies on (None: float input)."""
        return self._producer[0]

    def link_input(self, q: Quantizer | None) -> None:
        self._producer = (q,)

    def _keep(self) -> torch.Tensor | None:
        return getattr(self, "weight_mask", None)

    def quantized_weight(self) -> torch.Tensor:
        keep = self._keep()
        w = self.weight_quant(self.weight, keep)
        return w if keep is None else w * keep

    def bias_scale(self) -> torch.Tensor | None:
        """Accumulator scale per output channel: weight scale x input scale (None if unknown)."""
        q = self.input_quant
        if q is None or q.spec.mode == "ternary" or q.scale.dim() != 0:
            return None
        n = self.weight.shape[0]
        ws = self.weight_quant.scale.detach()
        return (ws * q.scale.detach()).expand(n) if ws.dim() == 0 else ws * q.scale.detach()

    def quantized_bias(self) -> torch.Tensor | None:
        if self.bias is None or self.bias_bits is None:
            return self.bias
        s = self.bias_scale()
        if s is None:
            return self.bias
        lim = 1 << (self.bias_bits - 1)
        b = fake_quantize(self.bias, s.to(self.bias.dtype), torch.zeros_like(s), -lim, lim - 1)
        mask = getattr(self, "bias_mask", None)
        return b if mask is None else b * mask

    @torch.no_grad()
    def weight_codes(self) -> torch.Tensor:
        """Integer weight codes (int64, the weight's shape); exactly 0 where masked."""
        keep = self._keep()
        c = self.weight_quant.codes(self.weight, keep)
        if keep is not None:
            zp = _bshape(c, self.weight_quant.spec.axis, self.weight_quant.zero_point)
            c = torch.where(keep.bool(), c, zp.to(c.dtype).expand_as(c))
        return c

    @torch.no_grad()
    def bias_codes(self) -> torch.Tensor | None:
        """Integer bias codes at ``bias_scale()`` (int64), or None without a quantized bias."""
        self.quantized_weight()  # refresh the weight scale
        b = self.quantized_bias()
        s = self.bias_scale()
        if b is None or s is None or self.bias_bits is None:
            return None
        return torch.round(b / s).to(torch.int64)


class QuantLinear(nn.Linear, _QuantWeighted):
    """``nn.Linear`` with quantized weight and bias; same parameters, same buffers."""

    def __init__(
        self, n_in: int, n_out: int, bias: bool, spec: QuantSpec, bias_bits: int | None
    ) -> None:
        super().__init__(n_in, n_out, bias=bias)
        self._init_quant(spec, bias_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.quantized_bias())


class QuantConv2d(nn.Conv2d, _QuantWeighted):
    """``nn.Conv2d`` with quantized weight and bias; same parameters, same buffers."""

    def __init__(self, conv: nn.Conv2d, spec: QuantSpec, bias_bits: int | None) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
        )
        self._init_quant(spec, bias_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.quantized_bias())


@torch.no_grad()
def _fold_input_norm(lin: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """A copy of ``lin`` computing ``lin(bn(x))`` (eval mode): with
    ``g = gamma / sqrt(var + eps)``, ``W' = W * g`` (per input column) and
    ``b' = b + W @ (beta - mean * g)``."""
    out = copy.deepcopy(lin)
    g = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.affine:
        g = g * bn.weight.double()
    beta = bn.bias.double() if bn.affine else torch.zeros_like(g)
    w = lin.weight.double()
    b = lin.bias.double() if lin.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
    out.weight.copy_((w * g[None, :]).to(lin.weight.dtype))
    new_b = (b + w @ (beta - bn.running_mean.double() * g)).to(lin.weight.dtype)
    if out.bias is None:
        out.bias = nn.Parameter(new_b)
    else:
        out.bias.copy_(new_b)
    return out


class QuantChannelGate(nn.Module):
    """``ChannelGate`` on quantized values, with its ``BatchNorm1d`` folded into the predictor.

    ``saliency(x)`` = ``sal_quant(predictor(pool_quant(mean of x over H, W)))``:
    ``pool_quant`` (``QuantAct``, no ReLU) quantizes the pooled block input,
    ``predictor`` is a ``QuantLinear`` and ``sal_quant`` (``QuantAct`` with ReLU) gives
    the saliency codes. ``keep``/``forward`` are ``ChannelGate``'s (top-``k`` of the
    quantized saliency, ties to the lower index; gate = saliency or 1 on kept channels).
    """

    def __init__(self, gate: ChannelGate, cfg: QuantConfig, spec: QuantSpec) -> None:
        super().__init__()
        if cfg.act is None or cfg.act.mode != "uniform":
            raise ValueError(
                f"quantize_model: a channel gate needs a uniform activation spec, not {cfg.act}"
            )
        lin = _fold_input_norm(gate.predictor, gate.norm)
        self.pool_quant = QuantAct(cfg.act, relu=False)
        self.predictor = _copy_state(
            lin, QuantLinear(lin.in_features, lin.out_features, True, spec, cfg.bias_bits)
        )
        self.sal_quant = QuantAct(cfg.act, relu=True)
        self.k, self.scale, self.pool = gate.k, gate.scale, gate.pool

    def saliency(self, x: torch.Tensor) -> torch.Tensor:
        p = F.adaptive_avg_pool2d(x, self.pool).flatten(1)
        return self.sal_quant(self.predictor(self.pool_quant(p)))

    keep = ChannelGate.keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.saliency(x)
        m = self.keep(s).to(s.dtype)
        return s * m if self.scale else m

    def extra_repr(self) -> str:
        return f"k={self.k}, scale={self.scale}, pool={self.pool}"


class QuantGatedConvBlock(GatedConvBlock):
    """A quantized ``GatedConvBlock``: ``relu(conv(x)) * gate(x)``, then ``out_quant``.

    ``conv`` is a ``QuantConv2d`` with the batch norm folded in (``bn`` is Identity),
    ``relu`` a ``QuantAct(relu=True)``, ``gate`` a ``QuantChannelGate``. With
    ``scale=True`` the gated product (activation code x saliency code) is requantized by
    ``out_quant`` (a ``QuantAct``); with ``scale=False`` the output is already on the
    activation grid and ``out_quant`` is None.
    """

    def __init__(self, block: GatedConvBlock, cfg: QuantConfig, conv_spec, gate_spec) -> None:
        nn.Module.__init__(self)
        conv = copy.deepcopy(block.conv)
        _fold(conv, block.bn)
        self.conv = _copy_state(conv, QuantConv2d(conv, conv_spec, cfg.bias_bits))
        self.bn = nn.Identity()
        self.relu = QuantAct(cfg.act, relu=True)
        self.gate = QuantChannelGate(block.gate, cfg, gate_spec)
        self.out_quant = QuantAct(cfg.act, relu=False) if block.gate.scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y if self.out_quant is None else self.out_quant(y)


def _copy_state(src: nn.Module, dst: nn.Module) -> nn.Module:
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        if src.bias is not None:
            dst.bias.copy_(src.bias)
    for name in ("weight_mask", "bias_mask"):
        buf = getattr(src, name, None)
        if buf is not None:
            dst.register_buffer(name, buf.detach().clone())
    return dst.to(src.weight.dtype)


# --- quantize_model -------------------------------------------------------------------------


def _weight_spec(cfg: QuantConfig, name: str, first: str, last: str) -> QuantSpec:
    if name in cfg.layers:
        return cfg.layers[name]
    if name == first and cfg.first_weight is not None:
        return cfg.first_weight
    if name == last and cfg.last_weight is not None:
        return cfg.last_weight
    return cfg.weight


def _swap(module: nn.Module, cfg: QuantConfig, prefix: str, first: str, last: str) -> None:
    for name, child in list(module.named_children()):
        full = f"{prefix}{name}"
        new: nn.Module | None = None
        if isinstance(child, GatedConvBlock) and not isinstance(child, QuantGatedConvBlock):
            conv_spec = _weight_spec(cfg, f"{full}.conv", first, last)
            gate_spec = _weight_spec(cfg, f"{full}.gate.predictor", first, last)
            new = QuantGatedConvBlock(child, cfg, conv_spec, gate_spec)
        elif isinstance(child, nn.Linear) and not isinstance(child, QuantLinear):
            spec = _weight_spec(cfg, full, first, last)
            new = QuantLinear(
                child.in_features, child.out_features, child.bias is not None, spec, cfg.bias_bits
            )
            new = _copy_state(child, new)
        elif isinstance(child, nn.Conv2d) and not isinstance(child, QuantConv2d):
            spec = _weight_spec(cfg, full, first, last)
            new = _copy_state(child, QuantConv2d(child, spec, cfg.bias_bits))
        elif isinstance(child, nn.ReLU) and cfg.act is not None:
            new = QuantAct(cfg.act, relu=cfg.act.mode != "binary")
        else:
            _swap(child, cfg, f"{full}.", first, last)
        if new is not None:
            setattr(module, name, new)


def _link(m: nn.Module, q: Quantizer | None) -> Quantizer | None:
    """Tell every quantized layer its input's quantizer; return the output's (forward order)."""
    if isinstance(m, QuantAct):
        return m.quant
    if isinstance(m, _QuantWeighted):
        m.link_input(q)
        return None
    if isinstance(m, nn.Sequential):
        for child in m:
            q = _link(child, q)
        return q
    if isinstance(m, QuantGatedConvBlock):
        m.conv.link_input(q)
        m.gate.predictor.link_input(m.gate.pool_quant.quant)
        return m.relu.quant if m.out_quant is None else m.out_quant.quant
    if isinstance(m, ResidualBlock):
        _link(m.residual, q)
        _link(m.skip, q)
        return _link(m.relu, None)
    if isinstance(m, nn.ReLU):
        return None
    return q  # pooling, Identity, ChannelsFirst, FlattenHWC: values stay on the same grid


def quantize_model(
    model: nn.Module,
    config: QuantConfig = QuantConfig(),
    calib_x=None,
    method: str = "minmax",
    **calib_kw,
) -> nn.Sequential:
    """A quantized copy of the zoo model ``model`` (``nn.Sequential``); ``model`` is untouched.

    Batch norms are folded first (``config.fold_bn``). With ``calib_x`` the activation
    quantizers are calibrated on it (``calibrate.calibrate(..., method, **calib_kw)``);
    otherwise call ``calibrate`` before the first forward pass.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"quantize_model expects a zoo nn.Sequential, not {type(model).__name__}")
    for name in config.layers:
        if name not in dict(model.named_modules()):
            raise KeyError(f"QuantConfig.layers names {name!r}, which is not a module of the model")
    m = fold_batchnorm(model) if config.fold_bn else copy.deepcopy(model)
    weighted = [n for n, mod in m.named_modules() if isinstance(mod, nn.Linear | nn.Conv2d)]
    if not weighted:
        raise ValueError("quantize_model: the model has no Linear or Conv2d layer")
    _swap(m, config, "", weighted[0], weighted[-1])
    children: list[tuple[str, nn.Module]] = []
    if config.input is not None:
        children.append(("input_quant", QuantAct(config.input, relu=False)))
    children += list(m.named_children())
    q = nn.Sequential(OrderedDict(children))
    _link(q, None)
    q.eval()
    if calib_x is not None:
        from pqflow.models.calibrate import calibrate

        calibrate(q, calib_x, method=method, **calib_kw)
    return q


def quant_layers(model: nn.Module) -> list[tuple[str, QuantLinear | QuantConv2d]]:
    """The quantized weighted layers of ``model`` by name, in definition order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _QuantWeighted)]


def weight_bits(model: nn.Module) -> int:
    """Total weight storage in bits: each layer's weight count times its code width."""
    return sum(m.weight.numel() * m.weight_quant.spec.bits for _, m in quant_layers(model))
