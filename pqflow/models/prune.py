"""Static pruning at every granularity of the survey: masks, schedules, physical removal.

``prune(model, granularity, criterion, amount)`` zeroes a chosen set of weight *groups*
and records the choice as masks the trainer honours (``weight_mask`` / ``bias_mask``
buffers, re-applied after every optimizer step), so pruned weights stay zero through
fine-tuning. Masks only ever shrink: a group pruned once stays pruned.

Granularities (the group that is kept or removed as a whole):

- ``element`` — one weight of a Linear or Conv2d (unstructured).
- ``nm`` — N:M: of every M consecutive weights along the input dimension, N are kept.
  For a Linear that is M consecutive inputs; for a Conv2d, M consecutive input channels
  at one (filter, kh, kw) position, the reduction order of the IR's channels-last
  convolution. Layers whose input dimension is not a multiple of M are left alone
  (the first conv of an image model, with one input channel, for instance).
- ``kernel`` — one whole kh x kw kernel ``W[o, i]`` of a Conv2d (shape-wise pruning).
- ``channel`` — one input channel of a *channel space* (below): ``W[:, c]`` of every
  layer that reads the space.
- ``filter`` — one output filter of a channel space: row ``c`` of every layer that
  writes the space, with its bias and its batch-norm scale and shift.
- ``layer`` — one ``zoo.ResidualBlock``: its residual path is switched off (its
  ``residual_mask`` and its convolutions' masks set to 0), leaving ``relu(skip(x))``.

A *channel space* is the channel (or feature) dimension of a tensor between layers, as
``channel_spaces`` finds it by walking the model: the layers writing it (producers, each
with the batch norm that follows it) and the layers reading it (consumers). A residual
add merges the spaces of its two operands, so the producers of both paths are pruned
together and the add stays consistent. The model's input and output spaces are fixed.

Criteria, the score of a group (lowest scores are pruned first):

- ``l1`` — mean |w| over the group; ``l2`` — root mean square of w (for single elements
  both rank alike; for groups they differ).
- ``taylor`` — first-order Taylor importance: |w * dL/dw| summed over ``batches``
  mini-batches of ``data=(x, y)`` (cross-entropy, model in eval mode), averaged over
  the group.
- ``random`` — a seeded uniform draw per group, the baseline.

Means rather than sums make groups of different sizes comparable, which matters for
``scope="global"`` (one threshold over every layer); ``scope="layer"`` prunes the same
fraction of each layer (each channel space, for ``channel`` and ``filter``). ``amount``
is the fraction of groups removed, in [0, 1): exactly ``round(amount * n)`` of the ``n``
groups of each layer (``layer`` scope) or of the model (``global``), counting groups
already pruned. Global structured pruning always keeps at least one channel per space.

``gradual_prune`` raises the sparsity step by step along the polynomial schedule of Zhu &
Gupta (2017), fine-tuning between steps. ``prune_during_training`` applies the same
schedule inside one training run (optionally distilling from the dense model): the
recipe that keeps the digits ``mlp`` within a point of float at 90% element sparsity.
``shrink`` returns a physically smaller copy: every channel whose producers all output
exactly zero, or whose consumers all ignore it, disappears with the matching weights,
biases, batch-norm entries and masks, and switched-off residual blocks lose their
residual path. The smaller model computes the same
function as the masked one.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from pqflow.models.train import TrainConfig, apply_masks, deterministic, train
from pqflow.models.zoo import ChannelsFirst, FlattenHWC, ResidualBlock

__all__ = [
    "CRITERIA",
    "GRANULARITIES",
    "SCOPES",
    "Consumer",
    "LayerSparsity",
    "PRUNE_DURING_TRAINING",
    "Producer",
    "Space",
    "SparsityReport",
    "channel_spaces",
    "gradual_prune",
    "parameter_count",
    "polynomial_schedule",
    "polynomial_sparsity",
    "prune",
    "prune_during_training",
    "shrink",
    "sparsity_report",
    "taylor_scores",
]

GRANULARITIES = ("element", "nm", "kernel", "channel", "filter", "layer")
CRITERIA = ("l1", "l2", "taylor", "random")
SCOPES = ("layer", "global")

Weighted = nn.Linear | nn.Conv2d
Norm = nn.BatchNorm1d | nn.BatchNorm2d

# --- channel spaces -------------------------------------------------------------------------


@dataclass(eq=False)
class Producer:
    """A layer writing a channel space (its output dimension), with the norm after it."""

    module: Weighted
    norm: Norm | None = None


@dataclass(eq=False)
class Consumer:
    """A layer reading a channel space (its input dimension).

    ``layout`` says how a Linear's input features map to channels: ``channel`` (feature
    = channel), ``hwc`` (after ``zoo.FlattenHWC``: feature = p * C + c) or ``chw``
    (after ``nn.Flatten``: feature = c * P + p), with P spatial positions.
    """

    module: Weighted
    layout: str = "channel"

    def columns(self, size: int) -> torch.Tensor:
        """(size, P) input indices of the module reading each channel of the space."""
        n_in = self.module.weight.shape[1]
        p = n_in // size
        c = torch.arange(size)[:, None]
        q = torch.arange(p)[None, :]
        if self.layout == "chw":
            return c * p + q
        return q * size + c  # "hwc"; "channel" has p == 1

    def view(self, t: torch.Tensor, size: int) -> torch.Tensor:
        """``t`` (shaped like the weight) regrouped as (size, -1): row c reads channel c."""
        if isinstance(self.module, nn.Conv2d):
            return t.transpose(0, 1).reshape(size, -1)
        cols = self.columns(size)
        return t[:, cols.flatten()].reshape(t.shape[0], size, -1).transpose(0, 1).reshape(size, -1)

    def mask(self, keep: torch.Tensor) -> torch.Tensor:
        """A weight-shaped 0/1 mask keeping the channels where ``keep`` (bool, (size,))."""
        w = self.module.weight
        if isinstance(self.module, nn.Conv2d):
            return keep.to(w.dtype)[None, :, None, None].expand_as(w).clone()
        cols = torch.zeros(w.shape[1], dtype=w.dtype)
        cols[self.columns(len(keep))[keep].flatten()] = 1
        return cols[None, :].expand_as(w).clone()


@dataclass(eq=False)
class Space:
    """A channel dimension shared by its producers' outputs and its consumers' inputs."""

    name: str
    size: int
    fixed: bool = False
    producers: list[Producer] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)


_PASS_THROUGH = (
    ChannelsFirst,
    nn.ReLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Dropout,
    nn.Identity,
)


def channel_spaces(model: nn.Module) -> list[Space]:
    """The channel spaces of ``model``, in order; the first (input) and last are fixed.

    Understands ``nn.Sequential`` (nested too) of Linear, Conv2d (groups=1), BatchNorm,
    ReLU, pooling, Dropout, Identity, Flatten and the zoo's ``ChannelsFirst``,
    ``FlattenHWC`` and ``ResidualBlock``; anything else raises.
    """
    names = {id(m): name or "model" for name, m in model.named_modules()}
    spaces: list[Space] = []

    def new_space(size: int, name: str, producer: Weighted | None) -> Space:
        s = Space(name, size, producers=[] if producer is None else [Producer(producer)])
        spaces.append(s)
        return s

    def walk(m: nn.Module, s: Space, layout: str) -> tuple[Space, str]:
        name = names.get(id(m), type(m).__name__)
        if isinstance(m, ResidualBlock):
            r, _ = walk(m.residual, s, layout)
            k, _ = walk(m.skip, s, layout)
            if r.size != k.size:
                raise ValueError(
                    f"residual block '{name}': the residual path gives {r.size} channels, "
                    f"the skip {k.size}; the add needs equal counts"
                )
            if r is not k:
                k.producers += r.producers
                k.consumers += r.consumers
                k.fixed |= r.fixed
                spaces.remove(r)
            return k, layout
        if isinstance(m, nn.Sequential):
            for child in m:
                s, layout = walk(child, s, layout)
            return s, layout
        if isinstance(m, _PASS_THROUGH):
            return s, layout
        if isinstance(m, FlattenHWC):
            return s, "hwc"
        if isinstance(m, nn.Flatten):
            return s, "chw"
        if isinstance(m, nn.Conv2d):
            if m.groups != 1:
                raise ValueError(
                    f"conv '{name}': grouped convolutions (groups={m.groups}) are not supported"
                )
            if m.in_channels != s.size:
                raise ValueError(
                    f"conv '{name}' reads {m.in_channels} channels, its input has {s.size}"
                )
            s.consumers.append(Consumer(m))
            return new_space(m.out_channels, name, m), "channel"
        if isinstance(m, nn.Linear):
            if m.in_features % s.size:
                raise ValueError(
                    f"linear '{name}' reads {m.in_features} features, not a multiple of "
                    f"its input's {s.size} channels"
                )
            s.consumers.append(Consumer(m, "channel" if m.in_features == s.size else layout))
            return new_space(m.out_features, name, m), "channel"
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            if not s.producers or s.producers[-1].norm is not None or not m.affine:
                raise ValueError(
                    f"batch norm '{name}' must follow a Linear or Conv2d and be affine"
                )
            s.producers[-1].norm = m
            return s, layout
        raise ValueError(
            f"module '{name}' ({type(m).__name__}) is not supported by channel_spaces; "
            "expected Sequential, Linear, Conv2d, BatchNorm, ReLU, pooling, Flatten, "
            "FlattenHWC, ChannelsFirst or ResidualBlock"
        )

    first = next((m for m in model.modules() if isinstance(m, Weighted)), None)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv2d layer")
    size = first.in_channels if isinstance(first, nn.Conv2d) else first.in_features
    inp = new_space(size, "input", None)
    out, _ = walk(model, inp, "channel")
    inp.fixed = out.fixed = True
    return spaces


# --- scores ---------------------------------------------------------------------------------


def taylor_scores(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    batches: int = 4,
    batch_size: int = 64,
) -> dict[nn.Module, torch.Tensor]:
    """First-order Taylor importance |w * dL/dw| of every Linear/Conv2d weight.

    Summed over the first ``batches`` mini-batches of (x, y) in order; cross-entropy
    loss; the model runs in eval mode (batch-norm statistics untouched) and its
    parameters' ``.grad`` are left as they were.
    """
    mods = [m for m in model.modules() if isinstance(m, Weighted)]
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    scores = {m: torch.zeros_like(m.weight, dtype=torch.float64) for m in mods}
    was_training = model.training
    model.eval()
    try:
        for b in range(batches):
            xb, yb = (
                xt[b * batch_size : (b + 1) * batch_size],
                yt[b * batch_size : (b + 1) * batch_size],
            )
            if len(xb) == 0:
                break
            with torch.enable_grad():
                loss = nn.functional.cross_entropy(model(xb), yb)
                grads = torch.autograd.grad(loss, [m.weight for m in mods])
            for m, g in zip(mods, grads, strict=True):
                scores[m] += (m.weight.detach() * g).abs().double()
    finally:
        model.train(was_training)
    return scores


@dataclass(frozen=True)
class _Scorer:
    """Element values to pool into group scores, per criterion."""

    criterion: str
    taylor: dict[nn.Module, torch.Tensor] | None
    gen: torch.Generator

    def elements(self, m: Weighted) -> torch.Tensor:
        w = m.weight.detach().double()
        if self.criterion == "l1":
            return w.abs()
        if self.criterion == "l2":
            return w * w
        if self.criterion == "taylor":
            return self.taylor[m]
        return torch.zeros_like(w)  # random: drawn per group by ``finish``

    def finish(self, total: torch.Tensor, count: int) -> torch.Tensor:
        """Group scores from per-group sums of ``elements`` over ``count`` elements each."""
        if self.criterion == "random":
            return torch.rand(total.shape, generator=self.gen, dtype=torch.float64)
        mean = total / max(count, 1)
        return mean.sqrt() if self.criterion == "l2" else mean


# --- group units: what ``prune`` ranks ------------------------------------------------------


@dataclass(eq=False)
class _Unit:
    """One layer's (or space's, or the model's) groups: scores, already-pruned flags and
    a callback that writes the masks for a bool ``keep`` vector over the groups."""

    name: str
    scores: torch.Tensor
    pruned: torch.Tensor
    apply: Callable[[torch.Tensor], None]
    keep_one: bool = False


def _mask_of(module: nn.Module, attr: str = "weight") -> torch.Tensor:
    t = getattr(module, attr)
    mask = getattr(module, f"{attr}_mask", None)
    return torch.ones_like(t) if mask is None else mask


@torch.no_grad()
def _and_mask(module: nn.Module, mask: torch.Tensor, attr: str = "weight") -> None:
    """AND ``mask`` into the module's ``{attr}_mask`` buffer (created if absent); apply it."""
    t = getattr(module, attr)
    mask = mask.to(t.dtype)
    name = f"{attr}_mask"
    if getattr(module, name, None) is None:
        module.register_buffer(name, mask.clone())
    else:
        getattr(module, name).mul_(mask)
    t.mul_(getattr(module, name))


