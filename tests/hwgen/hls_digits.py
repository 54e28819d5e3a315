"""The digits MLPs the HLS tests share: trained briefly, PTQ, lowered (dense and 80% sparse)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def digits_mlps():
    """(split, dense graph, 80%-sparse graph); half_even requants, as ``lower_mlp`` emits."""
    import torch

    from pqflow.models import (
        TrainConfig,
        load_digits_split,
        lower_mlp,
        mlp,
        prune_and_finetune,
        quantize_mlp,
        train,
    )

    data = load_digits_split()
    torch.manual_seed(0)
    model = train(mlp(), data.x_train, data.y_train, TrainConfig(epochs=15))
    dense = lower_mlp(quantize_mlp(model, data.x_train), name="digits")
    prune_and_finetune(model, data.x_train, data.y_train, 0.8, TrainConfig(epochs=8, lr=5e-3))
    sparse = lower_mlp(quantize_mlp(model, data.x_train), name="digits_sparse")
    return data, dense, sparse
