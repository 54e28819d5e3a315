import pytest
import torch
from torch import nn

from pqflow.models import MODELS, build, mlp


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