def _weighted(model: nn.Module) -> list[tuple[str, Weighted]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, Weighted)]


def _element_units(model: nn.Module, sc: _Scorer) -> list[_Unit]:
    units = []
    for name, m in _weighted(model):
        e = sc.elements(m).flatten()
        pruned = _mask_of(m).flatten() == 0
        shape = m.weight.shape

        def apply(keep, m=m, shape=shape):
            _and_mask(m, keep.reshape(shape))

        units.append(_Unit(name, sc.finish(e, 1), pruned, apply))
    return units


def _kernel_units(model: nn.Module, sc: _Scorer) -> list[_Unit]:
    units = []
    for name, m in _weighted(model):
        if not isinstance(m, nn.Conv2d):
            continue
        o, i, kh, kw = m.weight.shape
        e = sc.elements(m).reshape(o * i, kh * kw)
        pruned = (_mask_of(m).reshape(o * i, -1) == 0).all(dim=1)

        def apply(keep, m=m):
            _and_mask(m, keep.reshape(*m.weight.shape[:2], 1, 1).expand_as(m.weight))

        units.append(_Unit(name, sc.finish(e.sum(dim=1), kh * kw), pruned, apply))
    return units


def _filter_dead(p: Producer, c: torch.Tensor | slice = slice(None)) -> torch.Tensor:
    """Which channels of ``p`` output exactly zero whatever the input (bool per channel)."""
    if p.norm is not None:
        return (p.norm.weight[c] == 0) & (p.norm.bias[c] == 0)
    w = p.module.weight.reshape(p.module.weight.shape[0], -1)[c]
    dead = (w == 0).all(dim=1)
    if p.module.bias is not None:
        dead &= p.module.bias[c] == 0
    return dead


