"""torch.fx lowering of quantize_model outputs: every zoo model x technique, on the whole
digits test split. Power-of-two models: the oracle's integer outputs (and every activation
stage) equal the float64 torch forward's integer codes bit for bit. Float scales: top-1
agreement >= 99.5% and every Requant within 1 LSB of the ideal (requant.py's bound)."""

import copy
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import pqflow
from pqflow.errors import UserError
from pqflow.ir import (
    BinaryDense,
    Bipolar,
    Conv2d,
    Dense,
    Fixed,
    MultiThreshold,
    Overflow,
    Pattern,
    Requant,
    Rounding,
    apply_overflow,
    round_shift,
    verify,
)
from pqflow.kernels import run
from pqflow.models import TrainConfig, quantize_mlp, train_or_load
from pqflow.models.lower import LoweringError, load_model, lower, lower_with_info, save_model
from pqflow.models.prune import prune
from pqflow.models.qat import qat
from pqflow.models.qmodules import QuantAct, QuantConfig, quantize_model
from pqflow.models.quantizers import QuantSpec
from pqflow.models.requant import ideal_requant, mult_shift, requant_params

FLOAT_CFG = QuantConfig(
    weight=QuantSpec(bits=8, narrow=True, axis=0, scale="float"),
    act=QuantSpec(bits=8, signed=False, scale="float"),
    input=QuantSpec(bits=8, signed=False, scale="float"),
)
SHORT_QAT = TrainConfig(epochs=2, lr=2e-3, weight_decay=0.0)


EPOCHS = {"mlp": 15, "cnn": 8, "resnet_tiny": 4}  # accuracy is not the point: faithfulness
CALIB = 500  # rows of the training split used to calibrate and fine-tune


class _Zoo(dict):
    """Float zoo models, each trained on first use (once per session and worker)."""

    def __init__(self, digits, digits_image, cache):
        super().__init__()
        self.flat, self.image, self.cache = digits, digits_image, cache

    def __missing__(self, name):
        d = self.flat if name == "mlp" else self.image
        cfg = TrainConfig(epochs=EPOCHS[name])
        v = (train_or_load(name, d.x_train, d.y_train, cfg, cache_dir=self.cache), d)
        self[name] = v
        return v


@pytest.fixture(scope="session")
def zoo(digits, digits_image, model_cache):
    return _Zoo(digits, digits_image, model_cache)


def _quantized(zoo, model, technique):
    fm, d = zoo[model]
    x, y = d.x_train[:CALIB], d.y_train[:CALIB]
    if technique == "w8a8":
        return quantize_model(fm, QuantConfig(), x), d
    if technique == "w4a4_qat":
        return qat(quantize_model(fm, QuantConfig.wa(4, 4), x), x, y, SHORT_QAT), d
    if technique == "float_per_channel":
        return quantize_model(fm, FLOAT_CFG, x), d
    if technique == "filter50":
        return quantize_model(prune(copy.deepcopy(fm), "filter", "l1", 0.5), QuantConfig(), x), d
    if technique == "element80":
        return quantize_model(prune(copy.deepcopy(fm), "element", "l1", 0.8), QuantConfig(), x), d
    raise AssertionError(technique)


def _top1_agreement(g, q, x) -> float:
    """Oracle top-1 vs the torch forward in float64 (the float32 forward is itself noisy:
    binary layers meet exact ties at 0 often, and float32 breaks them either way)."""
    ref, _ = _torch_double(q, x)
    return float(np.mean(run(g, x).argmax(axis=1) == ref.argmax(axis=1)))


def _torch_double(q, x):
    qd = copy.deepcopy(q).double()
    acts = {}

    def hook(name):
        def f(mod, args, out):
            acts[name] = (out.detach().clone(), mod)

        return f

    handles = [
        m.register_forward_hook(hook(n)) for n, m in qd.named_modules() if isinstance(m, QuantAct)
    ]
    with torch.no_grad():
        out = qd(torch.as_tensor(x, dtype=torch.float64)).numpy()
    for h in handles:
        h.remove()
    return out, acts


