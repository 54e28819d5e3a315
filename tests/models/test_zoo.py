import pytest
import torch
from torch import nn

from pqflow.models import MODELS, build, evaluate, mlp
from pqflow.models.zoo import ChannelsFirst, FlattenHWC, ResidualBlock, cnn, resnet_tiny


def test_mlp_shape():
    m = mlp()
    linears = [x for x in m if isinstance(x, nn.Linear)]
    assert [(ly.in_features, ly.out_features) for ly in linears] == [
        (64, 64),
        (64, 32),
        (32, 32),
        (32, 10),
    ]
    assert all(ly.bias is not None for ly in linears)
    assert sum(isinstance(x, nn.ReLU) for x in m) == 3
    assert not isinstance(m[-1], nn.ReLU)
    assert m(torch.zeros(5, 64)).shape == (5, 10)


def test_registry():
    assert MODELS["mlp"] is mlp
    assert isinstance(build("mlp"), nn.Sequential)
    with pytest.raises(KeyError, match="no model named 'nope'"):
        build("nope")


def test_registry_has_the_conv_models():
    assert MODELS["cnn"] is cnn and MODELS["resnet_tiny"] is resnet_tiny


@pytest.mark.parametrize("name", ["cnn", "resnet_tiny"])
def test_conv_models_take_channels_last_images(name):
    torch.manual_seed(0)
    m = build(name).eval()
    x = torch.rand(3, 8, 8, 1)
    assert m(x).shape == (3, 10)
    assert isinstance(m[0], ChannelsFirst)
    with pytest.raises(ValueError, match=r"channels-last images \(N, H, W, C\)"):
        m(torch.rand(3, 64))


def test_cnn_layout():
    m = cnn()
    convs = [x for x in m if isinstance(x, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 16, (3, 3)),
        (16, 32, (3, 3)),
    ]
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m) == 2
    assert sum(isinstance(x, nn.MaxPool2d) for x in m) == 2
    assert isinstance(m[-2], FlattenHWC) and m[-1].in_features == 128
    assert sum(p.numel() for p in m.parameters()) == 6138


def test_flatten_hwc_is_channels_last_order():
    x = torch.arange(2 * 3 * 2 * 2.0).reshape(2, 3, 2, 2)  # N, C, H, W
    flat = FlattenHWC()(x)
    n, c, h, w = 1, 2, 1, 0
    assert flat[n, (h * 2 + w) * 3 + c] == x[n, c, h, w]


def test_resnet_tiny_blocks():
    m = resnet_tiny()
    blocks = [x for x in m if isinstance(x, ResidualBlock)]
    assert len(blocks) == 2
    assert len(blocks[0].skip) == 0  # identity skip: 16 -> 16
    assert isinstance(blocks[1].skip[0], nn.Conv2d)  # 1x1 projection: 16 -> 32
    assert blocks[1].skip[0].kernel_size == (1, 1)
    # the residual mask switches the residual path off: relu(skip(x))
    blk = blocks[0].eval()
    blk.residual_mask.fill_(0)
    x = torch.randn(2, 16, 4, 4)
    assert torch.equal(blk(x), torch.relu(x))


def test_cnn_accuracy(digits_image, float_cnn):
    assert evaluate(float_cnn, digits_image.x_test, digits_image.y_test) >= 0.98


def test_build_is_seeded_and_leaves_global_rng_alone():
    import torch

    state = torch.random.get_rng_state()
    a, b = build("mlp"), build("mlp")
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    c = build("mlp", seed=1)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
