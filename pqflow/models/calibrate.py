"""Post-training calibration of activation ranges, by observers on real data.

``calibrate(model, x, method)`` attaches a forward pre-hook to every activation
``Quantizer`` of a quantized model (not the weight quantizers: those take their range
from the weights), switches the quantizers off so the observers see float activations
(weights stay quantized), runs ``x`` through in batches, and sets each quantizer's range
from its observer:

- ``minmax``: the observed [min, max].
- ``percentile``: the ``percentile`` and ``100 - percentile`` quantiles of the values
  (of |x| for symmetric signed grids), so rare outliers are clipped.
- ``mse``: the clip ``c`` (over ``n_grid`` linear and ``n_grid`` geometric candidates up
  to the max) minimising
  ``mean((x - q_c(x))**2)`` on the quantizer's own grid.
- ``kl``: TensorRT's entropy calibration: a 2048-bin histogram of |x|; for each
  candidate threshold bin ``i``, the clipped distribution P (outliers folded into bin
  ``i - 1``) and its quantization Q to the grid's number of levels, expanded back;
  the threshold minimising KL(P || Q).

Observers keep a bounded random subsample (``max_samples`` values, seeded) so memory
stays flat on any amount of data.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from pqflow.models.quantizers import Quantizer, QuantSpec, fake_quantize, qparams_from_range

__all__ = ["METHODS", "Observer", "calibrate", "kl_threshold", "mse_threshold", "range_of"]

METHODS = ("minmax", "percentile", "mse", "kl")


class Observer:
    """Collects activation statistics: exact min/max plus a bounded random subsample."""

    def __init__(self, max_samples: int = 200_000, seed: int = 0) -> None:
        self.lo = float("inf")
        self.hi = float("-inf")
        self.max_samples = max_samples
        self.samples: list[np.ndarray] = []
        self.count = 0
        self.rng = np.random.default_rng(seed)

    def __call__(self, x: torch.Tensor) -> None:
        v = x.detach().double().flatten().numpy()
        if v.size == 0:
            return
        self.lo = min(self.lo, float(v.min()))
        self.hi = max(self.hi, float(v.max()))
        self.count += v.size
        keep = min(v.size, self.max_samples)
        self.samples.append(v if keep == v.size else self.rng.choice(v, keep, replace=False))

    def values(self) -> np.ndarray:
        v = np.concatenate(self.samples) if self.samples else np.zeros(1)
        if v.size > self.max_samples:
            v = self.rng.choice(v, self.max_samples, replace=False)
        return v


def _magnitudes(v: np.ndarray, spec: QuantSpec) -> np.ndarray:
    return np.abs(v) if spec.signed else np.clip(v, 0, None)


def mse_threshold(
    v: np.ndarray, spec: QuantSpec, n_grid: int = 100, max_values: int = 16384
) -> float:
    """The clip in (0, max] with the least squared quantization error on ``v``.

    Candidates: ``n_grid`` evenly spaced up to the max, and ``n_grid`` geometrically
    spaced from the median magnitude to the max (heavy tails put the optimum far below it).

    The error is measured on at most ``max_values`` of the values (a seeded subsample).
    """
    m = float(_magnitudes(v, spec).max())
    if m == 0:
        return 0.0
    if v.size > max_values:
        v = np.random.default_rng(0).choice(v, max_values, replace=False)
    x = torch.from_numpy(v)
    best, best_c = float("inf"), m
    a = _magnitudes(v, spec)
    low = max(float(np.percentile(a, 50)), m / 2**16)  # heavy tails: search down to the median
    grid = np.unique(
        np.concatenate([np.linspace(m / n_grid, m, n_grid), np.geomspace(low, m, n_grid)])
    )
    for c in grid:
        lo = -c if spec.signed else 0.0
        scale, zp = qparams_from_range(spec, torch.tensor(lo), torch.tensor(c))
        err = float(
            ((fake_quantize(x, scale.double(), zp.double(), spec.qmin, spec.qmax) - x) ** 2).mean()
        )
        if err < best:
            best, best_c = err, float(c)
    return best_c


def kl_threshold(v: np.ndarray, spec: QuantSpec, bins: int = 2048) -> float:
    """TensorRT-style entropy calibration threshold of |v| for ``spec``'s number of levels."""
    a = _magnitudes(v, spec)
    m = float(a.max())
    if m == 0:
        return 0.0
    levels = spec.qmax + 1  # magnitude levels of the grid (0 .. qmax)
    hist, edges = np.histogram(a, bins=bins, range=(0.0, m))
    hist = hist.astype(np.float64)
    best, best_i = float("inf"), bins
    for i in range(levels, bins + 1):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        nz = hist[:i] != 0
        # quantize the i reference bins into `levels` groups, spread each over its nonzeros
        idx = (np.arange(i) * levels) // i
        sums = np.bincount(idx, weights=hist[:i], minlength=levels)
        cnts = np.bincount(idx, weights=nz.astype(np.float64), minlength=levels)
        q = np.where(nz, sums[idx] / np.maximum(cnts[idx], 1), 0.0)
        ps, qs = p.sum(), q.sum()
        if ps == 0 or qs == 0:
            continue
        p, q = p / ps, q / qs
        mask = p > 0
        if np.any(q[mask] == 0):
            kl = float("inf")
        else:
            kl = float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
        if kl < best:
            best, best_i = kl, i
    return float(edges[best_i]) if best_i < bins else m