def _space_units(model: nn.Module, sc: _Scorer, kind: str, keep_one: bool) -> list[_Unit]:
    units = []
    for s in channel_spaces(model):
        if s.fixed or not s.producers or not s.consumers:
            continue
        total = torch.zeros(s.size, dtype=torch.float64)
        count = 0
        if kind == "filter":
            for p in s.producers:
                e = sc.elements(p.module).reshape(s.size, -1)
                total += e.sum(dim=1)
                count += e.shape[1]
            pruned = torch.stack(
                [(_mask_of(p.module).reshape(s.size, -1) == 0).all(dim=1) for p in s.producers]
            ).all(dim=0)

            def apply(keep, s=s):
                for p in s.producers:
                    shape = (-1,) + (1,) * (p.module.weight.dim() - 1)
                    _and_mask(p.module, keep.reshape(shape).expand_as(p.module.weight))
                    if p.module.bias is not None:
                        _and_mask(p.module, keep, "bias")
                    if p.norm is not None:
                        _and_mask(p.norm, keep)
                        _and_mask(p.norm, keep, "bias")

        else:
            for cons in s.consumers:
                e = cons.view(sc.elements(cons.module), s.size)
                total += e.sum(dim=1)
                count += e.shape[1]
            pruned = torch.stack(
                [(cons.view(_mask_of(cons.module), s.size) == 0).all(dim=1) for cons in s.consumers]
            ).all(dim=0)

            def apply(keep, s=s):
                for cons in s.consumers:
                    _and_mask(cons.module, cons.mask(keep))

        units.append(_Unit(s.name, sc.finish(total, count), pruned, apply, keep_one))
    return units


