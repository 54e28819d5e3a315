import copy

import numpy as np
import pytest
import torch
from torch import nn

from pqflow.models import FINETUNE, TrainConfig, build, evaluate, load_digits_split, train
from pqflow.models.prune import (
    channel_spaces,
    gradual_prune,
    parameter_count,
    polynomial_schedule,
    polynomial_sparsity,
    prune,
    shrink,
    sparsity_report,
    taylor_scores,
)
from pqflow.models.zoo import ResidualBlock


def randomized(name: str, seed: int = 0) -> nn.Module:
    """An untrained zoo model with random batch-norm parameters and statistics (eval mode)."""
    torch.manual_seed(seed)
    m = build(name)
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


def convs(m: nn.Module) -> list[nn.Conv2d]:
    return [x for x in m.modules() if isinstance(x, nn.Conv2d)]


def weighted(m: nn.Module) -> list[nn.Module]:
    return [x for x in m.modules() if isinstance(x, nn.Linear | nn.Conv2d)]


@pytest.fixture(scope="module")
def x_img(digits_image):
    return torch.as_tensor(digits_image.x_test)


# --- masks per granularity ------------------------------------------------------------------


@pytest.mark.parametrize("amount", [0.0, 0.3, 0.75])
def test_element_layer_scope_prunes_exactly_round_amount_n_per_layer(float_cnn, amount):
    m = prune(copy.deepcopy(float_cnn), "element", "l1", amount)
    for w in weighted(m):
        assert int((w.weight == 0).sum()) == round(amount * w.weight.numel())
        assert torch.equal(w.weight_mask == 0, w.weight == 0)


def test_element_global_scope_counts_over_the_model_and_keeps_the_largest(float_cnn):
    m = prune(copy.deepcopy(float_cnn), "element", "l1", 0.6, scope="global")
    ws = weighted(m)
    n = sum(w.weight.numel() for w in ws)
    assert sum(int((w.weight == 0).sum()) for w in ws) == round(0.6 * n)
    kept = torch.cat([w.weight[w.weight != 0].abs() for w in ws])
    orig = {id(a): b for a, b in zip(ws, weighted(float_cnn), strict=True)}
    cut = torch.cat([orig[id(w)].weight[w.weight == 0].abs() for w in ws])
    assert kept.min() >= cut.max()
    # layers end up with different sparsities (one global threshold)
    assert len({round(float((w.weight == 0).float().mean()), 3) for w in ws}) > 1


def test_nm_keeps_exactly_n_in_every_group_of_m_along_the_input(float_cnn):
    m = prune(copy.deepcopy(float_cnn), "nm", "l1", n=2, m=4)
    c1, c2 = convs(m)
    assert not (c1.weight == 0).any()  # one input channel: not a multiple of 4, left alone
    groups = c2.weight.permute(0, 2, 3, 1).reshape(-1, 4)  # 4 consecutive input channels
    assert ((groups != 0).sum(dim=1) == 2).all()
    lin = m[-1]
    assert ((lin.weight.reshape(-1, 4) != 0).sum(dim=1) == 2).all()
    # the kept two are the two largest of each group
    orig = convs(float_cnn)[1].weight.permute(0, 2, 3, 1).reshape(-1, 4).abs()
    top2 = orig.topk(2, dim=1).indices.sort(dim=1).values
    assert torch.equal((groups != 0).nonzero()[:, 1].reshape(-1, 2), top2)


@pytest.mark.parametrize("n, m", [(1, 4), (2, 8), (4, 4)])
def test_nm_other_ratios(float_cnn, n, m):
    pruned = prune(copy.deepcopy(float_cnn), "nm", "l2", n=n, m=m)
    groups = convs(pruned)[1].weight.permute(0, 2, 3, 1).reshape(-1, m)
    assert ((groups != 0).sum(dim=1) == n).all()


def test_kernel_pruning_zeroes_whole_kernels(float_cnn):
    m = prune(copy.deepcopy(float_cnn), "kernel", "l1", 0.4)
    for c in convs(m):
        k = c.weight.reshape(c.out_channels * c.in_channels, -1)
        zero = (k == 0).all(dim=1)
        assert ((k == 0).any(dim=1) == zero).all()  # a kernel is all zero or all kept
        assert int(zero.sum()) == round(0.4 * len(k))
    assert not (m[-1].weight == 0).any()  # Linear layers have no kernels