def range_of(
    obs: Observer, spec: QuantSpec, method: str, percentile: float = 99.99
) -> tuple[float, float]:
    """The calibrated (lo, hi) of an observer for ``spec`` by ``method``."""
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {METHODS}, not {method!r}")
    if method == "minmax":
        return obs.lo, obs.hi
    v = obs.values()
    symmetric_signed = spec.symmetric and spec.signed
    if method == "percentile":
        if not 50 < percentile <= 100:
            raise ValueError(f"percentile must be in (50, 100], not {percentile!r}")
        if symmetric_signed:
            c = float(np.percentile(np.abs(v), percentile))
            return -c, c
        return float(np.percentile(v, 100 - percentile)), float(np.percentile(v, percentile))
    c = mse_threshold(v, spec) if method == "mse" else kl_threshold(v, spec)
    if symmetric_signed:
        return -c, c
    return min(obs.lo, 0.0), c


def _act_quantizers(model: nn.Module) -> list[Quantizer]:
    return [m for m in model.modules() if isinstance(m, Quantizer) and not m.dynamic]


@torch.no_grad()
def calibrate(
    model: nn.Module,
    x,
    method: str = "minmax",
    percentile: float = 99.99,
    batch_size: int = 512,
    max_samples: int = 200_000,
) -> dict[str, tuple[float, float]]:
    """Set the range of every activation quantizer of ``model`` from data ``x``.

    Returns the chosen (lo, hi) by quantizer module name. Binary activation quantizers
    need no range and are skipped.
    """
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {METHODS}, not {method!r}")
    names = {id(m): n for n, m in model.named_modules()}
    quants = [q for q in _act_quantizers(model) if q.spec.mode == "uniform"]
    observers = {id(q): Observer(max_samples) for q in quants}
    hooks = []

    def hook_for(obs: Observer) -> Callable:
        def hook(module, args):
            obs(args[0])

        return hook

    for q in quants:
        q.enabled = False
        hooks.append(q.register_forward_pre_hook(hook_for(observers[id(q)])))
    was_training = model.training
    model.eval()
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    try:
        for start in range(0, len(xt), batch_size):
            model(xt[start : start + batch_size])
    finally:
        for h in hooks:
            h.remove()
        for q in quants:
            q.enabled = True
        model.train(was_training)
    ranges = {}
    for q in quants:
        lo, hi = range_of(observers[id(q)], q.spec, method, percentile)
        q.set_range(lo, hi)
        ranges[names[id(q)]] = (lo, hi)
    return ranges
