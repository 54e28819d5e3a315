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
- batch norms are folded first (``bnfold.fold_batchnorm``) and become ``nn.Identity``.

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

from pqflow.models.bnfold import fold_batchnorm
from pqflow.models.quantizers import Quantizer, QuantSpec, _bshape, fake_quantize
from pqflow.models.zoo import ResidualBlock

__all__ = [
    "QuantAct",
    "QuantConfig",
    "QuantConv2d",
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
        if isinstance(child, nn.Linear) and not isinstance(child, QuantLinear):
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
