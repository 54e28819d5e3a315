"""Datasets, the model zoo, training, pruning, quantization and torch -> IR lowering.

Everything here depends on torch; nothing here knows about hardware.
"""

from .data import Split, load_digits_split
from .lower import lower, lower_mlp
from .quant import (
    QuantizedMLP,
    QuantLayer,
    prune_and_finetune,
    prune_global_l1,
    quantize_mlp,
    sparsity_of,
)
from .train import FINETUNE, TrainConfig, evaluate, predict, train, train_or_load
from .zoo import MODELS, build, mlp

__all__ = [
    "FINETUNE",
    "MODELS",
    "QuantLayer",
    "QuantizedMLP",
    "Split",
    "TrainConfig",
    "build",
    "evaluate",
    "load_digits_split",
    "lower",
    "lower_mlp",
    "mlp",
    "predict",
    "prune_and_finetune",
    "prune_global_l1",
    "quantize_mlp",
    "sparsity_of",
    "train",
    "train_or_load",
]