def _nm_rows(t: torch.Tensor, m: int) -> torch.Tensor:
    """Weight-shaped ``t`` as (groups, m): m consecutive inputs (input channels of a conv
    at one (filter, kh, kw) position, channels-last order)."""
    return (t.permute(0, 2, 3, 1) if t.dim() == 4 else t).reshape(-1, m)


def _nm_back(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The inverse of ``_nm_rows``: (groups, m) back to the shape of ``like``."""
    if like.dim() == 4:
        o, i, kh, kw = like.shape
        return rows.reshape(o, kh, kw, i).permute(0, 3, 1, 2)
    return rows.reshape(like.shape)


def _nm_units(model: nn.Module, sc: _Scorer, m: int) -> list[_Unit]:
    """One unit per eligible layer; its groups are single elements, arranged (groups, m)."""
    units = []
    for name, mod in _weighted(model):
        if mod.weight.shape[1] % m:
            continue
        scores = sc.finish(_nm_rows(sc.elements(mod), m), 1)
        pruned = _nm_rows(_mask_of(mod), m) == 0

        def apply(keep, mod=mod):
            _and_mask(mod, _nm_back(keep, mod.weight))

        units.append(_Unit(name, scores, pruned, apply))
    return units


def _layer_units(model: nn.Module, sc: _Scorer) -> list[_Unit]:
    blocks = [(n, b) for n, b in model.named_modules() if isinstance(b, ResidualBlock)]
    total, counts, names = [], [], []
    for name, b in blocks:
        convs = [m for m in b.residual.modules() if isinstance(m, Weighted)]
        total.append(sum(float(sc.elements(c).sum()) for c in convs))
        counts.append(sum(c.weight.numel() for c in convs))
        names.append(name)
    means = torch.tensor(total, dtype=torch.float64) / torch.tensor(counts, dtype=torch.float64)
    if sc.criterion == "l2":
        means = means.sqrt()
    if sc.criterion == "random":
        means = torch.rand(len(blocks), generator=sc.gen, dtype=torch.float64)
    pruned = torch.tensor([bool(b.residual_mask == 0) for _, b in blocks])

    @torch.no_grad()
    def apply(keep):
        for (_, b), k in zip(blocks, keep.tolist(), strict=True):
            if not k:
                b.residual_mask.zero_()
                for c in b.residual.modules():
                    if isinstance(c, Weighted):
                        _and_mask(c, torch.zeros_like(c.weight))

    return [_Unit("blocks", means, pruned, apply)]


# --- prune ----------------------------------------------------------------------------------


def _check_amount(granularity: str, amount: float | None) -> float:
    if granularity == "nm":
        if amount is not None:
            raise ValueError(
                f"granularity 'nm' takes n and m, not amount (its sparsity is 1 - n/m); "
                f"got amount={amount!r}"
            )
        return 0.0
    if amount is None:
        raise ValueError(
            f"granularity {granularity!r} needs amount, the fraction of groups to remove, in [0, 1)"
        )
    if not isinstance(amount, int | float) or not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be a number in [0, 1), not {amount!r}")
    return float(amount)


def _choose(units: list[_Unit], amount: float, scope: str) -> list[torch.Tensor]:
    """Bool keep vectors, one per unit, pruning exactly round(amount * n) groups."""

    def ranked(scores: torch.Tensor, pruned: torch.Tensor, keep_one: bool) -> torch.Tensor:
        s = scores.clone()
        s[pruned] = -math.inf
        if keep_one and len(s):  # a space must keep one channel: its best one
            s[int(torch.argmax(torch.where(pruned, -math.inf, scores)))] = math.inf
        return s

    if scope == "layer":
        keeps = []
        for u in units:
            n = len(u.scores)
            k = max(round(amount * n), int(u.pruned.sum()))
            if u.keep_one and k >= n:
                raise ValueError(
                    f"amount {amount} would remove all {n} channels of '{u.name}'; "
                    f"use a smaller amount or scope='global'"
                )
            keep = torch.ones(n, dtype=torch.bool)
            keep[torch.argsort(ranked(u.scores, u.pruned, False), stable=True)[:k]] = False
            keeps.append(keep)
        return keeps
    flat = torch.cat([ranked(u.scores, u.pruned, u.keep_one) for u in units])
    already = int(torch.cat([u.pruned for u in units]).sum())
    k = max(round(amount * len(flat)), already)
    keep = torch.ones(len(flat), dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[:k]] = False
    return list(torch.split(keep, [len(u.scores) for u in units]))


def prune(
    model: nn.Module,
    granularity: str = "element",
    criterion: str = "l1",
    amount: float | None = None,
    *,
    scope: str = "layer",
    n: int = 2,
    m: int = 4,
    data: tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor] | None = None,
    batches: int = 4,
    seed: int = 0,
) -> nn.Module:
    """Prune ``model`` in place by masks and return it (see the module doc).

    ``amount``: fraction of groups to remove, in [0, 1) (not for ``nm``, which keeps
    ``n`` of every ``m``). ``scope``: ``layer`` or ``global``. ``data=(x, y)`` and
    ``batches`` feed the ``taylor`` criterion; ``seed`` the ``random`` one.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"unknown granularity {granularity!r}; known granularities: {', '.join(GRANULARITIES)}"
        )
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; known criteria: {', '.join(CRITERIA)}")
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; known scopes: {', '.join(SCOPES)}")
    amount = _check_amount(granularity, amount)
    if granularity == "nm" and not 1 <= n <= m:
        raise ValueError(
            f"N:M pruning keeps n of every m weights, so 1 <= n <= m; got n={n}, m={m}"
        )
    taylor = None
    if criterion == "taylor":
        if data is None:
            raise ValueError("criterion 'taylor' needs data=(x, y) to compute gradients")
        taylor = taylor_scores(model, data[0], data[1], batches=batches)
    sc = _Scorer(criterion, taylor, torch.Generator().manual_seed(seed))
    what = type(model).__name__

    if granularity == "element":
        units = _element_units(model, sc)
    elif granularity == "kernel":
        units = _kernel_units(model, sc)
    elif granularity in ("channel", "filter"):
        units = _space_units(model, sc, granularity, keep_one=True)
    elif granularity == "layer":
        if not any(isinstance(b, ResidualBlock) for b in model.modules()):
            raise ValueError(f"layer-wise pruning needs residual blocks; {what} has none")
        units = _layer_units(model, sc)
    else:
        units = _nm_units(model, sc, m)
        if not units:
            raise ValueError(
                f"N:M pruning found no layer of {what} whose input size is a multiple of m={m}"
            )
        with torch.no_grad():
            for u in units:
                s = u.scores.clone()
                s[u.pruned] = -math.inf
                drop = torch.argsort(s, dim=1, stable=True)[:, : m - n]
                keep = torch.ones_like(s, dtype=torch.bool).scatter_(1, drop, False)
                u.apply(keep & ~u.pruned)
        return model
    if not units:
        raise ValueError(f"granularity {granularity!r} found nothing to prune in {what}")
    with torch.no_grad():
        for u, keep in zip(units, _choose(units, amount, scope), strict=True):
            u.apply(keep)
    return model


