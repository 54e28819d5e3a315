"""Dynamic (run-time) pruning: zero activations and input-dependent channel gating.

Static pruning (``prune``) removes the same weights for every input. Dynamic pruning
decides per input which work to skip, and this module provides both kinds the survey
describes, plus the measure that tells hardware what it can gain:

- **Activation sparsity.** ``activation_sparsity(model, x)`` is the fraction of exactly
  zero values in the input of every Linear/Conv2d, measured with forward hooks: a
  zero activation multiplies a whole weight column, which a sparse (EIE-style) engine
  skips. ``ThresholdReLU`` raises that fraction: ``y = x * [x > t]`` with a fixed or
  learnable threshold ``t >= 0`` (``t = 0`` is ReLU), trained QAT-style with straight-
  through gradients; ``sparsify`` swaps it in for every ReLU and fine-tunes with an
  optional L1 penalty on the activations.
- **Channel gating** (feature boosting and suppression, Gao et al., 2019). A
  ``ChannelGate`` scores the output channels of a convolution from its input, cheaply
  (global average pool, then one small Linear and a ReLU: the saliency), and keeps
  exactly the ``k`` best per input; the other channels are exactly zero, so hardware
  need not compute them. Kept channels are scaled by their saliency (``scale=True``,
  FBS's "boosting") or passed as they are. ``GatedConvBlock`` is conv-bn-relu with a gate;
  ``gated_cnn`` is the zoo's ``cnn`` with every block gated. The same hard top-k runs in
  training and evaluation; gradients reach the predictor through the saliency scale of
  the kept channels (``scale=True``) or straight through the 0/1 mask (``scale=False``).
  ``channel_gates(model, x)`` gives the gates per input: which channels ran.
  ``qmodules.quantize_model`` quantizes a gated block (``QuantGatedConvBlock``) and
  ``lower`` turns it into the IR's ``ChannelGate``; ``hwgen.amaranth.gated`` builds it as
  one unit that computes only the kept channels.
- **Skipped work.** ``skipped_work(model, x)`` counts, per input and per Linear/Conv2d,
  the multiply-accumulates that meet a zero activation or belong to a gated output
  channel (and, if asked, a zero weight), out of all the MACs on real data.

Ties in the top-k are broken towards the lower channel index (a stable sort), a rule
integer hardware can reproduce. Gates depend only on the input they gate, not on the
rest of the batch (in eval mode, where batch norm uses its running statistics).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pqflow.models.train import TrainConfig, apply_masks, deterministic
from pqflow.models.zoo import ChannelsFirst, FlattenHWC

__all__ = [
    "SPARSIFY",
    "ChannelGate",
    "GatedConvBlock",
    "GatedSequential",
    "SkippedWork",
    "ThresholdReLU",
    "activation_sparsity",
    "channel_gates",
    "gate_convs",
    "gated_cnn",
    "skipped_work",
    "sparsify",
    "train_sparse",
]

Weighted = nn.Linear | nn.Conv2d

_TRAIN = TrainConfig()

SPARSIFY = TrainConfig(epochs=10, lr=2e-3)
"""Fine-tuning after swapping in ``ThresholdReLU``: a quarter of a full run, a low peak rate."""


# --- activation sparsity --------------------------------------------------------------------


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


def _gate_owned(model: nn.Module) -> set[int]:
    """ids of the modules inside a ChannelGate (its predictor is not on the main path)."""
    return {id(m) for g in model.modules() if isinstance(g, ChannelGate) for m in g.modules()}


def _main_layers(model: nn.Module) -> list[tuple[str, Weighted]]:
    owned = _gate_owned(model)
    return [
        (n, m) for n, m in model.named_modules() if isinstance(m, Weighted) and id(m) not in owned
    ]


@contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    """Eval mode without gradients; every submodule's own mode is restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def activation_sparsity(model: nn.Module, x: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Fraction of exactly zero values in the input of every Linear/Conv2d, over all of ``x``.

    Keys are the layers' module names in model order (layers the forward pass never
    reaches are left out, as are the predictors of channel gates, which are not on the
    main path). Runs in eval mode without gradients; the model's mode is restored.
    """
    zeros: dict[str, int] = {}
    total: dict[str, int] = {}

    def hook(name: str) -> Callable:
        def count(module: nn.Module, args: tuple) -> None:
            a = args[0]
            zeros[name] = zeros.get(name, 0) + int((a == 0).sum())
            total[name] = total.get(name, 0) + a.numel()

        return count

    layers = _main_layers(model)
    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers]
    try:
        with _eval(model):
            model(_as_tensor(x))
    finally:
        for h in handles:
            h.remove()
    return {n: zeros[n] / total[n] for n, _ in layers if n in total}


class _ThresholdSTE(torch.autograd.Function):
    """``x * [x > t]``; straight-through for x, a rectangular surrogate of the step for t."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, t: torch.Tensor, window: float) -> torch.Tensor:
        keep = x > t
        ctx.save_for_backward(x, t, keep)
        ctx.window = window
        return x * keep

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, t, keep = ctx.saved_tensors
        gx = g * keep
        gt = None
        if ctx.needs_input_grad[1]:
            # d/dt of x * step(x - t) is -x * delta(x - t); the delta becomes a box of
            # width 2 * window around t.
            near = ((x - t).abs() < ctx.window).to(x.dtype)
            gt = -(g * x * near).sum().reshape(t.shape) / (2 * ctx.window)
        return gx, gt, None


