"""Batch-norm folding: ``BatchNorm(conv(x))`` becomes one conv with a bias.

With ``g = gamma / sqrt(running_var + eps)`` per output channel::

    W' = W * g        b' = (b - running_mean) * g + beta

(``b = 0`` for a conv without a bias). The folded model computes the same function as
the float model in eval mode, to float rounding. Pruning masks survive: a zero weight
stays zero (``W * g``), ``weight_mask`` is kept and a batch norm's ``bias_mask`` moves
to the folded bias.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["fold_batchnorm"]

_PAIRS = ((nn.Conv2d, nn.BatchNorm2d), (nn.Linear, nn.BatchNorm1d))


@torch.no_grad()
def _fold(layer: nn.Conv2d | nn.Linear, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> None:
    if bn.track_running_stats is False or bn.running_var is None:
        raise ValueError(f"cannot fold {bn}: it has no running statistics")
    g = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.affine:
        g = g * bn.weight.double()
    beta = bn.bias.double() if bn.affine else torch.zeros_like(g)
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    layer.weight.copy_((layer.weight.double() * g.reshape(shape)).to(layer.weight.dtype))
    b = layer.bias.double() if layer.bias is not None else torch.zeros_like(g)
    new_b = ((b - bn.running_mean.double()) * g + beta).to(layer.weight.dtype)
    if layer.bias is None:
        layer.bias = nn.Parameter(new_b)
    else:
        layer.bias.copy_(new_b)
    masks = [getattr(m, "bias_mask", None) for m in (layer, bn)]
    masks = [m for m in masks if m is not None]
    if masks:
        mask = masks[0] if len(masks) == 1 else masks[0] * masks[1]
        layer.register_buffer("bias_mask", mask.clone())
        layer.bias.mul_(mask)


def _walk(module: nn.Module) -> None:
    if isinstance(module, nn.Sequential):
        names = [n for n, _ in module.named_children()]
        for a, b in zip(names[:-1], names[1:], strict=True):
            layer, bn = module._modules[a], module._modules[b]
            if any(isinstance(layer, lt) and isinstance(bn, bt) for lt, bt in _PAIRS):
                _fold(layer, bn)
                module._modules[b] = nn.Identity()
    for child in module.children():
        _walk(child)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every batch norm that directly follows a Conv2d (BatchNorm2d)
    or Linear (BatchNorm1d) in an ``nn.Sequential`` folded into it and replaced by
    ``nn.Identity``; module names are unchanged. ``model`` itself is untouched.
    """
    folded = copy.deepcopy(model)
    _walk(folded)
    return folded.eval()