# --- gradual pruning ------------------------------------------------------------------------


def polynomial_sparsity(
    t: float, s_i: float, s_f: float, n: int, t0: float = 0.0, dt: float = 1.0
) -> float:
    """Zhu & Gupta (2017): ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))**3``.

    Clamped to s_i before t0 and to s_f after ``t0 + n * dt``.
    """
    if n < 1 or dt <= 0:
        raise ValueError(f"the schedule needs n >= 1 steps and dt > 0; got n={n}, dt={dt}")
    frac = (t - t0) / (n * dt)
    if frac <= 0:
        return s_i
    if frac >= 1:
        return s_f
    return s_f + (s_i - s_f) * (1.0 - frac) ** 3


def polynomial_schedule(s_i: float, s_f: float, n: int) -> list[float]:
    """The sparsities after each of ``n`` pruning steps (t = 1..n, t0 = 0, dt = 1)."""
    return [polynomial_sparsity(t, s_i, s_f, n) for t in range(1, n + 1)]


GRADUAL_FINETUNE = TrainConfig(epochs=4, lr=5e-3)
"""Fine-tuning between gradual pruning steps: a few epochs at a low peak rate."""


def gradual_prune(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    final_sparsity: float,
    steps: int = 5,
    *,
    initial_sparsity: float = 0.0,
    granularity: str = "element",
    criterion: str = "l1",
    scope: str = "global",
    finetune: TrainConfig = GRADUAL_FINETUNE,
    final_finetune: TrainConfig | None = None,
    seed: int = 0,
) -> nn.Module:
    """Prune to ``polynomial_schedule(initial_sparsity, final_sparsity, steps)`` step by
    step, fine-tuning on (x, y) with ``finetune`` after each step (and ``final_finetune``
    once more at the end, if given). In place; returns ``model``.

    ``taylor`` scores are taken on (x, y) at every step.
    """
    if granularity == "nm":
        raise ValueError("N:M pruning is one-shot (its sparsity is fixed by n and m)")
    _check_amount(granularity, final_sparsity)
    _check_amount(granularity, initial_sparsity)
    for t, s in enumerate(polynomial_schedule(initial_sparsity, final_sparsity, steps), 1):
        prune(model, granularity, criterion, s, scope=scope, data=(x, y), seed=seed + t)
        train(model, x, y, replace(finetune, seed=finetune.seed + t))
    if final_finetune is not None:
        train(model, x, y, final_finetune)
    return model