def test_filter_pruning_zeroes_filters_and_their_batch_norm(float_cnn):
    m = prune(copy.deepcopy(float_cnn), "filter", "l2", 0.5)
    for conv, bn in [(m[1], m[2]), (m[5], m[6])]:
        dead = (conv.weight.reshape(conv.out_channels, -1) == 0).all(dim=1)
        assert int(dead.sum()) == conv.out_channels // 2
        assert (conv.weight[~dead] != 0).all()
        assert (bn.weight[dead] == 0).all() and (bn.bias[dead] == 0).all()
        assert (bn.weight[~dead] != 0).all()
    report = sparsity_report(m)
    assert [ly.zero_filters for ly in report.layers] == [8, 16, 0]


def test_channel_pruning_zeroes_input_channels_of_every_reader(float_cnn):
    m = prune(copy.deepcopy(float_cnn), "channel", "l1", 0.25)
    c2, lin = m[5], m[-1]
    dead = (c2.weight.transpose(0, 1).reshape(16, -1) == 0).all(dim=1)
    assert int(dead.sum()) == 4
    cols = lin.weight.reshape(10, 4, 32)  # (out, position, channel): channels-last flatten
    dead_lin = (cols == 0).all(dim=0).all(dim=0)
    assert int(dead_lin.sum()) == 8 and not (cols[:, :, ~dead_lin] == 0).any()
    assert [ly.zero_channels for ly in sparsity_report(m).layers] == [0, 4, 32]


def test_residual_add_couples_the_stem_and_the_identity_block():
    m = randomized("resnet_tiny")
    spaces = channel_spaces(m)
    stem = m[1]
    block = m[4]
    shared = next(s for s in spaces if any(p.module is stem for p in s.producers))
    assert {id(p.module) for p in shared.producers} == {id(stem), id(block.residual[3])}
    prune(m, "filter", "l1", 0.5)
    dead_stem = (stem.weight.reshape(16, -1) == 0).all(dim=1)
    dead_block = (block.residual[3].weight.reshape(16, -1) == 0).all(dim=1)
    assert torch.equal(dead_stem, dead_block) and int(dead_stem.sum()) == 8


def test_layer_pruning_switches_off_residual_blocks():
    m = randomized("resnet_tiny")
    prune(m, "layer", "l1", 0.5)
    blocks = [b for b in m.modules() if isinstance(b, ResidualBlock)]
    off = [b for b in blocks if b.residual_mask == 0]
    assert len(off) == 1
    assert all((c.weight == 0).all() for c in convs(off[0].residual))
    x = torch.randn(2, *((16, 4, 4) if off[0] is blocks[1] else (16, 8, 8)))
    assert torch.equal(off[0](x), torch.relu(off[0].skip(x)))


# --- criteria -------------------------------------------------------------------------------


