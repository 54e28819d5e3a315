"""Quantization-aware training: fine-tune a quantized model through its fake quantizers.

Gradients reach the float weights through the straight-through estimators of
``quantizers.py`` (and the LSQ steps / PACT clips where the spec learns them); the
float weights are the "latent" weights, re-quantized at every forward pass. Pruning
masks (``weight_mask``) are re-applied by ``train.train`` after every step, and the
quantized layers multiply by them, so a pruned weight stays exactly zero.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pqflow.models.calibrate import calibrate
from pqflow.models.quantizers import Quantizer
from pqflow.models.train import TrainConfig, train

__all__ = ["QAT", "qat"]

QAT = TrainConfig(epochs=15, lr=2e-3, weight_decay=0.0)
"""Default QAT fine-tuning: short, a low peak rate, no weight decay on steps and clips."""


def _uncalibrated(model: nn.Module) -> bool:
    return any(
        isinstance(m, Quantizer)
        and not m.dynamic
        and m.spec.mode == "uniform"
        and not bool(m.initialized)
        for m in model.modules()
    )


def qat(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    config: TrainConfig = QAT,
    method: str = "minmax",
) -> nn.Module:
    """Fine-tune the quantized ``model`` (from ``quantize_model``) on (x, y), in place.

    Activation quantizers without a range are first calibrated on ``x`` by ``method``.
    Returns the model in eval mode.
    """
    if not any(isinstance(m, Quantizer) for m in model.modules()):
        raise ValueError("qat: the model has no quantizers; quantize it with quantize_model")
    if _uncalibrated(model):
        calibrate(model, x, method=method)
    return train(model, x, y, config)