class ThresholdReLU(nn.Module):
    """``y = x if x > t else 0``: a ReLU that also drops small positive activations.

    ``threshold`` is ``t`` (>= 0; ``t = 0`` is exactly ``nn.ReLU``). With
    ``learnable=True`` it is a parameter (clamped at 0 in the forward pass) trained with
    a straight-through estimator: the gradient of the step at ``t`` is replaced by a box
    of half-width ``window``; the input's gradient passes where ``x > t``. Otherwise it
    is a buffer. Unlike ``relu(x - t)``, which a bias already expresses, the kept values
    are not shifted.
    """

    def __init__(self, threshold: float = 0.0, learnable: bool = False, window: float = 0.1):
        super().__init__()
        if threshold < 0:
            raise ValueError(f"ThresholdReLU: threshold must be >= 0, not {threshold!r}")
        if window <= 0:
            raise ValueError(f"ThresholdReLU: window must be > 0, not {window!r}")
        t = torch.tensor(float(threshold))
        if learnable:
            self.threshold = nn.Parameter(t)
        else:
            self.register_buffer("threshold", t)
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ThresholdSTE.apply(x, self.threshold.clamp(min=0), self.window)

    def extra_repr(self) -> str:
        kind = "learnable" if isinstance(self.threshold, nn.Parameter) else "fixed"
        return f"threshold={float(self.threshold.detach()):.4g} ({kind})"


def _replace_relus(module: nn.Module, make: Callable[[], nn.Module]) -> int:
    n = 0
    for name, child in module.named_children():
        if type(child) is nn.ReLU:
            setattr(module, name, make())
            n += 1
        else:
            n += _replace_relus(child, make)
    return n