def test_l1_and_l2_agree_on_elements_and_differ_on_groups(float_cnn):
    a = prune(copy.deepcopy(float_cnn), "element", "l1", 0.5)
    b = prune(copy.deepcopy(float_cnn), "element", "l2", 0.5)
    pairs = zip(weighted(a), weighted(b), strict=True)
    assert all(torch.equal(x.weight_mask, y.weight_mask) for x, y in pairs)
    # filter A = [1, 1, 1, 1] (L1 4, L2 2) vs B = [3, 0, 0, 0] (L1 3, L2 3)
    lin = nn.Sequential(nn.Linear(4, 2, bias=False), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        lin[0].weight.copy_(torch.tensor([[1.0, 1, 1, 1], [3, 0, 0, 0]]))
    l1 = prune(copy.deepcopy(lin), "filter", "l1", 0.5)[0].weight_mask[:, 0]
    l2 = prune(copy.deepcopy(lin), "filter", "l2", 0.5)[0].weight_mask[:, 0]
    assert l1.tolist() == [1.0, 0.0] and l2.tolist() == [0.0, 1.0]


def test_random_is_seeded_and_differs_from_magnitude(float_cnn):
    def mask(**kw):
        m = prune(copy.deepcopy(float_cnn), "filter", amount=0.5, **kw)
        return torch.cat([w.weight_mask.flatten() for w in convs(m)])

    assert torch.equal(mask(criterion="random", seed=3), mask(criterion="random", seed=3))
    assert not torch.equal(mask(criterion="random", seed=3), mask(criterion="random", seed=4))
    assert not torch.equal(mask(criterion="random", seed=3), mask(criterion="l1"))


def test_taylor_scores_are_weight_times_gradient(float_cnn, digits_image):
    x, y = digits_image.x_train, digits_image.y_train
    grads = [None if w.weight.grad is None else w.weight.grad.clone() for w in weighted(float_cnn)]
    scores = taylor_scores(float_cnn, x, y, batches=2, batch_size=32)
    model = copy.deepcopy(float_cnn).eval()
    expect = {}
    for b in range(2):
        model.zero_grad()
        xb = torch.as_tensor(x[b * 32 : (b + 1) * 32])
        nn.functional.cross_entropy(model(xb), torch.as_tensor(y[b * 32 : (b + 1) * 32])).backward()
        for i, w in enumerate(weighted(model)):
            expect[i] = expect.get(i, 0) + (w.weight * w.weight.grad).abs().double()
    for i, w in enumerate(weighted(float_cnn)):
        torch.testing.assert_close(scores[w], expect[i])
        # the caller's gradients are untouched
        assert (w.weight.grad is None) if grads[i] is None else torch.equal(w.weight.grad, grads[i])


def test_taylor_depends_on_the_data_and_magnitude_does_not(float_cnn, digits_image):
    x, y = digits_image.x_train, digits_image.y_train
    wrong = (y + 1) % 10

    def mask(crit, labels):
        m = prune(copy.deepcopy(float_cnn), "kernel", crit, 0.5, data=(x, labels))
        return torch.cat([w.weight_mask.flatten() for w in convs(m)])

    assert not torch.equal(mask("taylor", y), mask("taylor", wrong))
    assert torch.equal(mask("l1", y), mask("l1", wrong))


# --- schedule and gradual pruning -----------------------------------------------------------


def test_polynomial_schedule_matches_zhu_and_gupta():
    s_i, s_f, n, t0, dt = 0.1, 0.9, 4, 10, 5
    for t in range(t0, t0 + n * dt + 1):
        expect = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3
        assert polynomial_sparsity(t, s_i, s_f, n, t0, dt) == pytest.approx(expect, abs=1e-15)
    assert polynomial_sparsity(t0 - 3, s_i, s_f, n, t0, dt) == s_i
    assert polynomial_sparsity(t0 + 99, s_i, s_f, n, t0, dt) == s_f
    sched = polynomial_schedule(0.0, 0.8, 4)
    assert sched == pytest.approx([0.8 - 0.8 * (1 - k / 4) ** 3 for k in (1, 2, 3, 4)])
    assert sched[-1] == 0.8 and all(a < b for a, b in zip(sched, sched[1:], strict=False))


def test_gradual_prune_steps_through_the_schedule(float_mlp, digits, monkeypatch):
    import pqflow.models.prune as P

    seen = []

    def fake_train(model, x, y, config):
        seen.append(sparsity_report(model).zeros)
        return model

    monkeypatch.setattr(P, "train", fake_train)
    m = gradual_prune(copy.deepcopy(float_mlp), digits.x_train, digits.y_train, 0.8, 4)
    total = sparsity_report(m).weights
    assert seen == [round(s * total) for s in polynomial_schedule(0.0, 0.8, 4)]


def test_gradual_prune_fine_tunes_with_masks_fixed(float_mlp, digits):
    m = gradual_prune(
        copy.deepcopy(float_mlp),
        digits.x_train,
        digits.y_train,
        0.7,
        3,
        finetune=TrainConfig(epochs=1, lr=5e-3),
    )
    report = sparsity_report(m)
    assert report.zeros == round(0.7 * report.weights)
    assert evaluate(m, digits.x_test, digits.y_test) > 0.9


# --- physical removal -----------------------------------------------------------------------


CASES = [
    ("cnn", "filter", "l1", "layer"),
    ("cnn", "channel", "l2", "layer"),
    ("cnn", "filter", "random", "global"),
    ("resnet_tiny", "filter", "l1", "layer"),
    ("resnet_tiny", "channel", "random", "global"),
    ("resnet_tiny", "layer", "l1", "layer"),
    ("resnet_tiny", "kernel", "l1", "global"),
]


@pytest.mark.parametrize("name, granularity, criterion, scope", CASES)
def test_shrunk_model_computes_what_the_masked_model_computes(
    name, granularity, criterion, scope, x_img
):
    masked = prune(randomized(name), granularity, criterion, 0.5, scope=scope)
    small = shrink(masked)
    assert parameter_count(small) < parameter_count(masked) or granularity == "kernel"
    with torch.no_grad():
        torch.testing.assert_close(small(x_img), masked(x_img), rtol=1e-5, atol=1e-5)


def test_shrink_cnn_parameter_counts_are_as_claimed():
    m = prune(randomized("cnn"), "filter", "l1", 0.5)
    small = shrink(m)
    c1, c2, lin = small[1], small[5], small[-1]
    assert (c1.out_channels, c2.in_channels, c2.out_channels, lin.in_features) == (8, 8, 16, 64)
    assert small[2].num_features == 8 and small[6].num_features == 16
    # conv 8*9, bn 2*8, conv 16*8*9, bn 2*16, dense 10*64 + 10
    assert parameter_count(small) == 72 + 16 + 1152 + 32 + 650 == 1922
    assert parameter_count(m) == 6138
    assert shrink(m).state_dict().keys() == small.state_dict().keys()


def test_shrink_resnet_keeps_the_add_consistent():
    m = prune(randomized("resnet_tiny"), "filter", "l1", 0.5)
    small = shrink(m)
    stem, b1, b2 = small[1], small[4], small[6]
    assert stem.out_channels == b1.residual[0].in_channels == b1.residual[3].out_channels == 8
    assert b2.skip[0].in_channels == b2.residual[0].in_channels == 8
    assert b2.skip[0].out_channels == b2.residual[3].out_channels == 16
    assert b1.residual[0].out_channels == 8 and b2.residual[0].out_channels == 16
    # stem 8*9+16, b1 8*8*9+16 + 8*8*9+16, b2 16*8*9+32 + 16*16*9+32 + 16*8+32, dense 640+10
    expect = 88 + (592 + 592) + (1184 + 2336 + 160) + 650
    assert parameter_count(small) == expect


def test_shrink_layer_pruned_block_loses_its_residual_path():
    m = prune(randomized("resnet_tiny"), "layer", "l1", 0.5)
    small = shrink(m)
    assert sum(isinstance(b, ResidualBlock) for b in small.modules()) == 1
    assert parameter_count(small) < parameter_count(m)
    assert sum(isinstance(b, ResidualBlock) for b in m.modules()) == 2  # the input is untouched


def test_shrink_mlp_neurons(float_mlp, digits):
    m = prune(copy.deepcopy(float_mlp), "filter", "l1", 0.5)
    small = shrink(m)
    sizes = [(x.in_features, x.out_features) for x in small if isinstance(x, nn.Linear)]
    assert sizes == [(64, 32), (32, 16), (16, 16), (16, 10)]
    x = torch.as_tensor(digits.x_test)
    with torch.no_grad():
        torch.testing.assert_close(small(x), m(x), rtol=1e-5, atol=1e-5)


def test_shrunk_model_keeps_its_remaining_masks_through_training(digits_image):
    m = prune(randomized("cnn"), "filter", "l1", 0.5)
    prune(m, "element", "l1", 0.5)
    small = shrink(m)
    zeros = [int((w.weight == 0).sum()) for w in weighted(small)]
    train(small, digits_image.x_train[:64], digits_image.y_train[:64], TrainConfig(epochs=1))
    assert [int((w.weight == 0).sum()) for w in weighted(small)] >= zeros


# --- the figure of issue 3 ------------------------------------------------------------------


def test_half_the_cnn_filters_pruned_and_fine_tuned_stays_within_two_points(
    float_cnn, digits_image
):
    d = digits_image
    base = evaluate(float_cnn, d.x_test, d.y_test)
    m = prune(copy.deepcopy(float_cnn), "filter", "l1", 0.5)
    train(m, d.x_train, d.y_train, FINETUNE)
    small = shrink(m)
    assert parameter_count(small) <= parameter_count(m) / 3
    acc = evaluate(small, d.x_test, d.y_test)
    assert acc == evaluate(m, d.x_test, d.y_test)
    assert acc >= base - 0.02


# --- errors and reports ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"granularity": "row", "amount": 0.5},
            "unknown granularity 'row'; known granularities: element, nm, kernel, channel, "
            "filter, layer",
        ),
        ({"criterion": "l0", "amount": 0.5}, "unknown criterion 'l0'; known criteria: l1, l2"),
        ({"scope": "net", "amount": 0.5}, "unknown scope 'net'; known scopes: layer, global"),
        ({"amount": 1.0}, r"amount must be a number in \[0, 1\), not 1.0"),
        ({"amount": -0.1}, r"amount must be a number in \[0, 1\), not -0.1"),
        ({}, "granularity 'element' needs amount"),
        ({"granularity": "nm", "n": 5, "m": 4}, "so 1 <= n <= m; got n=5, m=4"),
        ({"granularity": "nm", "amount": 0.5}, "granularity 'nm' takes n and m, not amount"),
        ({"criterion": "taylor", "amount": 0.5}, r"needs data=\(x, y\)"),
        ({"granularity": "layer", "amount": 0.5}, "layer-wise pruning needs residual blocks"),
        ({"granularity": "filter", "amount": 0.99}, "would remove all 16 channels of '1'"),
    ],
)
def test_errors_are_sentences(kwargs, message):
    with pytest.raises(ValueError, match=message):
        prune(randomized("cnn"), **kwargs)