def _codes(v: torch.Tensor, mod: QuantAct, t) -> np.ndarray:
    """The raws a QuantAct's float64 output stands for, in the IR node's layout and type."""
    if v.dim() == 4 and tuple(v.shape[1:]) != t.shape:
        v = v.permute(0, 2, 3, 1)  # torch's (N, C, H, W) -> the IR's channels-last
    if isinstance(t.dtype, Bipolar):
        return (v.numpy() > 0).astype(np.int64)
    return np.rint(v.numpy() / float(mod.quant.scale)).astype(np.int64)


PIPELINE = ["w8a8", "w4a4_qat", "filter50", "element80"]


@pytest.mark.parametrize("technique", PIPELINE)
@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet_tiny"])
def test_pow2_models_are_bit_exact_on_the_test_split(zoo, model, technique):
    q, d = _quantized(zoo, model, technique)
    low = lower_with_info(q, d.x_train[:4])
    g = verify(low.graph)
    x = d.x_test.astype(np.float64)
    ref, acts = _torch_double(q, x)
    assert np.array_equal(run(g, x), ref / low.output_scale)
    # every activation stage, on the graph that keeps all channels
    full = lower(q, d.x_train[:4], drop_dead_channels=False)
    stages = [n for n in acts if any(node.name == n for node in full)]
    assert len(stages) == len(acts)  # every activation is a node of its module's path
    got = run(full, x, outputs=stages)
    types = full.types()
    for n in stages:
        assert np.array_equal(got[n], _codes(acts[n][0], acts[n][1], types[n])), n
    for node in g:
        if isinstance(node.op, Requant):  # power-of-two ratios: pure shifts
            assert all(m & (m - 1) == 0 for m in node.op.mult)
    if technique == "w4a4_qat":
        assert any(isinstance(n.op, MultiThreshold) for n in g)
        assert not any(isinstance(n.op, Requant) for n in g if n.name != "output")


@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet_tiny"])
def test_float_per_channel_scales_agree_and_meet_the_requant_bound(zoo, model):
    q, d = _quantized(zoo, model, "float_per_channel")
    low = lower_with_info(q, d.x_train[:4])
    g = verify(low.graph)
    x = d.x_test.astype(np.float64)
    names = list(low.requants)
    inputs = [g.node(n).inputs[0] for n in names]
    got = run(g, x, outputs=[*names, *inputs])
    agree = _top1_agreement(g, q, x)
    assert agree >= 0.995, agree
    assert any(max(g.node(n).op.mult) > 1 for n in names)  # real multipliers in use
    for n, i in zip(names, inputs, strict=True):
        to = g.node(n).op.to
        ideal = ideal_requant(got[i], low.requants[n], to.min_raw, to.max_raw)
        assert np.abs(got[n] - ideal).max() <= 1, n


def test_filter_pruned_channels_vanish(zoo):
    q, d = _quantized(zoo, "cnn", "filter50")
    g = lower(q, d.x_train[:4])
    convs = [n for n in g if isinstance(n.op, Conv2d)]
    assert [c.op.weight.shape[0] for c in convs] == [8, 16]
    assert convs[1].op.weight.shape[-1] == 8  # the reader lost the columns too
    assert g.node("10").op.weight.shape == (10, 2 * 2 * 16)
    qm, dm = _quantized(zoo, "mlp", "filter50")
    gm = lower(qm, dm.x_train[:4])
    assert [n.op.weight.shape for n in gm if isinstance(n.op, Dense)] == [
        (32, 64),
        (16, 32),
        (16, 16),
        (10, 16),
    ]


