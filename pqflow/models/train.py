"""Seeded, deterministic training and evaluation.

``train`` is reproducible bit for bit on a given machine and torch build: it seeds
torch, shuffles with its own generator, runs single-threaded with torch's deterministic
algorithms switched on (both restored afterwards). Two calls with the same model name,
data and ``TrainConfig`` give identical weights.

Pruning masks are honoured: a ``weight_mask`` buffer on a module (see
``quant.prune_global_l1`` and ``prune.prune``) is re-applied to its weight after every
optimizer step, a ``bias_mask`` buffer to its bias, so pruned weights stay exactly zero
while the rest fine-tune.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pqflow.models.zoo import build

__all__ = [
    "TrainConfig",
    "FINETUNE",
    "train",
    "evaluate",
    "predict",
    "train_or_load",
    "apply_masks",
]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of ``train``.

    AdamW on label-smoothed cross-entropy, mini-batches, a one-cycle learning-rate
    schedule peaking at ``lr``. The defaults train the digits MLP to 97-98% test
    accuracy (over seeds 0..5) in about 2 s on one CPU thread.
    """

    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-2
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    seed: int = 0


FINETUNE = TrainConfig(epochs=20, lr=5e-3)
"""Fine-tuning after pruning: half the epochs of a full run, a lower peak rate."""


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch, one thread, deterministic algorithms; restore the old settings after."""
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det)
        torch.set_num_threads(threads)


def _as_tensors(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor | None = None):
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    yt = None if y is None else torch.as_tensor(np.asarray(y, dtype=np.int64))
    return xt, yt


@torch.no_grad()
def apply_masks(model: nn.Module) -> None:
    """Zero every weight whose module carries a ``weight_mask`` buffer, where it is 0.

    Likewise every bias under a ``bias_mask`` buffer (structured pruning masks the bias
    of a removed filter and the batch-norm shift of a removed channel).
    """
    for module in model.modules():
        mask = getattr(module, "weight_mask", None)
        if mask is not None:
            module.weight.mul_(mask)
        mask = getattr(module, "bias_mask", None)
        if mask is not None:
            module.bias.mul_(mask)


def train(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    config: TrainConfig = TrainConfig(),
) -> nn.Module:
    """Train ``model`` in place on (x, y) and return it (in eval mode).

    The model's current weights are the starting point: seed the RNG before building it
    (``train_or_load`` does) for reproducible initial weights.
    """
    xt, yt = _as_tensors(x, y)
    with deterministic(config.seed):
        gen = torch.Generator().manual_seed(config.seed)
        n = xt.shape[0]
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps = config.epochs * -(-n // config.batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        apply_masks(model)
        model.train()
        for _ in range(config.epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, config.batch_size):
                idx = order[start : start + config.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                schedule.step()
                apply_masks(model)
    model.eval()
    return model


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Top-1 class per row of ``x`` (int64)."""
    model.eval()
    xt, _ = _as_tensors(x)
    return model(xt).argmax(dim=-1).numpy().astype(np.int64)


def evaluate(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` on (x, y), a fraction in [0, 1]."""
    return float(np.mean(predict(model, x) == np.asarray(y)))


def train_or_load(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig = TrainConfig(),
    cache_dir: str | Path | None = None,
    **model_kwargs,
) -> nn.Module:
    """Build zoo model ``name`` with a seeded init, train it, cache its state_dict.

    The cache key covers the model name and kwargs, the config and a digest of the
    data. With ``cache_dir=None`` nothing is read or written.
    """
    key_src = json.dumps(
        {"name": name, "kwargs": model_kwargs, "config": asdict(config)}, sort_keys=True
    ).encode()
    digest = hashlib.sha256(key_src)
    digest.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    path = None if cache_dir is None else Path(cache_dir) / f"{name}-{digest.hexdigest()[:16]}.pt"

    torch.manual_seed(config.seed)
    model = build(name, seed=config.seed, **model_kwargs)
    if path is not None and path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    train(model, x, y, config)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model