def train_sparse(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    config: TrainConfig = _TRAIN,
    l1: float = 0.0,
) -> nn.Module:
    """``train.train`` plus ``l1`` times the mean |output| of every ``ThresholdReLU``.

    Same optimizer, schedule, seeding and determinism as ``train.train``; pruning masks
    (``weight_mask``/``bias_mask``) are honoured. Returns the model in eval mode.
    """
    if l1 < 0:
        raise ValueError(f"train_sparse: l1 must be >= 0, not {l1!r}")
    xt = _as_tensor(x)
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    acts: list[torch.Tensor] = []
    handles = [
        m.register_forward_hook(lambda _m, _a, out: acts.append(out))
        for m in model.modules()
        if isinstance(m, ThresholdReLU)
    ]
    try:
        with deterministic(config.seed):
            gen = torch.Generator().manual_seed(config.seed)
            n = xt.shape[0]
            opt = torch.optim.AdamW(
                model.parameters(), lr=config.lr, weight_decay=config.weight_decay
            )
            steps = config.epochs * -(-n // config.batch_size)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps)
            loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
            apply_masks(model)
            model.train()
            for _ in range(config.epochs):
                order = torch.randperm(n, generator=gen)
                for start in range(0, n, config.batch_size):
                    idx = order[start : start + config.batch_size]
                    opt.zero_grad(set_to_none=True)
                    acts.clear()
                    loss = loss_fn(model(xt[idx]), yt[idx])
                    if l1 and acts:
                        loss = loss + l1 * sum(a.abs().mean() for a in acts)
                    loss.backward()
                    opt.step()
                    sched.step()
                    apply_masks(model)
    finally:
        for h in handles:
            h.remove()
        acts.clear()
    return model.eval()


def sparsify(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    threshold: float = 0.0,
    learnable: bool = False,
    l1: float = 0.0,
    config: TrainConfig = SPARSIFY,
    window: float = 0.1,
) -> nn.Module:
    """Activation-threshold pruning: every ``nn.ReLU`` of ``model`` (in place) becomes a
    ``ThresholdReLU(threshold, learnable, window)``, then ``train_sparse`` fine-tunes
    with penalty ``l1``. Returns the model in eval mode.

    Raises ``ValueError`` if the model has no ``nn.ReLU`` to replace.
    """
    n = _replace_relus(model, lambda: ThresholdReLU(threshold, learnable, window))
    if n == 0:
        raise ValueError("sparsify: the model has no nn.ReLU to turn into a ThresholdReLU")
    return train_sparse(model, x, y, config, l1)


# --- channel gating -------------------------------------------------------------------------


class ChannelGate(nn.Module):
    """Per-input gate over ``c_out`` channels, from a block input with ``c_in`` channels.

    ``saliency(x)`` = ``relu(Linear(mean of x over H, W))``, shape (N, c_out) (>= 0).
    ``keep(s)`` is the boolean top-``k`` mask of a saliency: exactly ``k`` True per row,
    ties to the lower index. ``forward(x)`` returns the gate values (N, c_out): the
    saliency on kept channels (``scale=True``) or 1 (``scale=False``), 0 elsewhere. With
    ``scale=False`` the predictor learns straight through the mask (its gradient is the
    saliency's).
    """

    def __init__(self, c_in: int, c_out: int, k: int, scale: bool = True, pool: int = 1) -> None:
        super().__init__()
        if not 1 <= k <= c_out:
            raise ValueError(f"ChannelGate: k must be in 1..{c_out} (c_out), not {k!r}")
        if pool < 1:
            raise ValueError(f"ChannelGate: pool must be a positive int, not {pool!r}")
        n = c_in * pool * pool
        self.norm = nn.BatchNorm1d(n, affine=False)
        self.predictor = nn.Linear(n, c_out)
        nn.init.normal_(self.predictor.weight, std=n**-0.5)
        nn.init.zeros_(self.predictor.bias)
        self.k = k
        self.scale = scale
        self.pool = pool

    def saliency(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.predictor(self.norm(F.adaptive_avg_pool2d(x, self.pool).flatten(1))))

    def keep(self, s: torch.Tensor) -> torch.Tensor:
        idx = torch.sort(s.detach(), dim=1, descending=True, stable=True).indices[:, : self.k]
        return torch.zeros_like(s, dtype=torch.bool).scatter_(1, idx, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.saliency(x)
        m = self.keep(s).to(s.dtype)
        if self.scale:
            return s * m
        return m + (s - s.detach())

    def extra_repr(self) -> str:
        return f"k={self.k}, scale={self.scale}, pool={self.pool}"


class GatedConvBlock(nn.Module):
    """``relu(bn(conv(x))) * gate(x)`` per channel: a conv-bn-relu block whose output
    channels are gated per input (``k`` of ``c_out`` run; the others are exactly zero).

    ``conv`` is 3x3 (``kernel``), same padding, no bias, as in ``zoo.conv_bn_relu``.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        k: int,
        kernel: int = 3,
        scale: bool = True,
        pool: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.gate = ChannelGate(c_in, c_out, k, scale, pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gate(x)
        return self.relu(self.bn(self.conv(x))) * g[:, :, None, None]

    def kept(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean (N, c_out): which output channels run for each input of this block."""
        return self.gate.keep(self.gate.saliency(x))


class GatedSequential(nn.Sequential):
    """An ``nn.Sequential`` with ``gates(x)``: ``channel_gates`` of itself."""

    def gates(self, x: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        return channel_gates(self, x)


def gated_cnn(
    in_channels: int = 1,
    channels: Sequence[int] = (16, 32),
    size: int = 8,
    n_out: int = 10,
    keep: float = 0.5,
    scale: bool = True,
    pool: int = 1,
) -> GatedSequential:
    """The zoo's ``cnn`` with every conv-bn-relu block a ``GatedConvBlock``.

    Each block keeps ``max(1, round(keep * c_out))`` of its ``c_out`` channels per input
    (default: half). Same layout as ``cnn``: channels-last input (N, size, size,
    in_channels), ``ChannelsFirst``, (gated block, 2x2 max pool) per entry of
    ``channels``, ``FlattenHWC``, dense head.
    """
    layers: list[nn.Module] = [ChannelsFirst()]
    c = in_channels
    for c_out in channels:
        if size % 2:
            raise ValueError(
                f"gated_cnn: {len(channels)} 2x2 poolings need an even size, got {size}"
            )
        k = _k(keep, c_out)
        layers += [GatedConvBlock(c, c_out, k, scale=scale, pool=pool), nn.MaxPool2d(2)]
        c, size = c_out, size // 2
    layers += [FlattenHWC(), nn.Linear(c * size * size, n_out)]
    return GatedSequential(*layers)


def _k(keep: float, c_out: int) -> int:
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be a fraction in (0, 1], not {keep!r}")
    return max(1, round(keep * c_out))


def gate_convs(
    model: nn.Sequential, keep: float = 0.5, scale: bool = True, pool: int = 1
) -> GatedSequential:
    """A gated copy of ``model``: every ``Conv2d, BatchNorm2d, ReLU`` run of its top level
    becomes a ``GatedConvBlock`` holding copies of that conv and batch norm, keeping
    ``max(1, round(keep * c_out))`` channels; every other module is copied as it is.

    FBS's recipe: gate a trained network, then fine-tune (``train.train`` with
    ``train.FINETUNE``). Gates start untrained. ``model`` is left unchanged; raises
    ``ValueError`` when it has no such run.
    """
    src = list(model)
    out: list[nn.Module] = []
    i = 0
    while i < len(src):
        run = src[i : i + 3]
        if (
            len(run) == 3
            and type(run[0]) is nn.Conv2d
            and type(run[1]) is nn.BatchNorm2d
            and type(run[2]) is nn.ReLU
        ):
            conv, bn = run[0], run[1]
            block = GatedConvBlock(
                conv.in_channels,
                conv.out_channels,
                _k(keep, conv.out_channels),
                scale=scale,
                pool=pool,
            )
            block.conv, block.bn = copy.deepcopy(conv), copy.deepcopy(bn)
            out.append(block)
            i += 3
        else:
            out.append(copy.deepcopy(src[i]))
            i += 1
    if not any(isinstance(m, GatedConvBlock) for m in out):
        raise ValueError("gate_convs: the model has no Conv2d, BatchNorm2d, ReLU run to gate")
    return GatedSequential(*out)


def channel_gates(model: nn.Module, x: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """Per gated block (module name, in model order): bool (N, c_out), which channels ran.

    Runs ``model`` on ``x`` in eval mode; every row has exactly ``k`` True.
    """
    found: dict[str, np.ndarray] = {}

    def hook(name: str) -> Callable:
        def record(block: GatedConvBlock, args: tuple) -> None:
            found[name] = block.kept(args[0]).numpy()

        return record

    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, GatedConvBlock)]
    if not blocks:
        raise ValueError("channel_gates: the model has no GatedConvBlock")
    handles = [m.register_forward_pre_hook(hook(n)) for n, m in blocks]
    try:
        with _eval(model):
            model(_as_tensor(x))
    finally:
        for h in handles:
            h.remove()
    return {n: found[n] for n, _ in blocks if n in found}


# --- skipped work ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SkippedWork:
    """Multiply-accumulates per Linear/Conv2d layer and per input, and how many are skipped.

    ``layers`` names the layers (model order). ``total[l]`` is the MAC count of layer
    ``l`` on real data (taps on zero padding are not counted), the same for every input;
    ``performed[n, l]`` is how many remain for input ``n`` when every MAC with a zero
    activation or a gated output channel (or a zero weight, if counted) is skipped.
    """

    layers: tuple[str, ...]
    total: np.ndarray  # (L,) int64
    performed: np.ndarray  # (N, L) int64

    @property
    def fraction(self) -> np.ndarray:
        """Skipped fraction of all MACs, per input (N,)."""
        return 1.0 - self.performed.sum(axis=1) / self.total.sum()

    @property
    def mean(self) -> float:
        """Skipped fraction of all MACs over every input."""
        return float(self.fraction.mean())

    @property
    def per_layer(self) -> dict[str, float]:
        """Skipped fraction of each layer's MACs, averaged over the inputs."""
        frac = 1.0 - self.performed.mean(axis=0) / self.total
        return dict(zip(self.layers, frac.tolist(), strict=True))


def _macs(
    m: Weighted, a: torch.Tensor, kept: torch.Tensor | None, zero_weights: bool
) -> tuple[int, torch.Tensor]:
    """(total MACs on real data, performed MACs per input) of layer ``m`` on input ``a``."""
    w = m.weight.detach()
    live_w = (w != 0).to(torch.float64) if zero_weights else torch.ones_like(w, dtype=torch.float64)
    nz = (a != 0).to(torch.float64)
    n = a.shape[0]
    if isinstance(m, nn.Linear):
        nz = nz.reshape(n, -1, m.in_features)
        per_out = nz @ live_w.T  # (N, P, out): live MACs per position and output
        total = nz[0].numel() // m.in_features * w.numel()
    else:
        if m.padding_mode != "zeros":
            raise ValueError(f"skipped_work: Conv2d padding_mode {m.padding_mode!r} unsupported")

        def conv(inp: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            return F.conv2d(inp, weight, None, m.stride, m.padding, m.dilation, m.groups)

        per_out = conv(nz, live_w).flatten(2).transpose(1, 2)  # (N, P, out)
        ones = torch.ones_like(nz[:1])
        total = int(conv(ones, torch.ones_like(w, dtype=torch.float64)).sum())
    if kept is not None:
        per_out = per_out * kept[:, None, :].to(per_out.dtype)
    performed = per_out.sum(dim=(1, 2)).round().to(torch.int64)
    return total, performed


def skipped_work(
    model: nn.Module, x: np.ndarray | torch.Tensor, zero_weights: bool = False
) -> SkippedWork:
    """MACs of every main-path Linear/Conv2d of ``model`` on each input of ``x``, and how
    many hardware can skip.

    A MAC ``w * a`` is skipped when the activation ``a`` is exactly zero (dynamic
    activation sparsity, ``ThresholdReLU`` included), when its output channel is gated
    off by a ``GatedConvBlock``, and, with ``zero_weights=True``, when ``w`` is zero
    (static pruning). Taps that fall on a convolution's zero padding are neither counted
    nor skipped. The gates' own predictors (a pool and a small Linear per block) are
    overhead not counted here. Runs in eval mode.
    """
    owners = {id(b.conv): b for b in model.modules() if isinstance(b, GatedConvBlock)}
    totals: dict[str, int] = {}
    performed: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable:
        def count(module: Weighted, args: tuple) -> None:
            a = args[0]
            block = owners.get(id(module))
            kept = None if block is None else block.kept(a)
            totals[name], performed[name] = _macs(module, a, kept, zero_weights)

        return count

    layers = _main_layers(model)
    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers]
    try:
        with _eval(model):
            model(_as_tensor(x))
    finally:
        for h in handles:
            h.remove()
    names = tuple(n for n, _ in layers if n in totals)
    return SkippedWork(
        layers=names,
        total=np.array([totals[n] for n in names], dtype=np.int64),
        performed=np.stack([performed[n].numpy() for n in names], axis=1),
    )