def test_sparsity_patterns_are_recorded(zoo):
    q, d = _quantized(zoo, "mlp", "element80")
    g = lower(q, d.x_train[:4])
    dense = [n.op.weight for n in g if isinstance(n.op, Dense)]
    assert all(w.sparsity.pattern is Pattern.UNSTRUCTURED for w in dense)
    total = sum(m.weight.numel() for m in q.modules() if isinstance(m, nn.Linear))
    assert sum(w.nnz for w in dense) <= 0.2 * total + 4
    fm, d = zoo["mlp"]
    q = quantize_model(
        prune(copy.deepcopy(fm), "nm", "l1", n=2, m=4), QuantConfig(), d.x_train[:CALIB]
    )
    g = lower(q, d.x_train[:4])
    sp = [n.op.weight.sparsity for n in g if isinstance(n.op, Dense)]
    assert all(s.pattern is Pattern.NM and (s.n, s.m) == (2, 4) for s in sp)
    x = d.x_test.astype(np.float64)
    ref, _ = _torch_double(q, x)
    assert np.array_equal(run(g, x), ref * 2.0 ** g.types()[g.outputs[0]].dtype.frac)


def test_kernel_pruned_cnn_records_kernel_pattern(zoo):
    fm, d = zoo["cnn"]
    q = quantize_model(
        prune(copy.deepcopy(fm), "kernel", "l1", 0.5), QuantConfig(), d.x_train[:CALIB]
    )
    g = lower(q, d.x_train[:4])
    assert g.node("5").op.weight.sparsity.pattern is Pattern.KERNEL


def test_ternary_mlp(zoo):
    fm, d = zoo["mlp"]
    x, y = d.x_train[:CALIB], d.y_train[:CALIB]
    q = qat(quantize_model(fm, QuantConfig(weight=QuantSpec.ternary(axis=0)), x), x, y, SHORT_QAT)
    low = lower_with_info(q, d.x_train[:4])
    g = low.graph
    dense = [n.op for n in g if isinstance(n.op, Dense)]
    assert all(op.weight.dtype == Fixed(2, 0, True) for op in dense)
    assert set(np.unique(np.concatenate([op.weight.data.ravel() for op in dense]))) == {-1, 0, 1}
    assert _top1_agreement(g, q, d.x_test.astype(np.float64)) >= 0.995


@pytest.mark.parametrize("alpha", ["float", "pow2"])
def test_binary_mlp(zoo, alpha):
    fm, d = zoo["mlp"]
    cfg = QuantConfig(weight=QuantSpec.binary(alpha, axis=0), act=QuantSpec.binary())
    x, y = d.x_train[:CALIB], d.y_train[:CALIB]
    q = qat(quantize_model(fm, cfg, x), x, y, SHORT_QAT)
    low = lower_with_info(q, d.x_train[:4])
    g = low.graph
    kinds = [type(n.op).__name__ for n in g]
    assert kinds == [
        "Quantize",
        "Dense",
        "MultiThreshold",
        "BinaryDense",
        "MultiThreshold",
        "BinaryDense",
        "MultiThreshold",
        "Dense",
        "Requant",
    ]
    assert g.node("0").op.weight.dtype == Fixed(2, 0, True)  # 8-bit input, ±1 weights
    assert isinstance(g.node("1").type.dtype, Bipolar)
    assert g.node("5").type.dtype == Fixed(2, 0, True)  # ±1 into the last (biased) layer
    assert isinstance(g.node("2").op, BinaryDense)
    x = d.x_test.astype(np.float64)
    out = run(g, x)
    ref, acts = _torch_double(q, x)
    if alpha == "pow2":  # every scale a power of two: bit-exact
        assert np.array_equal(out, ref / low.output_scale)
    assert np.mean(out.argmax(axis=1) == ref.argmax(axis=1)) >= 0.995


def test_quantized_mlp_still_lowers_through_lower(zoo, digits):
    q_mlp = quantize_mlp(zoo["mlp"][0], digits.x_train)
    g = lower(q_mlp)
    assert pqflow.lower is lower
    assert np.array_equal(run(g, digits.x_test), q_mlp.forward_int(digits.x_test)[-1])


# --- errors ---------------------------------------------------------------------------------


