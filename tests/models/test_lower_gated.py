"""Lowering the gated cnn (dynamic channel gating, FBS) to the IR's ``ChannelGate``:
quantized at 8 bits with power-of-two scales, the oracle equals the float64 torch
fake-quant forward bit for bit on the whole digits test split, every activation stage
included, with the saliency scale on (the training default) and off."""

import copy

import numpy as np
import pytest
import torch

from pqflow.ir import AvgPool2d, ChannelGate, from_json, to_json, verify
from pqflow.kernels import run, run_reference
from pqflow.models import TrainConfig, train_or_load
from pqflow.models.dynamic import GatedConvBlock, gated_cnn
from pqflow.models.lower import LoweringError, lower, lower_with_info
from pqflow.models.qmodules import QuantAct, QuantConfig, QuantGatedConvBlock, quantize_model

CALIB = 500


@pytest.fixture(scope="module")
def float_gated(digits_image, model_cache):
    """``gated_cnn`` (keep half, scale=True) trained 8 epochs (~7 s)."""
    d = digits_image
    return train_or_load(
        "gated_cnn", d.x_train, d.y_train, TrainConfig(epochs=8), cache_dir=model_cache
    )


def _without_scale(model):
    m = copy.deepcopy(model)
    for b in m.modules():
        if isinstance(b, GatedConvBlock):
            b.gate.scale = False
    return m


def _torch_double(q, x):
    qd = copy.deepcopy(q).double()
    acts = {}
    handles = [
        m.register_forward_hook(
            lambda mod, args, out, name=n: acts.__setitem__(name, (out.detach().clone(), mod))
        )
        for n, m in qd.named_modules()
        if isinstance(m, QuantAct)
    ]
    handles += [  # which channels each block ran, by its own top-k
        m.register_forward_pre_hook(
            lambda mod, args, name=n: acts.__setitem__(f"{name}.kept", mod.kept(args[0]).numpy())
        )
        for n, m in qd.named_modules()
        if isinstance(m, GatedConvBlock)
    ]
    with torch.no_grad():
        out = qd(torch.as_tensor(x, dtype=torch.float64)).numpy()
    for h in handles:
        h.remove()
    return out, acts


def _codes(v: torch.Tensor, mod: QuantAct, shape) -> np.ndarray:
    if v.dim() == 4 and tuple(v.shape[1:]) != shape:
        v = v.permute(0, 2, 3, 1)
    return np.rint(v.numpy() / float(mod.quant.scale)).astype(np.int64)


@pytest.mark.parametrize("scale", [True, False])
def test_gated_cnn_is_bit_exact_on_the_test_split(float_gated, digits_image, scale):
    d = digits_image
    fm = float_gated if scale else _without_scale(float_gated)
    q = quantize_model(fm, QuantConfig(), d.x_train[:CALIB])
    low = lower_with_info(q, d.x_train[:4])
    g = verify(low.graph)
    gates = [n for n in g if isinstance(n.op, ChannelGate)]
    assert [(n.name, n.op.k, n.op.scale) for n in gates] == [
        ("1.gate", 8, scale),
        ("3.gate", 16, scale),
    ]
    assert [n.op.kernel for n in g if isinstance(n.op, AvgPool2d)] == [(8, 8), (4, 4)]
    x = d.x_test.astype(np.float64)
    ref, acts = _torch_double(q, x)
    assert np.array_equal(run(g, x), ref / low.output_scale)
    # every activation stage, and the gates themselves: which channels ran
    kept = {b: acts.pop(f"{b}.kept") for b in ("1", "3")}
    names = [n for n in acts if n in {node.name for node in g}]
    assert len(names) == len(acts) == (9 if scale else 7)
    got = run(g, x, outputs=[*names, "1.gate", "3.gate"])
    types = g.types()
    for n in names:
        assert np.array_equal(got[n], _codes(*acts[n], types[n].shape)), n
    for block in ("1", "3"):
        ran = (got[f"{block}.gate"] != 0).any(axis=(1, 2))
        assert ran.any() and not (ran & ~kept[block]).any()  # nothing outside the top-k
        assert (kept[block].sum(axis=1) == g.node(f"{block}.gate").op.k).all()
    # the numpy reference agrees, and the JSON form round-trips
    g2 = from_json(to_json(g))
    assert g2 == g
    assert np.array_equal(run_reference(g2, x[:64]), run(g, x[:64]))


def test_float_and_unsupported_gated_blocks_fail_with_one_line():
    model = gated_cnn()
    with pytest.raises(LoweringError, match="no quantized layers"):
        lower(model, np.zeros((2, 8, 8, 1)))
    x = np.random.default_rng(0).random((64, 8, 8, 1))
    q = quantize_model(gated_cnn(pool=2), QuantConfig(), x)
    assert isinstance(q._modules["1"], QuantGatedConvBlock)
    with pytest.raises(LoweringError) as e:
        lower(q, x[:4])
    msg = str(e.value)
    assert "\n" not in msg
    assert "module '1' (QuantGatedConvBlock)" in msg and "only pool=1" in msg
    q._modules["1"] = model._modules["1"]  # a float block inside a quantized model
    with pytest.raises(LoweringError, match=r"module '1' \(GatedConvBlock\).*quantize it"):
        lower(q, x[:4])


def test_pruned_gated_cnn_is_bit_exact_and_records_sparsity(float_gated, digits_image):
    from pqflow.ir import Conv2d, Pattern
    from pqflow.models.prune import prune

    d = digits_image
    pruned = prune(copy.deepcopy(float_gated), "element", "l1", 0.8)
    q = quantize_model(pruned, QuantConfig(), d.x_train[:CALIB])
    low = lower_with_info(q, d.x_train[:4])
    g = verify(low.graph)
    x = d.x_test.astype(np.float64)
    ref, _ = _torch_double(q, x)
    assert np.array_equal(run(g, x), ref / low.output_scale)
    convs = [n.op.weight for n in g if isinstance(n.op, Conv2d)]
    assert [w.sparsity.pattern for w in convs] == [Pattern.UNSTRUCTURED] * 2
    assert sum(w.nnz for w in convs) <= 0.3 * sum(w.data.size for w in convs)