def test_kernel_needs_convolutions_and_nm_needs_a_divisible_layer():
    with pytest.raises(ValueError, match="granularity 'kernel' found nothing to prune"):
        prune(build("mlp"), "kernel", amount=0.5)
    with pytest.raises(ValueError, match="no layer of Sequential whose input size is a multiple"):
        prune(nn.Sequential(nn.Linear(3, 2)), "nm", n=1, m=4)


def test_unsupported_module_is_named():
    with pytest.raises(ValueError, match=r"module '1' \(Tanh\) is not supported"):
        prune(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)), "filter", amount=0.5)


def test_global_structured_pruning_keeps_a_channel_per_space():
    m = prune(randomized("cnn"), "filter", "l1", 0.95, scope="global")
    small = shrink(m)
    assert small[1].out_channels >= 1 and small[5].out_channels >= 1
    assert small(torch.rand(2, 8, 8, 1)).shape == (2, 10)


def test_masks_only_grow():
    m = prune(randomized("cnn"), "element", "random", 0.5, seed=1)
    before = [w.weight_mask.clone() for w in weighted(m)]
    prune(m, "element", "l1", 0.6)
    for b, w in zip(before, weighted(m), strict=True):
        assert not ((b == 0) & (w.weight_mask == 1)).any()
        assert int((w.weight == 0).sum()) == round(0.6 * w.weight.numel())


