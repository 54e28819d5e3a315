"""hls4ml interop (extra ``hls``): a pqflow MLP exported with every type explicit, compiled
by hls4ml and predicted, equals the oracle bit for bit on the whole digits test split."""

from __future__ import annotations

import numpy as np
import pytest
from hls_digits import digits_mlps

from pqflow.hwgen import HardwareError
from pqflow.hwgen.hls4ml_export import (
    export_hls4ml,
    hls4ml_precision,
    mlp_layers,
    torch_mlp,
)
from pqflow.ir import Fixed, Overflow, Requant, Rounding
from pqflow.kernels import run


def test_precision_spelling_maps_every_mode():
    assert hls4ml_precision(Fixed(8, 6, False)) == "ufixed<8,2,TRN,WRAP>"
    assert (
        hls4ml_precision(Fixed(12, 14, True), Rounding.HALF_EVEN, Overflow.SATURATE)
        == "fixed<12,-2,RND_CONV,SAT>"
    )
    assert hls4ml_precision(Fixed(5, -3), Rounding.HALF_UP) == "fixed<5,8,RND,WRAP>"


def test_torch_model_carries_the_exact_values():
    _, dense, _ = digits_mlps()
    _, layers = mlp_layers(dense)
    model = torch_mlp(dense)
    lin = [m for m in model if hasattr(m, "weight")]
    assert len(lin) == len(layers) == 4
    for m, ly in zip(lin, layers, strict=True):
        w = m.weight.detach().numpy() * 2.0**ly.w_type.frac
        assert np.array_equal(w, ly.weight)
        assert np.array_equal(m.bias.detach().numpy() * 2.0**ly.b_type.frac, ly.bias)


def test_outside_the_subset_names_the_node():
    _, dense, _ = digits_mlps()
    nodes = list(dense.nodes)
    k = next(i for i, n in enumerate(nodes) if isinstance(n.op, Requant))
    op = nodes[k].op
    bad = Requant(op.to, (3,), op.shift, op.rounding, op.overflow)
    g = dense.replace(
        nodes=tuple(nodes[:k])
        + (nodes[k].__class__(nodes[k].name, bad, nodes[k].inputs, nodes[k].type),)
        + tuple(nodes[k + 1 :])
    )
    with pytest.raises(HardwareError, match="requant0.*power-of-two"):
        mlp_layers(g)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("which", "strategy", "reuse"), [("dense", "Latency", 1), ("sparse", "Resource", 4)]
)
def test_hls4ml_predict_equals_the_oracle(tmp_path, which, strategy, reuse):
    data, dense, sparse = digits_mlps()
    graph = dense if which == "dense" else sparse
    exp = export_hls4ml(graph, tmp_path / "prj", reuse_factor=reuse, strategy=strategy)
    for p in exp.precisions.values():  # every type explicit, modes where they matter
        assert set(p) == ({"result"} if len(p) == 1 else {"weight", "bias", "accum", "result"})
    assert "RND_CONV,SAT" in exp.precisions["input_1"]["result"]
    exp.compile()
    got = exp.predict_raws(data.x_test)
    expected = run(graph, data.x_test)
    same = (got == expected).all(axis=1)
    assert same.all(), f"{int((~same).sum())} of {len(same)} samples differ"
    defines = (tmp_path / "prj" / "firmware" / "defines.h").read_text()
    assert "AP_RND_CONV,AP_SAT" in defines
