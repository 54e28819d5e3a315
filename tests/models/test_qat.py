"""PTQ, QAT, binary/ternary and mixed precision on the digits split (the cheap targets)."""

import copy
import itertools

import torch

from pqflow.models import TrainConfig, evaluate, prune_global_l1
from pqflow.models.mixed import Sensitivity, choose_bits, mixed_config, sensitivity
from pqflow.models.qat import qat
from pqflow.models.qmodules import QuantConfig, quant_layers, quantize_model, weight_bits
from pqflow.models.quantizers import QuantSpec

# --- PTQ ------------------------------------------------------------------------------------


def test_w8a8_ptq_mlp_within_half_a_point(float_mlp, digits):
    q = quantize_model(float_mlp, QuantConfig(), digits.x_train)
    f = evaluate(float_mlp, digits.x_test, digits.y_test)
    assert evaluate(q, digits.x_test, digits.y_test) >= f - 0.005


def test_w8a8_ptq_cnn_within_half_a_point(float_cnn, digits_image):
    d = digits_image
    q = quantize_model(float_cnn, QuantConfig(), d.x_train)
    assert evaluate(q, d.x_test, d.y_test) >= evaluate(float_cnn, d.x_test, d.y_test) - 0.005


def test_bias_at_accumulator_scale_and_layer_is_integer_exact(float_mlp, digits):
    q = copy.deepcopy(quantize_model(float_mlp, QuantConfig(), digits.x_train)).double()
    x = torch.as_tensor(digits.x_test[:50], dtype=torch.float64)
    inp, layer = q.input_quant, q[1]
    assert layer.input_quant is inp.quant
    out = layer(inp(x))
    xs, ws = float(inp.quant.scale), float(layer.weight_quant.scale)
    assert torch.equal(layer.bias_scale(), torch.full((64,), xs * ws, dtype=torch.float64))
    x_codes = inp.quant.codes(x)
    assert inp.quant.fmt.frac == 7 and int(x_codes.max()) == 128 * float(x.max())
    acc = x_codes @ layer.weight_codes().T + layer.bias_codes()
    assert torch.equal(out / (xs * ws), acc.double())  # Dense(x, W, b) on raws, exactly


# --- QAT ------------------------------------------------------------------------------------


def test_w4a4_qat_mlp_within_one_and_a_half_points(float_mlp, digits):
    q = quantize_model(float_mlp, QuantConfig.wa(4, 4), digits.x_train)
    qat(q, digits.x_train, digits.y_train)
    f = evaluate(float_mlp, digits.x_test, digits.y_test)
    assert evaluate(q, digits.x_test, digits.y_test) >= f - 0.015
    assert all(m.weight_codes().abs().max() <= 7 for _, m in quant_layers(q))


def test_ternary_mlp_within_three_points(float_mlp, digits):
    cfg = QuantConfig(weight=QuantSpec.ternary(axis=0))
    q = quantize_model(float_mlp, cfg, digits.x_train)
    qat(q, digits.x_train, digits.y_train, TrainConfig(epochs=20, lr=3e-3, weight_decay=0))
    f = evaluate(float_mlp, digits.x_test, digits.y_test)
    assert evaluate(q, digits.x_test, digits.y_test) >= f - 0.03
    for _, m in quant_layers(q):
        assert set(m.weight_codes().unique().tolist()) == {-1, 0, 1}


def test_fully_binary_mlp_reaches_ninety_percent(float_mlp, digits):
    cfg = QuantConfig(weight=QuantSpec.binary("float", axis=0), act=QuantSpec.binary())
    q = quantize_model(float_mlp, cfg, digits.x_train)
    assert q.input_quant.quant.spec.bits == 8
    qat(q, digits.x_train, digits.y_train, TrainConfig(epochs=20, lr=1e-2, weight_decay=0))
    assert evaluate(q, digits.x_test, digits.y_test) >= 0.90
    for _, m in quant_layers(q):
        assert set(m.weight_codes().unique().tolist()) == {-1, 1}
    h = q[:3](torch.as_tensor(digits.x_test[:20]))  # input, Linear, sign
    assert set(h.unique().tolist()) == {-1.0, 1.0}


def test_masks_survive_quantization_and_qat(float_mlp, digits):
    pruned = prune_global_l1(copy.deepcopy(float_mlp), 0.6)
    q = quantize_model(pruned, QuantConfig.wa(4, 4), digits.x_train)
    qat(q, digits.x_train, digits.y_train, TrainConfig(epochs=2, lr=2e-3, weight_decay=0))
    for _, m in quant_layers(q):
        dead = m.weight_mask == 0
        assert dead.float().mean() > 0.3
        assert (m.weight[dead] == 0).all()
        assert (m.weight_codes()[dead] == 0).all()
        assert (m.quantized_weight()[dead] == 0).all()


# --- mixed precision ------------------------------------------------------------------------


def test_knapsack_is_optimal_and_greedy_fits():
    drops = {
        "a": {2: 0.30, 4: 0.02, 8: 0.0},
        "b": {2: 0.05, 4: 0.01, 8: 0.0},
        "c": {2: 0.20, 4: 0.10, 8: 0.0},
    }
    sens = Sensitivity(drops, {"a": 100, "b": 400, "c": 50}, 0.98)
    for budget in (1100, 1500, 2200, 3000, 4400):
        best = min(
            (
                sum(drops[n][b] for n, b in zip("abc", bits, strict=True)),
                dict(zip("abc", bits, strict=True)),
            )
            for bits in itertools.product((2, 4, 8), repeat=3)
            if sum(sens.sizes[n] * b for n, b in zip("abc", bits, strict=True)) <= budget
        )
        got = choose_bits(sens, budget, "knapsack")
        assert sum(drops[n][b] for n, b in got.items()) == best[0]
        greedy = choose_bits(sens, budget, "greedy")
        assert sum(sens.sizes[n] * b for n, b in greedy.items()) <= budget


def test_sensitivity_and_budget_on_the_mlp(float_mlp, digits):
    x, y = digits.x_train[:400], digits.y_train[:400]
    sens = sensitivity(float_mlp, digits.x_train, x, y, bits=(2, 4, 8))
    assert set(sens.drops) == {"0", "2", "4", "6"}
    assert all(d[8] == 0 for d in sens.drops.values())
    assert all(d[2] > d[8] for d in sens.drops.values())
    budget = sum(sens.sizes.values()) * 5
    bits = choose_bits(sens, budget)
    q = quantize_model(float_mlp, mixed_config(QuantConfig(), bits), digits.x_train)
    assert weight_bits(q) <= budget
    assert [m.weight_quant.spec.bits for _, m in quant_layers(q)] == [bits[n] for n in sens.drops]