def test_sparsity_report():
    m = prune(randomized("cnn"), "filter", "l1", 0.5)
    r = sparsity_report(m)
    assert [ly.name for ly in r.layers] == ["1", "5", "10"]
    assert r.layers[0].zeros == 8 * 9 and r.layers[1].zero_kernels == 16 * 16
    assert r.weights == 144 + 4608 + 1280 and r.parameters == 6138
    assert "total:" in str(r) and np.isclose(r.sparsity, r.zeros / r.weights)


def test_digits_image_fixture_matches_flat(digits_image):
    flat = load_digits_split()
    assert np.array_equal(digits_image.x_test.reshape(len(flat.x_test), -1), flat.x_test)


@pytest.mark.parametrize(
    "granularity, kwargs, pattern",
    [
        ("element", {"amount": 0.5}, "unstructured"),
        ("nm", {"n": 2, "m": 4}, "2:4"),
        ("kernel", {"amount": 0.5}, "kernel"),
        ("channel", {"amount": 0.5}, "channel"),
        ("filter", {"amount": 0.5}, "filter"),
    ],
)
def test_report_names_the_pattern(granularity, kwargs, pattern):
    r = sparsity_report(prune(randomized("cnn"), granularity, **kwargs))
    assert r.layers[1].pattern == pattern
    assert sparsity_report(randomized("cnn")).layers[1].pattern == "dense"
