"""Each quantizer's defining property, on synthetic tensors (no training here)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pqflow.ir import Fixed
from pqflow.models import mlp, prune_global_l1
from pqflow.models.bnfold import fold_batchnorm
from pqflow.models.calibrate import Observer, calibrate, range_of
from pqflow.models.qmodules import QuantConfig, quant_layers, quantize_model
from pqflow.models.quant import pow2_frac
from pqflow.models.quantizers import (
    Quantizer,
    QuantSpec,
    grad_scale,
    pact_quantize,
    pow2_ceil,
    qparams_from_range,
    sign_ste,
)
from pqflow.models.zoo import build

# --- specs ----------------------------------------------------------------------------------


def test_spec_ranges():
    assert (QuantSpec(8).qmin, QuantSpec(8).qmax) == (-128, 127)
    assert (QuantSpec(8, narrow=True).qmin, QuantSpec(8, narrow=True).qmax) == (-127, 127)
    assert (QuantSpec(4, signed=False).qmin, QuantSpec(4, signed=False).qmax) == (0, 15)
    assert QuantSpec(4, signed=False, narrow=True).qmax == 14
    assert (QuantSpec.binary().qmin, QuantSpec.binary().qmax) == (-1, 1)
    assert QuantSpec.ternary().bits == 2
    assert QuantSpec(16).qmax == 32767


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bits": 1}, "uniform bits must be one of"),
        ({"bits": 9}, "uniform bits must be one of"),
        ({"scale": "unit"}, "binary and ternary modes only"),
        ({"learn": "pact"}, "needs signed=False"),
        ({"learn": "lsq", "symmetric": False}, "needs symmetric=True"),
        ({"mode": "binary"}, "needs bits=1"),
        ({"mode": "octal"}, "mode must be one of"),
    ],
)
def test_spec_rejects_with_a_sentence(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantSpec(**kwargs)


# --- uniform grids --------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.floats(min_value=1e-4, max_value=1e4),
    st.sampled_from([2, 3, 4, 6, 8, 16]),
    st.booleans(),
)
def test_pow2_scale_is_a_power_of_two_matching_pow2_frac(max_abs, bits, signed):
    spec = QuantSpec(bits, signed=signed)
    scale, zp = qparams_from_range(spec, torch.tensor(-max_abs if signed else 0.0), max_abs)
    frac = -math.log2(float(scale))
    assert frac == round(frac) and float(zp) == 0
    assert round(frac) == pow2_frac(float(torch.tensor(max_abs, dtype=torch.float32)), bits, signed)


def test_pow2_ceil_exact_at_powers():
    r = torch.tensor([0.25, 0.26, 1.0, 3.0, 1e-6], dtype=torch.float64)
    assert pow2_ceil(r).tolist() == [0.25, 0.5, 1.0, 4.0, 2.0**-19]


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from([2, 3, 4, 8]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["pow2", "float"]),
    st.integers(0, 2**16),
)
def test_values_on_grid_and_codes_in_range(bits, signed, symmetric, narrow, scale, seed):
    spec = QuantSpec(bits, signed=signed, symmetric=symmetric, narrow=narrow, scale=scale)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(200, generator=g, dtype=torch.float64) * 3 + 0.5
    q = Quantizer(spec)
    q.set_range(float(x.min()) / 2, float(x.max()) / 2)  # half range: forces saturation
    v = q(x)
    codes = q.codes(x)
    assert spec.qmin <= int(codes.min()) and int(codes.max()) <= spec.qmax
    assert torch.allclose(v, (codes - q.zero_point.double()) * q.scale.double(), atol=1e-12)
    assert float(q.zero_point) == round(float(q.zero_point))
    assert float(q(torch.zeros(1, dtype=torch.float64))) == 0.0  # zero is exact
    if scale == "pow2":
        assert isinstance(q.frac, int)


def test_narrow_range_excludes_the_most_negative_code():
    q = Quantizer(QuantSpec(4, narrow=True))
    q.set_range(-1.0, 1.0)
    assert int(q.codes(torch.tensor([-100.0, 100.0])).min()) == -7
    wide = Quantizer(QuantSpec(4))
    wide.set_range(-1.0, 1.0)
    assert int(wide.codes(torch.tensor([-100.0])).min()) == -8


def test_fmt_is_the_ir_type():
    q = Quantizer(QuantSpec(8, signed=False))
    q.set_range(0.0, 1.0)
    assert q.fmt == Fixed(8, 7, False)  # the digits input: raw = 128 * x (see data.py)
    with pytest.raises(ValueError, match="only a per-tensor, symmetric, uniform grid"):
        _ = Quantizer(QuantSpec.ternary()).fmt


def test_float_scale_has_no_frac():
    q = Quantizer(QuantSpec(8, scale="float"))
    q.set_range(-3.0, 3.0)
    assert float(q.scale) == pytest.approx(3.0 / 127)
    with pytest.raises(ValueError, match="a float scale has no frac"):
        _ = q.frac


def test_uncalibrated_activation_quantizer_says_what_to_do():
    with pytest.raises(RuntimeError, match="calibrate the model"):
        Quantizer(QuantSpec(8))(torch.ones(3))


def test_per_channel_scales_differ_per_channel():
    w = torch.randn(4, 16) * torch.tensor([[0.01], [0.1], [1.0], [10.0]])
    q = Quantizer(QuantSpec(8, axis=0), dynamic=True)
    q(w)
    assert q.scale.shape == (4,)
    assert len(set(q.scale.tolist())) == 4
    assert int(q.codes(w).abs().amax(dim=1).min()) >= 64  # each channel uses its range


# --- straight-through estimators ------------------------------------------------------------


def test_ste_gradient_flows_through_round_and_stops_outside_the_clamp():
    q = Quantizer(QuantSpec(4))
    q.set_range(-1.0, 1.0)  # scale 1/4 (pow2 ceil of 1/7): grid -2.0 .. 1.75
    x = torch.tensor([0.1, 0.37, -0.6, 5.0, -5.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_lsq_step_gets_a_scaled_gradient():
    q = Quantizer(QuantSpec(4, learn="lsq", scale="float"), dynamic=True)
    w = torch.randn(8, 8, requires_grad=True)
    q(w).pow(2).sum().backward()
    assert q.step.grad is not None and float(q.step.grad.abs()) > 0
    assert w.grad.abs().sum() > 0
    x = torch.tensor(2.0, requires_grad=True)
    grad_scale(x, 0.25).backward()
    assert float(x.grad) == 0.25 and float(grad_scale(x, 0.25).detach()) == 2.0


def test_lsq_pow2_step_is_a_power_of_two():
    q = Quantizer(QuantSpec(4, learn="lsq"), dynamic=True)
    q(torch.randn(8, 8))
    assert isinstance(q.frac, int)


def test_pact_alpha_gets_the_gradient_of_clipped_inputs():
    alpha = torch.tensor(2.0, requires_grad=True)
    x = torch.tensor([-1.0, 0.5, 1.9, 2.5, 7.0], requires_grad=True)
    y = pact_quantize(x, alpha, qmax=15, pow2=False)
    assert float(y.max()) == 2.0 and float(y.min()) == 0.0
    y.sum().backward()
    assert float(alpha.grad) == 2.0  # two inputs at or above alpha
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    q = Quantizer(QuantSpec(4, signed=False, learn="pact"))
    q.set_range(0.0, 3.0)
    q(torch.tensor([0.5, 10.0])).sum().backward()
    assert float(q.alpha.grad) == 1.0


# --- binary and ternary ---------------------------------------------------------------------


def test_binary_codes_and_clipped_ste():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
    y = sign_ste(x)
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]  # 0 -> +1 (MultiThreshold's >=)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_xnor_alpha_is_mean_abs_per_channel():
    w = torch.randn(3, 10)
    q = Quantizer(QuantSpec.binary("float", axis=0), dynamic=True)
    v = q(w)
    assert torch.allclose(q.scale, w.abs().mean(dim=1))
    assert set(q.codes(w).unique().tolist()) <= {-1, 1}
    assert torch.allclose(v, q.scale[:, None] * torch.where(w >= 0, 1.0, -1.0))


def test_ternary_codes_threshold_and_alpha():
    w = torch.randn(4, 50, requires_grad=True)
    q = Quantizer(QuantSpec.ternary(axis=0), dynamic=True)
    v = q(w)
    codes = q.codes(w)
    assert set(codes.unique().tolist()) == {-1, 0, 1}
    wd = w.detach()
    delta = 0.7 * wd.abs().mean(dim=1, keepdim=True)
    assert torch.equal(codes, (torch.sign(wd) * (wd.abs() > delta)).long())
    big = wd.abs() > delta
    alpha = (wd.abs() * big).sum(1) / big.sum(1)
    assert torch.allclose(q.scale, alpha)
    v.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight through


# --- calibration ----------------------------------------------------------------------------


def test_calibration_methods_differ_on_heavy_tailed_data():
    g = np.random.default_rng(0)
    obs = Observer()
    obs(torch.from_numpy(np.abs(g.standard_cauchy(50_000))))
    spec = QuantSpec(8, signed=False)
    his = {
        m: range_of(obs, spec, m, percentile=99.9)[1] for m in ("minmax", "percentile", "mse", "kl")
    }
    assert his["minmax"] == obs.hi
    for m in ("percentile", "mse", "kl"):
        assert his[m] < his["minmax"] / 5, (m, his)
    assert len({round(v, 6) for v in his.values()}) == 4


def test_calibrate_sets_every_activation_quantizer():
    torch.manual_seed(0)
    q = quantize_model(mlp(), QuantConfig())
    x = torch.rand(64, 64)
    ranges = calibrate(q, x, method="percentile")
    assert set(ranges) == {"input_quant.quant", "1.quant", "3.quant", "5.quant"}
    assert all(bool(m.initialized) for n, m in q.named_modules() if isinstance(m, Quantizer))
    assert q(x).shape == (64, 10)


# --- batch-norm folding ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cnn", "resnet_tiny"])
def test_bn_folding_preserves_outputs(name):
    model = build(name, seed=1).double()
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics
            m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64))
            m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64))
    model.eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # original untouched
    x = torch.rand(16, 8, 8, 1, generator=g, dtype=torch.float64)
    assert torch.allclose(folded(x), model(x), rtol=1e-10, atol=1e-10)
    f32 = fold_batchnorm(model.float())
    assert torch.allclose(f32(x.float()), model(x.float()), rtol=1e-4, atol=1e-5)


# --- masks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        QuantSpec(8, narrow=True),
        QuantSpec(4, symmetric=False),
        QuantSpec.binary("float", 0),
        QuantSpec.ternary(),
    ],
    ids=str,
)
def test_masked_weights_stay_exactly_zero(spec):
    model = prune_global_l1(build("mlp", seed=0), 0.7)
    q = quantize_model(model, QuantConfig(weight=spec), torch.rand(32, 64))
    for _, layer in quant_layers(q):
        dead = layer.weight_mask == 0
        assert dead.any()
        assert (layer.quantized_weight()[dead] == 0).all()
        codes = layer.weight_codes()
        zp = layer.weight_quant.zero_point
        assert (codes[dead] == (zp.long() if zp.dim() == 0 else 0)).all()
