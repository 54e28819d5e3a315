import copy
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pqflow.ir import Fixed
from pqflow.models import evaluate, mlp, prune_global_l1, quantize_mlp, sparsity_of
from pqflow.models.quant import fake_quant, pow2_frac

# --- formats --------------------------------------------------------------------------------


@given(
    st.floats(min_value=1e-6, max_value=1e6, allow_nan=False),
    st.integers(min_value=2, max_value=16),
    st.booleans(),
)
def test_pow2_frac_is_the_largest_non_saturating_frac(max_abs, bits, signed):
    f = pow2_frac(max_abs, bits, signed)
    max_raw = Fixed(bits, f, signed).max_raw
    assert math.ldexp(max_abs, f) <= max_raw < math.ldexp(max_abs, f + 1)


def test_pow2_frac_edge_cases():
    assert pow2_frac(1.0, 8, False) == 7  # digits input: raw = 128 * x
    assert pow2_frac(1.0, 8, True) == 6  # 128 would saturate at 127
    assert pow2_frac(0.0, 8, True) == 7
    with pytest.raises(ValueError, match="finite non-negative"):
        pow2_frac(float("nan"), 8, True)


def test_fake_quant_grid_and_straight_through_gradient():
    fmt = Fixed(4, 2, True)  # values -2.0 .. 1.75 in steps of 0.25
    x = torch.tensor([-3.0, -0.125, 0.125, 0.375, 0.6, 5.0], requires_grad=True)
    y = fake_quant(x, fmt)
    # half_even: -0.5 -> -0 , 0.5 -> 0, 1.5 -> 2
    assert y.tolist() == [-2.0, 0.0, 0.0, 0.5, 0.5, 1.75]
    y.sum().backward()
    assert x.grad.tolist() == [1.0] * 6


# --- the w8a8 MLP ---------------------------------------------------------------------------


def test_w8a8_accuracy_within_one_point(float_mlp, q_mlp, digits):
    f = evaluate(float_mlp, digits.x_test, digits.y_test)
    q = evaluate(q_mlp, digits.x_test, digits.y_test)
    assert q >= f - 0.01
    assert np.mean(q_mlp.predict_int(digits.x_test) == digits.y_test) == q


def test_weights_are_on_a_power_of_two_grid(float_mlp, q_mlp):
    linears = [m for m in float_mlp if isinstance(m, nn.Linear)]
    for lin, ly in zip(linears, q_mlp.layers, strict=True):
        assert ly.w_fmt.width == 8 and ly.w_fmt.signed
        raw = ly.weight
        assert raw.dtype == np.int64 and raw.shape == tuple(lin.weight.shape)
        assert raw.min() >= -128 and raw.max() <= 127
        # frac is the largest that fits: one more bit would overflow the largest weight
        assert 2 * np.abs(raw).max() > 127
        w = lin.weight.detach().double().numpy()
        assert np.abs(raw * 2.0**-ly.w_fmt.frac - w).max() <= 2.0 ** -(ly.w_fmt.frac + 1)


def test_formats_chain_and_bias_sits_at_the_accumulator_frac(float_mlp, q_mlp):
    assert q_mlp.in_fmt == Fixed(8, 7, False)
    fmt = q_mlp.in_fmt
    linears = [m for m in float_mlp if isinstance(m, nn.Linear)]
    for i, (lin, ly) in enumerate(zip(linears, q_mlp.layers, strict=True)):
        assert ly.in_fmt == fmt
        assert ly.bias_fmt == Fixed(32, ly.w_fmt.frac + ly.in_fmt.frac, True)
        b = lin.bias.detach().double().numpy()
        assert np.array_equal(ly.bias, np.rint(b * 2.0**ly.bias_fmt.frac))
        last = i == len(linears) - 1
        assert ly.relu == (not last)
        if last:
            assert ly.out_fmt is None
        else:
            assert ly.out_fmt.width == 8 and not ly.out_fmt.signed
        fmt = ly.out_fmt


def test_float_forward_gives_exactly_the_integer_codes(q_mlp, digits):
    codes = q_mlp.forward_int(digits.x_test)
    assert len(codes) == len(q_mlp.layers) + 1
    assert all(c.dtype == np.int64 for c in codes)
    logits = q_mlp(torch.from_numpy(digits.x_test)).numpy()
    assert np.array_equal(logits * 2.0**q_mlp.out_frac, codes[-1])
    for ly, c in zip(q_mlp.layers[:-1], codes[1:-1], strict=True):
        assert c.min() >= ly.out_fmt.min_raw and c.max() <= ly.out_fmt.max_raw


