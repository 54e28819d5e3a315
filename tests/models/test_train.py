import time

import torch

from pqflow.models import TrainConfig, evaluate, train_or_load


def test_float_mlp_accuracy(float_mlp, digits):
    assert evaluate(float_mlp, digits.x_test, digits.y_test) >= 0.97


def test_training_is_reproducible_and_fast(float_mlp, digits):
    t0 = time.perf_counter()
    again = train_or_load("mlp", digits.x_train, digits.y_train, cache_dir=None)
    assert time.perf_counter() - t0 < 30
    a, b = float_mlp.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_restores_global_torch_settings(digits):
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    train_or_load("mlp", digits.x_train[:64], digits.y_train[:64], TrainConfig(epochs=1))
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det


def test_cache_round_trip(digits, tmp_path):
    cfg = TrainConfig(epochs=2)
    a = train_or_load("mlp", digits.x_train, digits.y_train, cfg, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    b = train_or_load("mlp", digits.x_train, digits.y_train, cfg, cache_dir=tmp_path)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