PRUNE_DURING_TRAINING = TrainConfig(epochs=80)
"""The training run of ``prune_during_training``: twice a dense run, for the recovery."""


def prune_during_training(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    final_sparsity: float,
    *,
    config: TrainConfig = PRUNE_DURING_TRAINING,
    start_epoch: int = 5,
    end_epoch: int = 50,
    granularity: str = "element",
    criterion: str = "l1",
    scope: str = "layer",
    teacher: nn.Module | None = None,
    distill: float = 0.5,
    temperature: float = 4.0,
    seed: int = 0,
) -> nn.Module:
    """Train ``model`` (from scratch or not) on (x, y) while pruning it, Zhu & Gupta style.

    One run of ``train.train`` (AdamW, one-cycle rate, same seeding and determinism)
    over ``config.epochs`` epochs, with a pruning step at the start of every epoch from
    ``start_epoch + 1`` to ``end_epoch``: the sparsity follows
    ``polynomial_sparsity(epoch, 0, final_sparsity, end_epoch - start_epoch, start_epoch)``
    and reaches ``final_sparsity`` at ``end_epoch``; the remaining epochs (the one-cycle
    rate annealing to zero) fine-tune with the final masks. Unlike ``gradual_prune``, the
    optimizer state and the learning-rate schedule run through the pruning steps.

    With a ``teacher`` (typically the dense model of the same architecture, trained),
    the loss is ``(1 - distill) * cross-entropy + distill * T**2 * KL(teacher_T ||
    model_T)`` on logits softened by ``temperature`` T (Hinton et al. 2015).

    This is the recipe that keeps the digits ``mlp`` within about a point of its dense
    accuracy at 90% element sparsity, where post-training ``gradual_prune`` of the
    trained model loses more (``docs/compression.md``, section 2b, measures both over
    several seeds). In place; returns ``model``
    in eval mode.
    """
    if granularity == "nm":
        raise ValueError("N:M pruning is one-shot (its sparsity is fixed by n and m)")
    _check_amount(granularity, final_sparsity)
    if not 0 <= start_epoch < end_epoch <= config.epochs:
        raise ValueError(
            f"need 0 <= start_epoch < end_epoch <= config.epochs ({config.epochs}); "
            f"got start_epoch={start_epoch}, end_epoch={end_epoch}"
        )
    if not 0.0 <= distill <= 1.0 or temperature <= 0:
        raise ValueError(
            f"distill must be in [0, 1] and temperature > 0; got {distill!r}, {temperature!r}"
        )
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    soft = None
    if teacher is not None:
        was = teacher.training
        teacher.eval()
        with torch.no_grad():
            soft = torch.log_softmax(teacher(xt) / temperature, dim=-1)
        teacher.train(was)
    steps = end_epoch - start_epoch
    with deterministic(config.seed):
        gen = torch.Generator().manual_seed(config.seed)
        n = xt.shape[0]
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        total = config.epochs * -(-n // config.batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        apply_masks(model)
        for epoch in range(config.epochs):
            if start_epoch < epoch <= end_epoch:
                s = polynomial_sparsity(epoch, 0.0, final_sparsity, steps, t0=start_epoch)
                prune(model, granularity, criterion, s, scope=scope, data=(xt, yt), seed=seed)
            model.train()
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, config.batch_size):
                idx = order[start : start + config.batch_size]
                opt.zero_grad(set_to_none=True)
                logits = model(xt[idx])
                loss = loss_fn(logits, yt[idx])
                if soft is not None:
                    kd = nn.functional.kl_div(
                        torch.log_softmax(logits / temperature, dim=-1),
                        soft[idx],
                        log_target=True,
                        reduction="batchmean",
                    )
                    loss = (1 - distill) * loss + distill * temperature**2 * kd
                loss.backward()
                opt.step()
                schedule.step()
                apply_masks(model)
    return model.eval()


