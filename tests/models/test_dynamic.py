import copy

import numpy as np
import pytest
import torch
from torch import nn

from pqflow.models import build, evaluate, train_or_load
from pqflow.models.dynamic import (
    ChannelGate,
    GatedConvBlock,
    ThresholdReLU,
    activation_sparsity,
    channel_gates,
    gate_convs,
    gated_cnn,
    skipped_work,
    sparsify,
)


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with random batch-norm statistics (eval mode), so gates are not all alike."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm1d | nn.BatchNorm2d):
                bn.running_mean.copy_(torch.rand(bn.running_mean.shape, generator=g) - 0.5)
                bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) * 0.05 + 0.01)
    return model.eval()


@pytest.fixture(scope="module")
def gated(digits_image, model_cache):
    """``gated_cnn`` (half the channels per block) trained like the zoo ``cnn`` (~8 s)."""
    return train_or_load(
        "gated_cnn", digits_image.x_train, digits_image.y_train, cache_dir=model_cache
    )


# --- activation sparsity --------------------------------------------------------------------


def test_activation_sparsity_counts_exact_zeros_of_each_layer_input():
    lin1, lin2 = nn.Linear(3, 2), nn.Linear(2, 1)
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]))
        lin1.bias.zero_()
    model = nn.Sequential(lin1, nn.ReLU(), lin2)
    x = torch.tensor([[2.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1e-30, 3.0, 3.0]])
    # inputs of lin1: 6 zeros of 12; of lin2 (relu(+-x0)): rows (2,0) (0,1) (0,0) (1e-30,0).
    assert activation_sparsity(model, x) == {"0": 6 / 12, "2": 5 / 8}
    assert model.training  # the mode is restored


def test_activation_sparsity_sees_convolution_inputs_and_skips_gate_predictors():
    torch.manual_seed(0)
    model = randomized(gated_cnn())
    x = torch.rand(5, 8, 8, 1)
    x[:, :4] = 0  # half of every image is zero
    sp = activation_sparsity(model, x)
    assert list(sp) == ["1.conv", "3.conv", "6"]
    assert sp["1.conv"] == 0.5
    # at least the gated-off half of the 16 channels reach the second conv as zeros
    assert sp["3.conv"] >= 0.5


# --- threshold ReLU -------------------------------------------------------------------------


def test_threshold_relu_forward_and_straight_through_gradients():
    x = torch.tensor([-1.0, 0.0, 0.2, 0.3, 0.5, 2.0], requires_grad=True)
    assert torch.equal(ThresholdReLU(0.0)(x), torch.relu(x))
    act = ThresholdReLU(0.3, learnable=True, window=0.15)
    y = act(x)
    assert torch.equal(y, torch.tensor([0.0, 0.0, 0.0, 0.0, 0.5, 2.0]))  # 0.3 is not > 0.3
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 1.0]))
    # box of half-width 0.15 around t = 0.3 holds x = 0.2, 0.3: dt = -(0.2 + 0.3) / 0.3
    assert act.threshold.grad.item() == pytest.approx(-0.5 / 0.3)


def test_threshold_relu_rejects_a_negative_threshold():
    with pytest.raises(ValueError, match="threshold must be >= 0, not -0.1"):
        ThresholdReLU(-0.1)


def test_threshold_training_raises_the_zero_fraction(float_mlp, digits):
    before = activation_sparsity(float_mlp, digits.x_test)
    model = sparsify(
        copy.deepcopy(float_mlp), digits.x_train, digits.y_train, 0.1, learnable=True, l1=0.1
    )
    after = activation_sparsity(model, digits.x_test)
    hidden = list(before)[1:]  # the first layer reads the image itself
    assert all(after[n] > before[n] + 0.1 for n in hidden), (before, after)
    assert skipped_work(model, digits.x_test).mean > skipped_work(float_mlp, digits.x_test).mean
    assert evaluate(model, digits.x_test, digits.y_test) >= 0.96
    assert all(m.threshold.item() > 0 for m in model.modules() if isinstance(m, ThresholdReLU))


def test_sparsify_needs_a_relu():
    with pytest.raises(ValueError, match="no nn.ReLU"):
        sparsify(nn.Sequential(nn.Linear(2, 2)), np.zeros((1, 2)), np.zeros(1))


