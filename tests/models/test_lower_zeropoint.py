"""Asymmetric activation quantization (nonzero zero points) lowered exactly: the IR
carries honest raws ``code - zero_point`` clamped to ``[qmin - zp, qmax - zp]`` (a
saturating ``Requant`` when that range is a Fixed type's, else ``MultiThreshold``), so
the oracle equals the float64 torch fake-quant forward bit for bit on the digits test
split, every activation stage included."""

import copy

import numpy as np
import pytest
import torch

from pqflow.ir import MultiThreshold, Quantize, Requant, verify
from pqflow.kernels import run
from pqflow.models import TrainConfig, train_or_load
from pqflow.models.lower import lower_with_info
from pqflow.models.qmodules import QuantAct, QuantConfig, quantize_model
from pqflow.models.quantizers import QuantSpec

SIGNED_ASYM = QuantSpec(bits=8, signed=True, symmetric=False)  # on x >= 0: zero point -128


def _torch_double(q, x):
    qd = copy.deepcopy(q).double()
    acts = {}
    handles = [
        m.register_forward_hook(
            lambda mod, a, out, name=n: acts.__setitem__(name, (out.detach().clone(), mod))
        )
        for n, m in qd.named_modules()
        if isinstance(m, QuantAct)
    ]
    with torch.no_grad():
        out = qd(torch.as_tensor(x, dtype=torch.float64)).numpy()
    for h in handles:
        h.remove()
    return out, acts


def _check(q, x_calib, x):
    low = lower_with_info(q, x_calib[:4])
    g = verify(low.graph)
    ref, acts = _torch_double(q, x)
    assert np.array_equal(run(g, x), ref / low.output_scale)
    got = run(g, x, outputs=list(acts))
    types = g.types()
    for n, (v, mod) in acts.items():
        if v.dim() == 4 and tuple(v.shape[1:]) != types[n].shape:
            v = v.permute(0, 2, 3, 1)
        assert np.array_equal(got[n], np.rint(v.numpy() / float(mod.quant.scale))), n
    return g, acts


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_zero_point_minus_128_is_a_saturating_requant(model, digits, digits_image, model_cache):
    d = digits if model == "mlp" else digits_image
    fm = train_or_load(model, d.x_train, d.y_train, TrainConfig(epochs=8), cache_dir=model_cache)
    cfg = QuantConfig(act=SIGNED_ASYM, input=SIGNED_ASYM)
    q = quantize_model(fm, cfg, d.x_train[:500])
    g, acts = _check(q, d.x_train, d.x_test.astype(np.float64))
    assert {int(m.quant.zero_point) for _, m in acts.values()} == {-128}
    assert isinstance(g.node("input_quant").op, Quantize)
    assert g.node("input_quant").type.dtype.signed is False  # codes -128..127 -> raws 0..255
    assert not any(isinstance(n.op, MultiThreshold) for n in g)


def test_other_zero_points_become_exact_thresholds(digits, model_cache):
    d = digits
    fm = train_or_load("mlp", d.x_train, d.y_train, TrainConfig(epochs=8), cache_dir=model_cache)
    # inputs shifted to [-5, 11]: an unsigned asymmetric input grid gets a zero point zp
    # that is neither 0 nor 128, so codes 0..255 stand for raws -zp..255-zp: the range of
    # no Fixed type, clamped by thresholds
    cfg = QuantConfig(
        act=QuantSpec(bits=6, signed=False, symmetric=False),
        input=QuantSpec(bits=8, signed=False, symmetric=False),
    )
    xs = d.x_train - 5.0
    q = quantize_model(fm, cfg, xs[:500])
    g, acts = _check(q, xs, d.x_test.astype(np.float64) - 5.0)
    zps = {n: int(m.quant.zero_point) for n, (_, m) in acts.items()}
    zp = zps["input_quant"]
    assert zp not in (0, 128)
    mt = g.node("input_quant").op
    assert isinstance(mt, MultiThreshold) and mt.offset == -zp
    assert g.node("input_quant").type.dtype.width == 9
    # unsigned grids of ReLU outputs start at 0: zero point 0, saturating Requants
    hidden = [n for n in zps if n != "input_quant"]
    assert hidden and all(zps[n] == 0 and isinstance(g.node(n).op, Requant) for n in hidden)