def _reference_codes(q, x):
    """The layer equations of quant.py's docstring, spelled out with Python integers."""
    raw = [min(max(round(v * 2**q.in_fmt.frac), 0), 255) for v in x]  # round() is half-even
    for ly in q.layers:
        acc = [
            sum(int(w) * r for w, r in zip(row, raw, strict=True)) + int(b)
            for row, b in zip(ly.weight, ly.bias, strict=True)
        ]
        if ly.relu:
            acc = [max(a, 0) for a in acc]
        if ly.out_fmt is None:
            return acc

        raw = [
            min(max(round(Fraction(a, 2**ly.shift)), ly.out_fmt.min_raw), ly.out_fmt.max_raw)
            for a in acc
        ]


def test_integer_codes_match_a_python_integer_reference(q_mlp, digits):
    codes = q_mlp.forward_int(digits.x_test[:40])[-1]
    for x, c in zip(digits.x_test[:40].astype(np.float64), codes, strict=True):
        assert _reference_codes(q_mlp, x) == c.tolist()


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([(8, 8), (6, 6), (4, 4), (3, 8), (8, 2)]))
def test_forward_matches_forward_int_out_of_range_and_other_widths(float_mlp, digits, seed, wa):
    q = quantize_mlp(float_mlp, digits.x_train, *wa)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.5, 2.5, size=(16, 64)).astype(np.float32)  # exercises saturation
    codes = q.forward_int(x)
    assert np.array_equal(q(torch.from_numpy(x)).numpy() * 2.0**q.out_frac, codes[-1])
    assert all(ly.w_fmt.width == wa[0] for ly in q.layers)
    for ly, c in zip(q.layers[:-1], codes[1:-1], strict=True):
        assert ly.out_fmt.width == wa[1] and ly.out_fmt.contains(int(c.min()), int(c.max()))


def test_quantize_rejects_unsupported_modules():
    with pytest.raises(ValueError, match=r"module 1 \(Tanh\) is not supported"):
        quantize_mlp(nn.Sequential(nn.Linear(4, 4), nn.Tanh()), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="bias saturates"):
        lin = nn.Linear(4, 2)
        with torch.no_grad():
            lin.bias.fill_(1e6)
        quantize_mlp(nn.Sequential(lin), np.ones((2, 4)), bias_bits=16)


# --- pruning --------------------------------------------------------------------------------

N_WEIGHTS = 64 * 64 + 64 * 32 + 32 * 32 + 32 * 10


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.8, 0.9, 1.0])
def test_prune_zeroes_exactly_the_requested_count(sparsity):
    torch.manual_seed(1)
    m = prune_global_l1(mlp(), sparsity)
    zeros = sum(int((x.weight == 0).sum()) for x in m if isinstance(x, nn.Linear))
    assert zeros == round(sparsity * N_WEIGHTS)


def test_prune_is_global_magnitude():
    torch.manual_seed(2)
    m = mlp()
    before = torch.cat([x.weight.detach().abs().flatten() for x in m if isinstance(x, nn.Linear)])
    prune_global_l1(m, 0.5)
    kept = torch.cat([x.weight.detach().abs().flatten() for x in m if isinstance(x, nn.Linear)])
    assert before[kept == 0].max() <= before[kept != 0].min()


def test_sparse_mlp_keeps_its_mask_and_accuracy(sparse_mlp, digits):
    assert round(sparsity_of(sparse_mlp) * N_WEIGHTS) == round(0.8 * N_WEIGHTS)
    for lin in (x for x in sparse_mlp if isinstance(x, nn.Linear)):
        assert torch.equal(lin.weight == 0, lin.weight_mask == 0)
    assert evaluate(sparse_mlp, digits.x_test, digits.y_test) >= 0.95


def test_quantized_sparse_mlp_keeps_the_zeros(sparse_mlp, digits):
    q = quantize_mlp(sparse_mlp, digits.x_train)
    lins = [x for x in sparse_mlp if isinstance(x, nn.Linear)]
    for lin, ly in zip(lins, q.layers, strict=True):
        assert ly.pruned
        assert np.all(ly.weight[lin.weight_mask.numpy() == 0] == 0)
    assert evaluate(q, digits.x_test, digits.y_test) >= 0.95


def test_repruning_keeps_old_zeros(float_mlp):
    m = prune_global_l1(copy.deepcopy(float_mlp), 0.5)
    old = [x.weight_mask.clone() for x in m if isinstance(x, nn.Linear)]
    prune_global_l1(m, 0.8)
    new = [x.weight_mask for x in m if isinstance(x, nn.Linear)]
    assert all(torch.all(n <= o) for n, o in zip(new, old, strict=True))
