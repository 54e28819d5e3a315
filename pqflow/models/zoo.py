"""The model zoo: small networks for the digits data set, registered by name.

Every builder takes keyword arguments only and returns an untrained ``nn.Module``;
weights come from the global torch RNG, so seed it first (``train.train`` does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

__all__ = ["MODELS", "mlp", "build"]


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


MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": mlp}


def build(name: str, **kwargs) -> nn.Module:
    """The model registered as ``name``, built with ``kwargs``."""
    if name not in MODELS:
        raise KeyError(f"no model named {name!r}; known models: {sorted(MODELS)}")
    return MODELS[name](**kwargs)
