"""Per-layer mixed precision: sensitivity analysis and a bit-width choice under a budget.

``sensitivity`` quantizes one layer's weights at a time to each candidate bit width
(every other layer at the base config), calibrates by PTQ and records the accuracy drop
from the base-config model. ``choose_bits`` then picks one width per layer so that the
total weight storage ``sum(n_weights * bits)`` fits ``budget`` and the summed drops
(assumed additive, as in HAWQ-style methods) are smallest: exactly (``knapsack``, a
dynamic program over Pareto-optimal partial choices) or greedily (``greedy``: from the
widest widths, repeatedly narrow the layer whose next step costs the least accuracy
per bit saved, then widen again wherever the leftover budget allows a gain).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from torch import nn

from pqflow.models.qmodules import QuantConfig, quantize_model
from pqflow.models.train import evaluate

__all__ = ["Sensitivity", "choose_bits", "mixed_config", "sensitivity"]


@dataclass(frozen=True)
class Sensitivity:
    """Accuracy drop ``drops[layer][bits]`` (points of accuracy as a fraction, may be < 0)
    of quantizing only ``layer`` at ``bits``; ``sizes[layer]`` its weight count;
    ``baseline`` the accuracy with every layer at the base config."""

    drops: dict[str, dict[int, float]]
    sizes: dict[str, int]
    baseline: float

    def table(self) -> str:
        bits = sorted({b for d in self.drops.values() for b in d})
        head = "layer      weights " + " ".join(f"{b:>7d}b" for b in bits)
        rows = [
            f"{name:<10} {self.sizes[name]:>7d} " + " ".join(f"{100 * d[b]:>+8.2f}" for b in bits)
            for name, d in self.drops.items()
        ]
        return "\n".join([f"baseline {100 * self.baseline:.2f}%", head, *rows])


def _weighted_names(model: nn.Module) -> list[tuple[str, int]]:
    return [
        (n, m.weight.numel())
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear | nn.Conv2d)
    ]


def sensitivity(
    model: nn.Module,
    calib_x: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    bits: Sequence[int] = (2, 3, 4, 6, 8),
    base: QuantConfig | None = None,
    method: str = "minmax",
) -> Sensitivity:
    """Per-layer, per-bit-width accuracy drop on (x, y) of the float ``model`` under PTQ.

    ``base`` (default ``QuantConfig()``, w8a8) quantizes every other layer.
    """
    base = QuantConfig() if base is None else base
    baseline = evaluate(quantize_model(model, base, calib_x, method), x, y)
    drops: dict[str, dict[int, float]] = {}
    sizes: dict[str, int] = {}
    for name, n in _weighted_names(model):
        sizes[name] = n
        drops[name] = {}
        for b in bits:
            cfg = replace(base, layers={**base.layers, name: base.weight.with_bits(b)})
            acc = evaluate(quantize_model(model, cfg, calib_x, method), x, y)
            drops[name][b] = baseline - acc
    return Sensitivity(drops, sizes, baseline)


def choose_bits(sens: Sensitivity, budget: int, method: str = "knapsack") -> dict[str, int]:
    """Bits per layer with ``sum(sizes * bits) <= budget`` minimising the summed drop."""
    names = list(sens.drops)
    options = {n: sorted(sens.drops[n]) for n in names}
    least = sum(sens.sizes[n] * options[n][0] for n in names)
    if least > budget:
        raise ValueError(
            f"weight-bit budget {budget} is below the smallest possible {least} "
            f"(every layer at its narrowest width)"
        )
    if method == "knapsack":
        # states: (cost, drop, choice); keep only the Pareto front after each layer
        front: list[tuple[int, float, tuple[int, ...]]] = [(0, 0.0, ())]
        for n in names:
            grown = [
                (c + sens.sizes[n] * b, d + sens.drops[n][b], ch + (b,))
                for c, d, ch in front
                for b in options[n]
                if c + sens.sizes[n] * b <= budget
            ]
            grown.sort(key=lambda s: (s[0], s[1]))
            front = []
            for s in grown:
                if not front or s[1] < front[-1][1]:
                    front.append(s)
        best = min(front, key=lambda s: (s[1], s[0]))
        return dict(zip(names, best[2], strict=True))
    if method == "greedy":
        choice = {n: options[n][-1] for n in names}

        def cost() -> int:
            return sum(sens.sizes[n] * choice[n] for n in names)

        while cost() > budget:
            steps = []
            for n in names:
                i = options[n].index(choice[n])
                if i > 0:
                    lower = options[n][i - 1]
                    saved = sens.sizes[n] * (choice[n] - lower)
                    steps.append(((sens.drops[n][lower] - sens.drops[n][choice[n]]) / saved, n))
            _, n = min(steps)
            choice[n] = options[n][options[n].index(choice[n]) - 1]
        while True:  # spend what is left: widen where a step fits and gains the most per bit
            ups = []
            for n in names:
                i = options[n].index(choice[n])
                if i + 1 < len(options[n]):
                    upper = options[n][i + 1]
                    extra = sens.sizes[n] * (upper - choice[n])
                    gain = sens.drops[n][choice[n]] - sens.drops[n][upper]
                    if cost() + extra <= budget and gain > 0:
                        ups.append((-gain / extra, n, upper))
            if not ups:
                return choice
            _, n, upper = min(ups)
            choice[n] = upper
    raise ValueError(f"method must be 'knapsack' or 'greedy', not {method!r}")


def mixed_config(base: QuantConfig, bits: dict[str, int]) -> QuantConfig:
    """``base`` with each named layer's weight spec at the chosen bit width."""
    return replace(
        base, layers={**base.layers, **{n: base.weight.with_bits(b) for n, b in bits.items()}}
    )