# --- physical removal -----------------------------------------------------------------------


def _consumers_ignore(s: Space) -> torch.Tensor:
    return torch.stack(
        [(cons.view(cons.module.weight, s.size) == 0).all(dim=1) for cons in s.consumers]
    ).all(dim=0)


def _slice_param(module: nn.Module, attr: str, index: torch.Tensor, dim: int) -> None:
    t = getattr(module, attr)
    if t is None:
        return
    new = t.detach().index_select(dim, index).clone()
    if isinstance(t, nn.Parameter):
        setattr(module, attr, nn.Parameter(new, requires_grad=t.requires_grad))
    else:
        setattr(module, attr, new)  # a registered buffer stays a buffer


def _slice_out(module: Weighted, keep: torch.Tensor) -> None:
    for attr in ("weight", "weight_mask", "bias", "bias_mask"):
        if getattr(module, attr, None) is not None:
            _slice_param(module, attr, keep, 0)
    if isinstance(module, nn.Conv2d):
        module.out_channels = len(keep)
    else:
        module.out_features = len(keep)


def _slice_norm(norm: Norm, keep: torch.Tensor) -> None:
    for attr in ("weight", "bias", "running_mean", "running_var", "weight_mask", "bias_mask"):
        if getattr(norm, attr, None) is not None:
            _slice_param(norm, attr, keep, 0)
    norm.num_features = len(keep)


def _slice_in(cons: Consumer, keep: torch.Tensor, size: int) -> None:
    if isinstance(cons.module, nn.Conv2d):
        index = keep
        cons.module.in_channels = len(keep)
    else:
        cols = cons.columns(size)[keep]  # (kept, P)
        index = cols.T.flatten() if cons.layout == "hwc" else cols.flatten()
        cons.module.in_features = len(index)
    for attr in ("weight", "weight_mask"):
        if getattr(cons.module, attr, None) is not None:
            _slice_param(cons.module, attr, index, 1)


@torch.no_grad()
def shrink(model: nn.Module) -> nn.Module:
    """A physically smaller copy of ``model`` computing the same function (``model`` is
    not modified).

    Residual blocks with ``residual_mask == 0`` become ``Sequential(*skip, ReLU)``. Then in
    every non-fixed channel space, each channel whose producers all output exactly zero
    (zero batch-norm scale and shift, or zero filter and bias) or whose consumers all
    have zero weights on it is removed: producer rows, biases, batch-norm entries,
    consumer columns and the masks with them. At least one channel per space is kept.
    """
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for key, child in list(parent._modules.items()):
            if isinstance(child, ResidualBlock) and bool(child.residual_mask == 0):
                parent._modules[key] = nn.Sequential(*child.skip, nn.ReLU())
    for s in channel_spaces(model):
        if s.fixed or not s.producers or not s.consumers:
            continue
        dead = torch.stack([_filter_dead(p) for p in s.producers]).all(dim=0)
        dead |= _consumers_ignore(s)
        if dead.all():
            dead[0] = False
        if not dead.any():
            continue
        keep = torch.nonzero(~dead).flatten()
        for cons in s.consumers:
            _slice_in(cons, keep, s.size)
        for p in s.producers:
            _slice_out(p.module, keep)
            if p.norm is not None:
                _slice_norm(p.norm, keep)
    return model