def test_unsupported_layer_names_path_type_and_what_is_supported(zoo):
    fm, d = zoo["mlp"]
    q = quantize_model(fm, QuantConfig(), d.x_train[:CALIB])
    path = list(q._modules)[2]
    q[2] = nn.Sequential(q[2], nn.Tanh())
    with pytest.raises(LoweringError) as e:
        lower(q, d.x_train[:4])
    msg = str(e.value)
    assert f"'{path}.1'" in msg and "(Tanh)" in msg and "supported: QuantLinear" in msg
    assert "\n" not in msg and isinstance(e.value, UserError)


def test_float_model_and_missing_example_are_refused(zoo):
    fm, d = zoo["mlp"]
    with pytest.raises(LoweringError, match="no quantized layers"):
        lower(fm, d.x_train[:4])
    with pytest.raises(LoweringError, match="example input"):
        lower(quantize_model(fm, QuantConfig(), d.x_train[:CALIB]))


def test_saved_model_round_trip(zoo, tmp_path):
    fm, d = zoo["cnn"]
    q = quantize_model(fm, QuantConfig(), d.x_train[:CALIB])
    save_model(tmp_path / "m.pt", q, d.x_train[:2])
    m, x = load_model(tmp_path / "m.pt")
    assert lower(m, x) == lower(q, d.x_train[:2])
    torch.save({"x": 1}, tmp_path / "bad.pt")
    with pytest.raises(LoweringError, match="not a pqflow-model/1 file"):
        load_model(tmp_path / "bad.pt")


# --- requant parameters and their bound -----------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=1e-7, max_value=1e4, allow_nan=False),
    st.lists(st.integers(-(2**30), 2**30), min_size=1, max_size=50),
    st.integers(4, 16),
)
def test_requant_within_one_lsb_of_the_ideal(ratio, xs, out_bits):
    p = requant_params([ratio], 31, out_bits)
    assert p.mult_bits >= out_bits + 2
    assert p.rel_error <= 2.0**-p.mult_bits
    to = Fixed(out_bits, 0, True)
    x = np.array(xs, dtype=np.int64)
    y = apply_overflow(
        round_shift(x * p.mult[0], p.shift[0], Rounding.HALF_EVEN), to, Overflow.SATURATE
    )
    r = Fraction(ratio)
    for xi, yi in zip(xs, y, strict=True):
        ideal = min(max(round(xi * r), to.min_raw), to.max_raw)  # exact, half to even
        assert abs(int(yi) - ideal) <= 1


def test_power_of_two_ratios_are_shifts():
    assert mult_shift(2.0**-5) == (1, 5)
    assert mult_shift(1.0) == (1, 0)
    assert mult_shift(8.0) == (8, 0)
    m, s = mult_shift(0.3, 16)
    assert 2**15 <= m < 2**16 and abs(m / 2**s - 0.3) <= 0.3 * 2**-16
    p = requant_params([0.25, 0.25], 20, 8)
    assert (p.mult, p.shift, p.exact) == ((1,), (2,), True)


# --- command line ---------------------------------------------------------------------------


def _cli(*args) -> int:
    from pqflow.cli import main

    try:
        main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_cli_lower_writes_atomically_and_refuses_to_overwrite(zoo, tmp_path, capsys):
    from pqflow import ir

    fm, d = zoo["mlp"]
    q = quantize_model(fm, QuantConfig(), d.x_train[:CALIB])
    save_model(tmp_path / "m.pt", q, d.x_train[:2])
    out = tmp_path / "m.ir.json"
    assert _cli("lower", str(tmp_path / "m.pt"), "-o", str(out)) == 0
    assert ir.load(out) == lower(q, d.x_train[:2])
    before = out.read_bytes()
    assert _cli("lower", str(tmp_path / "m.pt"), "-o", str(out)) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert _cli("lower", str(tmp_path / "m.pt"), "-o", str(out), "--force") == 0
    q[2] = nn.Sequential(q[2], nn.Tanh())
    save_model(tmp_path / "bad.pt", q, d.x_train[:2])
    capsys.readouterr()
    assert _cli("lower", str(tmp_path / "bad.pt"), "-o", str(tmp_path / "bad.json")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(Tanh)" in err
    assert not (tmp_path / "bad.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
