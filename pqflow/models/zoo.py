"""The model zoo: small networks for the digits data set, registered by name.

Every builder takes keyword arguments only and returns an untrained ``nn.Module``;
weights come from the global torch RNG, so seed it first (``train.train`` does).

Layouts. ``mlp`` takes flat rows (N, 64). The convolutional models (``cnn``,
``resnet_tiny``) take the channels-last images of ``load_digits_split(image=True)``,
(N, 8, 8, 1), the layout of the IR's Conv2d: their first module, ``ChannelsFirst``,
permutes to torch's (N, C, H, W), and their head flattens with ``FlattenHWC``, back in
channels-last order, so the dense head's weight columns are indexed ``(h * W + w) * C + c``
exactly as the IR's channels-last ``Flatten`` produces them. Lowering therefore drops
both modules and never reorders a weight.

Every model is an ``nn.Sequential`` of plain torch modules plus the three small modules
defined here (``ChannelsFirst``, ``FlattenHWC``, ``ResidualBlock``), which is the
vocabulary ``prune`` walks to find which channels are coupled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = [
    "MODELS",
    "ChannelsFirst",
    "FlattenHWC",
    "ResidualBlock",
    "build",
    "cnn",
    "mlp",
    "resnet_tiny",
]


def mlp(n_in: int = 64, hidden: Sequence[int] = (64, 32, 32), n_out: int = 10) -> nn.Sequential:
    """A ReLU multilayer perceptron, by default 64-64-32-32-10.

    Layout: ``Linear, ReLU, Linear, ReLU, ..., Linear`` (no ReLU after the last layer;
    its outputs are the logits). Every Linear has a bias.
    """
    sizes = [n_in, *hidden, n_out]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# --- building blocks ------------------------------------------------------------------------


class ChannelsFirst(nn.Module):
    """(N, H, W, C) channels-last images -> (N, C, H, W), torch's convolution layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(
                f"expected channels-last images (N, H, W, C), not shape {tuple(x.shape)}"
            )
        return x.permute(0, 3, 1, 2)


class FlattenHWC(nn.Module):
    """(N, C, H, W) -> (N, H * W * C) in channels-last order: index ``(h * W + w) * C + c``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1)


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3) -> list[nn.Module]:
    """``Conv2d`` (same padding, no bias: the batch norm carries it), ``BatchNorm2d``, ``ReLU``."""
    return [
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]


class ResidualBlock(nn.Module):
    """``relu(skip(x) + residual(x))``, the basic block of He et al. (2016).

    ``residual`` is conv-bn-relu-conv-bn (3x3, same padding); ``skip`` is empty (the
    identity) when ``c_in == c_out`` and a 1x1 conv-bn projection otherwise. The buffer
    ``residual_mask`` (a scalar, 1.0) multiplies the residual path: layer-wise pruning
    sets it to 0, which turns the block into ``relu(skip(x))`` until ``prune.shrink``
    removes the residual path physically.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 3) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            *conv_bn_relu(c_in, c_out, kernel),
            nn.Conv2d(c_out, c_out, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.skip = (
            nn.Sequential()
            if c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        )
        self.relu = nn.ReLU()
        self.register_buffer("residual_mask", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.skip(x) + self.residual_mask * self.residual(x))


# --- models ---------------------------------------------------------------------------------


def cnn(
    in_channels: int = 1,
    channels: Sequence[int] = (16, 32),
    size: int = 8,
    n_out: int = 10,
) -> nn.Sequential:
    """A small VGG-style CNN: (conv3x3-bn-relu, maxpool 2x2) per entry of ``channels``.

    Input (N, size, size, in_channels) channels-last; default 8x8x1 -> 8x8x16 -> 4x4x16
    -> 4x4x32 -> 2x2x32 -> dense 128 -> 10 logits (6,138 parameters).
    """
    layers: list[nn.Module] = [ChannelsFirst()]
    c = in_channels
    for c_out in channels:
        if size % 2:
            raise ValueError(f"cnn: {len(channels)} 2x2 poolings need an even size, got {size}")
        layers += [*conv_bn_relu(c, c_out), nn.MaxPool2d(2)]
        c, size = c_out, size // 2
    layers += [FlattenHWC(), nn.Linear(c * size * size, n_out)]
    return nn.Sequential(*layers)


def resnet_tiny(
    in_channels: int = 1,
    channels: Sequence[int] = (16, 32),
    size: int = 8,
    n_out: int = 10,
) -> nn.Sequential:
    """A tiny ResNet: a conv-bn-relu stem, then per entry of ``channels`` a residual block
    followed by a 2x2 max pool, then a dense head.

    Default: stem 8x8x16; block 16->16 (identity skip), pool -> 4x4x16; block 16->32
    (1x1 projection skip), pool -> 2x2x32; dense 128 -> 10.
    """
    c = channels[0]
    layers: list[nn.Module] = [ChannelsFirst(), *conv_bn_relu(in_channels, c)]
    for c_out in channels:
        if size % 2:
            raise ValueError(
                f"resnet_tiny: {len(channels)} 2x2 poolings need an even size, got {size}"
            )
        layers += [ResidualBlock(c, c_out), nn.MaxPool2d(2)]
        c, size = c_out, size // 2
    layers += [FlattenHWC(), nn.Linear(c * size * size, n_out)]
    return nn.Sequential(*layers)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "cnn": cnn,
    "resnet_tiny": resnet_tiny,
}


def build(name: str, seed: int = 0, **kwargs) -> nn.Module:
    """The model registered as ``name``, built with ``kwargs``.

    Its initial weights are drawn from torch's generator seeded with ``seed`` (the
    global random state is left as it was), so the same call gives the same model.
    """
    if name not in MODELS:
        raise KeyError(f"no model named {name!r}; known models: {sorted(MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](**kwargs)


def _gated_cnn(**kwargs) -> nn.Module:
    """``dynamic.gated_cnn``, imported on first use (dynamic imports this module)."""
    from pqflow.models.dynamic import gated_cnn

    return gated_cnn(**kwargs)


MODELS["gated_cnn"] = _gated_cnn