# --- channel gating -------------------------------------------------------------------------


def test_gating_keeps_exactly_k_channels_per_input_and_zeroes_the_rest():
    torch.manual_seed(0)
    block = randomized(GatedConvBlock(4, 8, k=3))
    x = torch.rand(16, 4, 6, 6)
    kept = block.kept(x)
    assert kept.shape == (16, 8) and bool((kept.sum(dim=1) == 3).all())
    y = block(x)
    assert bool((y[~kept] == 0).all())  # gated-off channels are exactly zero
    ungated = block.relu(block.bn(block.conv(x)))
    assert torch.equal(y[kept], (ungated * block.gate(x)[:, :, None, None])[kept])


@pytest.mark.parametrize("keep", [0.25, 0.5, 1.0])
def test_gated_cnn_keeps_round_keep_c_per_block(keep):
    torch.manual_seed(1)
    model = randomized(gated_cnn(keep=keep))
    gates = channel_gates(model, torch.rand(7, 8, 8, 1))
    assert {n: g.shape for n, g in gates.items()} == {"1": (7, 16), "3": (7, 32)}
    assert all((g.sum(axis=1) == round(keep * g.shape[1])).all() for g in gates.values())


def test_ties_go_to_the_lower_channel_index():
    gate = ChannelGate(2, 5, k=2)
    s = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert gate.keep(s).tolist() == [
        [False, True, True, False, False],
        [True, True, False, False, False],
    ]


def test_gate_rejects_a_bad_k():
    with pytest.raises(ValueError, match=r"k must be in 1..8 \(c_out\), not 9"):
        ChannelGate(4, 8, k=9)
    with pytest.raises(ValueError, match="keep must be a fraction in"):
        gated_cnn(keep=0.0)


@pytest.mark.parametrize("scale", [True, False])
def test_the_predictor_learns_through_the_hard_top_k(scale):
    torch.manual_seed(0)
    block = GatedConvBlock(4, 8, k=3, scale=scale).train()
    block(torch.rand(6, 4, 5, 5)).square().sum().backward()
    assert block.gate.predictor.weight.grad.abs().sum() > 0


def test_gates_depend_on_the_input(gated, digits_image):
    for name, g in channel_gates(gated, digits_image.x_test).items():
        patterns = {row.tobytes() for row in g}
        assert len(patterns) > 5, f"block {name}: {len(patterns)} gate patterns"
        use = g.mean(axis=0)
        assert ((0 < use) & (use < 1)).any()  # some channel runs for some inputs only


def test_gates_at_eval_are_deterministic_and_per_input(gated, digits_image):
    x = digits_image.x_test
    a, b = channel_gates(gated, x), channel_gates(gated, x)
    part = channel_gates(gated, x[:9])
    for n in a:
        assert np.array_equal(a[n], b[n])
        assert np.array_equal(a[n][:9], part[n])  # other inputs of the batch do not matter
    assert gated.gates(x[:9]).keys() == part.keys()


def test_gated_cnn_keeping_half_the_channels_is_within_2_points_of_cnn(
    gated, float_cnn, digits_image
):
    d = digits_image
    acc_cnn = evaluate(float_cnn, d.x_test, d.y_test)
    acc_gated = evaluate(gated, d.x_test, d.y_test)
    assert acc_gated >= acc_cnn - 0.02, (acc_gated, acc_cnn)
    assert skipped_work(gated, d.x_test).mean > skipped_work(float_cnn, d.x_test).mean + 0.3


