import numpy as np
import pytest

import pqflow.kernels
from pqflow.ir import (
    Dense,
    Dequantize,
    Fixed,
    Pattern,
    Quantize,
    ReLU,
    Requant,
    Rounding,
    format_graph,
    from_json,
    to_json,
    verify,
)
from pqflow.kernels.reference import run_reference
from pqflow.models import quantize_mlp
from pqflow.models.lower import LoweringError, lower, lower_mlp
from pqflow.models.quant import QuantizedMLP, QuantLayer


def _oracles():
    return [
        pytest.param(run_reference, id="reference"),
        pytest.param(pqflow.kernels.run, id="kernels.run"),
    ]


@pytest.fixture(scope="module")
def graph(q_mlp):
    return lower_mlp(q_mlp)


def test_graph_shape_and_formats(graph, q_mlp):
    verify(graph)
    ops = [type(n.op) for n in graph]
    assert ops == [Quantize] + [Dense, ReLU, Requant] * 3 + [Dense]
    assert graph.node("quant").op.to == q_mlp.in_fmt == Fixed(8, 7, False)
    for i, ly in enumerate(q_mlp.layers):
        fc = graph.node(f"fc{i}").op
        assert np.array_equal(fc.weight.data, ly.weight)
        assert fc.weight.dtype == ly.w_fmt and fc.bias.dtype.frac == ly.acc_frac
        assert fc.weight.sparsity.pattern is Pattern.DENSE
        if ly.out_fmt is not None:
            rq = graph.node(f"requant{i}").op
            assert rq.to == ly.out_fmt and rq.mult == (1,) and rq.shift == (ly.shift,)
            assert rq.rounding is Rounding.HALF_EVEN
    assert graph.outputs == ("fc3",)
    assert "Requant" in format_graph(graph)
    assert from_json(to_json(graph)) == graph


@pytest.mark.parametrize("oracle", _oracles())
def test_oracle_equals_the_quantized_model_on_the_test_split(oracle, graph, q_mlp, digits):
    x = digits.x_test.astype(np.float64)
    out = oracle(graph, x)
    codes = q_mlp.forward_int(x)
    assert np.array_equal(out, codes[-1])
    assert np.array_equal(np.argmax(out, axis=1), q_mlp.predict_int(x))
    assert np.array_equal(np.argmax(out, axis=1), q_mlp(digits.x_test).numpy().argmax(axis=1))


def test_every_stage_matches_the_integer_codes(graph, q_mlp, digits):
    names = ["quant"] + [f"requant{i}" for i in range(3)] + ["fc3"]
    got = run_reference(graph, digits.x_test, outputs=names)
    for name, code in zip(names, q_mlp.forward_int(digits.x_test), strict=True):
        assert np.array_equal(got[name], code), name


def test_dequantized_logits(q_mlp, digits):
    g = lower_mlp(q_mlp, dequantize=True)
    assert isinstance(g.nodes[-1].op, Dequantize)
    logits = run_reference(g, digits.x_test)
    assert np.array_equal(logits, q_mlp(digits.x_test).numpy())


def test_sparse_model_lowers_with_its_pattern(sparse_mlp, digits):
    q = quantize_mlp(sparse_mlp, digits.x_train)
    g = lower(q)
    for i in range(4):
        w = g.node(f"fc{i}").op.weight
        assert w.sparsity.pattern is Pattern.UNSTRUCTURED
    nnz = sum(g.node(f"fc{i}").op.weight.nnz for i in range(4))
    total = sum(ly.weight.size for ly in q.layers)
    assert nnz <= round(0.2 * total)
    assert np.array_equal(run_reference(g, digits.x_test), q.forward_int(digits.x_test)[-1])


@pytest.mark.parametrize("oracle", _oracles())
def test_left_shift_requant(oracle):
    # an activation frac above the accumulator's: the requant multiplies by 2**2
    rng = np.random.default_rng(0)
    hidden = QuantLayer(
        weight=rng.integers(-3, 4, size=(6, 5)),
        bias=rng.integers(-4, 5, size=6),
        w_fmt=Fixed(3, 0, True),
        in_fmt=Fixed(4, 0, False),
        bias_fmt=Fixed(16, 0, True),
        out_fmt=Fixed(8, 2, False),
        relu=True,
    )
    last = QuantLayer(
        weight=rng.integers(-8, 8, size=(3, 6)),
        bias=np.zeros(3, dtype=np.int64),
        w_fmt=Fixed(4, 1, True),
        in_fmt=Fixed(8, 2, False),
        bias_fmt=Fixed(16, 3, True),
        out_fmt=None,
        relu=False,
    )
    q = QuantizedMLP(Fixed(4, 0, False), (hidden, last))
    assert hidden.shift == -2
    g = lower_mlp(q)
    rq = g.node("requant0").op
    assert rq.mult == (4,) and rq.shift == (0,)
    x = rng.integers(-2, 18, size=(200, 5)).astype(np.float64)  # some saturate
    codes = q.forward_int(x)
    assert codes[1].max() == 255  # the left shift saturates somewhere
    assert np.array_equal(oracle(g, x), codes[-1])
    assert np.array_equal(q(x).numpy() * 2.0**q.out_frac, codes[-1])


def test_other_widths(float_mlp, digits):
    for wb, ab in [(3, 8), (8, 2), (4, 4)]:
        q = quantize_mlp(float_mlp, digits.x_train, wb, ab)
        g = lower_mlp(q)
        assert np.array_equal(run_reference(g, digits.x_test), q.forward_int(digits.x_test)[-1])


def test_lower_rejects_other_models(float_mlp):
    with pytest.raises(LoweringError, match="no lowering for Sequential"):
        lower(float_mlp)