# --- reports --------------------------------------------------------------------------------


def parameter_count(model: nn.Module) -> int:
    """Number of parameters (weights, biases, batch-norm scales and shifts) of ``model``."""
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class LayerSparsity:
    """Zeros of one Linear/Conv2d weight, and the structures they form.

    ``zero_filters`` counts all-zero output rows, ``zero_channels`` all-zero input
    columns (input channels for a conv), ``zero_kernels`` all-zero kh x kw kernels
    (0 for a Linear). ``pattern`` names the most specific structure that holds every
    zero, for generators that exploit sparsity: ``dense``, ``filter``, ``channel``,
    ``kernel``, ``N:M`` (e.g. ``2:4``, along the input dimension, M in 4 or 8) or
    ``unstructured``.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    weights: int
    zeros: int
    zero_filters: int
    zero_channels: int
    zero_kernels: int
    pattern: str = "dense"

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer sparsity of a model plus its totals; ``str()`` is a table."""

    layers: tuple[LayerSparsity, ...]
    parameters: int

    @property
    def weights(self) -> int:
        return sum(ly.weights for ly in self.layers)

    @property
    def zeros(self) -> int:
        return sum(ly.zeros for ly in self.layers)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0

    def __str__(self) -> str:
        rows = [
            f"{'layer':<24} {'kind':<7} {'shape':<18} {'sparsity':>8} "
            f"{'filters':>8} {'channels':>8} {'kernels':>8}  pattern"
        ]
        for ly in self.layers:
            rows.append(
                f"{ly.name:<24} {ly.kind:<7} {str(ly.shape):<18} {ly.sparsity:>8.1%} "
                f"{ly.zero_filters:>8} {ly.zero_channels:>8} {ly.zero_kernels:>8}  {ly.pattern}"
            )
        rows.append(
            f"total: {self.zeros}/{self.weights} weights zero ({self.sparsity:.1%}), "
            f"{self.parameters} parameters"
        )
        return "\n".join(rows)


def _layer_sparsity(name: str, m: Weighted) -> LayerSparsity:
    w = m.weight.detach()
    z = w == 0
    o, i = w.shape[:2]
    filters = z.reshape(o, -1).all(dim=1)
    channels = z.transpose(0, 1).reshape(i, -1).all(dim=1)
    kernels = z.reshape(o, i, -1).all(dim=2) if w.dim() == 4 else None
    zeros = int(z.sum())
    return LayerSparsity(
        name=name,
        kind="conv" if isinstance(m, nn.Conv2d) else "linear",
        shape=tuple(w.shape),
        weights=w.numel(),
        zeros=zeros,
        zero_filters=int(filters.sum()),
        zero_channels=int(channels.sum()),
        zero_kernels=0 if kernels is None else int(kernels.sum()),
        pattern=_pattern(z, filters, channels, kernels),
    )


def _pattern(z: torch.Tensor, filters, channels, kernels) -> str:
    zeros = int(z.sum())
    if zeros == 0:
        return "dense"
    per_filter = z[0].numel()
    if int(filters.sum()) * per_filter == zeros:
        return "filter"
    if int(channels.sum()) * (z.numel() // z.shape[1]) == zeros:
        return "channel"
    if kernels is not None and int(kernels.sum()) * z[0, 0].numel() == zeros:
        return "kernel"
    for m in (4, 8):
        if z.shape[1] % m == 0:
            nonzero = (~_nm_rows(z, m)).sum(dim=1)
            if int(nonzero.max()) < m and bool((nonzero == nonzero.max()).all()):
                return f"{int(nonzero.max())}:{m}"
    return "unstructured"


def sparsity_report(model: nn.Module, layers: Iterable[str] | None = None) -> SparsityReport:
    """Per Linear/Conv2d zeros and zero structures (optionally only the named layers)."""
    wanted = None if layers is None else set(layers)
    rows = tuple(
        _layer_sparsity(n, m) for n, m in _weighted(model) if wanted is None or n in wanted
    )
    return SparsityReport(rows, parameter_count(model))