def test_gate_convs_copies_a_trained_cnn_and_leaves_it_unchanged(float_cnn):
    before = copy.deepcopy(float_cnn.state_dict())
    torch.manual_seed(0)
    g = gate_convs(float_cnn, keep=0.25)
    assert [type(m).__name__ for m in g] == [
        "ChannelsFirst",
        "GatedConvBlock",
        "MaxPool2d",
        "GatedConvBlock",
        "MaxPool2d",
        "FlattenHWC",
        "Linear",
    ]
    assert torch.equal(g[1].conv.weight, float_cnn[1].weight)
    assert [b.gate.k for b in g if isinstance(b, GatedConvBlock)] == [4, 8]
    assert all(torch.equal(v, float_cnn.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="no Conv2d, BatchNorm2d, ReLU run"):
        gate_convs(build("mlp"))


def test_registry_builds_a_gated_cnn_with_gates():
    m = build("gated_cnn", keep=0.25).eval()
    assert m(torch.rand(2, 8, 8, 1)).shape == (2, 10)
    assert {n: int(g.sum(axis=1)[0]) for n, g in m.gates(torch.rand(2, 8, 8, 1)).items()} == {
        "1": 4,
        "3": 8,
    }


# --- skipped work ---------------------------------------------------------------------------


def test_skipped_work_of_a_linear_layer_by_hand():
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [3.0, 4.0, 0.0]]))
    x = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    sw = skipped_work(nn.Sequential(lin), x)
    assert sw.layers == ("0",) and sw.total.tolist() == [6]
    assert sw.performed[:, 0].tolist() == [4, 0, 6]
    assert np.allclose(sw.fraction, [1 / 3, 1.0, 0.0])
    # zero weights too: row 0 skips input 1, row 1 skips input 2
    sw = skipped_work(nn.Sequential(lin), x, zero_weights=True)
    assert sw.performed[:, 0].tolist() == [2, 0, 4]


def naive_conv_macs(conv: nn.Conv2d, a: torch.Tensor, kept: torch.Tensor, zero_w: bool):
    """(total, performed per input) by looping over every output and tap."""
    n, c_in, h, w = a.shape
    kh, kw = conv.kernel_size
    (sh, sw), (ph, pw) = conv.stride, conv.padding
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    per_group = c_in // conv.groups
    c_out = conv.out_channels
    total, done = 0, [0] * n
    for o in range(c_out):
        group = o // (c_out // conv.groups)
        for i in range(ho):
            for j in range(wo):
                for c in range(per_group):
                    for u in range(kh):
                        for v in range(kw):
                            y, x = i * sh - ph + u, j * sw - pw + v
                            if not (0 <= y < h and 0 <= x < w):
                                continue
                            total += 1
                            if zero_w and conv.weight[o, c, u, v] == 0:
                                continue
                            for b in range(n):
                                if kept[b, o] and a[b, group * per_group + c, y, x] != 0:
                                    done[b] += 1
    return total, done


@pytest.mark.parametrize(
    "kwargs", [dict(padding=1), dict(padding=1, stride=2), dict(padding=0, groups=2)]
)
@pytest.mark.parametrize("zero_w", [False, True])
def test_skipped_work_of_a_gated_convolution_matches_a_naive_count(kwargs, zero_w):
    torch.manual_seed(0)
    block = randomized(GatedConvBlock(2, 4, k=2))
    block.conv = nn.Conv2d(2, 4, 3, bias=False, **kwargs)
    with torch.no_grad():
        block.conv.weight[block.conv.weight.abs() < 0.1] = 0
    a = torch.rand(3, 2, 5, 5)
    a[a < 0.4] = 0
    sw = skipped_work(nn.Sequential(block), a, zero_weights=zero_w)
    total, done = naive_conv_macs(block.conv, a, block.kept(a), zero_w)
    assert sw.layers == ("0.conv",)
    assert sw.total.tolist() == [total] and sw.performed[:, 0].tolist() == done
    assert np.allclose(sw.fraction, 1 - np.array(done) / total)


def test_skipped_work_sums_layers_in_macs_not_in_fractions():
    torch.manual_seed(0)
    model = randomized(gated_cnn())
    sw = skipped_work(model, torch.rand(4, 8, 8, 1))
    # conv1 on real data: 16 filters x (8x8 outputs, 3x3 taps less the padding) = 16 * 484
    assert sw.total.tolist() == [16 * 484, 32 * 16 * 100, 10 * 128]
    expected = 1 - sw.performed.sum(axis=1) / sw.total.sum()
    assert np.array_equal(sw.fraction, expected)
    # gating alone skips half of every conv's work; zero inputs skip some more
    per_layer = sw.per_layer
    assert per_layer["1.conv"] >= 0.5 and per_layer["3.conv"] >= 0.75


def test_a_dense_model_on_dense_inputs_skips_nothing():
    model = nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2))
    sw = skipped_work(model, torch.rand(5, 4) + 0.1)
    assert sw.mean == 0.0 and sw.total.tolist() == [12, 6]
