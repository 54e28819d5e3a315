"""Issue 3's element-sparsity target on the mlp: 90% zeros within one point of float."""

import pytest

import pqflow.models.prune as P
from pqflow.models import TrainConfig, build, evaluate, sparsity_report
from pqflow.models.prune import polynomial_sparsity, prune_during_training


def test_mlp_at_ninety_percent_element_sparsity_is_within_one_point(float_mlp, digits):
    m = prune_during_training(
        build("mlp", seed=0), digits.x_train, digits.y_train, 0.9, teacher=float_mlp
    )
    report = sparsity_report(m)
    assert all(ly.zeros == round(0.9 * ly.weights) for ly in report.layers)  # layer scope
    acc = evaluate(m, digits.x_test, digits.y_test)
    assert acc >= evaluate(float_mlp, digits.x_test, digits.y_test) - 0.01, acc


def test_prune_during_training_follows_the_schedule(digits, monkeypatch):
    seen = []
    real = P.prune

    def spy(model, granularity, criterion, amount, **kw):
        seen.append(amount)
        return real(model, granularity, criterion, amount, **kw)

    monkeypatch.setattr(P, "prune", spy)
    cfg = TrainConfig(epochs=6, batch_size=256)
    m = prune_during_training(
        build("mlp"), digits.x_train, digits.y_train, 0.8, config=cfg, start_epoch=1, end_epoch=4
    )
    assert seen == [polynomial_sparsity(e, 0.0, 0.8, 3, t0=1) for e in (2, 3, 4)]
    assert seen[-1] == 0.8
    assert sparsity_report(m).zeros == sum(
        round(0.8 * ly.weights) for ly in sparsity_report(m).layers
    )
    assert not m.training


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"start_epoch": 5, "end_epoch": 5}, "need 0 <= start_epoch < end_epoch <= config.epochs"),
        ({"end_epoch": 81}, r"config.epochs \(80\)"),
        ({"distill": 1.5}, r"distill must be in \[0, 1\] and temperature > 0"),
        ({"granularity": "nm"}, "N:M pruning is one-shot"),
    ],
)
def test_prune_during_training_rejects_bad_arguments(digits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        prune_during_training(build("mlp"), digits.x_train, digits.y_train, 0.9, **kwargs)
