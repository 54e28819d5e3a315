"""Session fixtures: the digits split and the models trained once per test session.

Checkpoints are cached under pytest's tmp_path_factory, never in the repository.
"""

import copy

import pytest

from pqflow.models import (
    load_digits_split,
    prune_and_finetune,
    quantize_mlp,
    train_or_load,
)


@pytest.fixture(scope="session")
def digits():
    return load_digits_split()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def float_mlp(digits, model_cache):
    return train_or_load("mlp", digits.x_train, digits.y_train, cache_dir=model_cache)


@pytest.fixture(scope="session")
def q_mlp(float_mlp, digits):
    return quantize_mlp(float_mlp, digits.x_train)


@pytest.fixture(scope="session")
def sparse_mlp(float_mlp, digits):
    return prune_and_finetune(copy.deepcopy(float_mlp), digits.x_train, digits.y_train, 0.8)


@pytest.fixture(scope="session")
def digits_image():
    return load_digits_split(image=True)


@pytest.fixture(scope="session")
def float_cnn(digits_image, model_cache):
    """The zoo ``cnn`` trained with the default ``TrainConfig`` (~7 s on one thread)."""
    return train_or_load("cnn", digits_image.x_train, digits_image.y_train, cache_dir=model_cache)
