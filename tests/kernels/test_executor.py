"""The executor: graphs (random and the digits MLP) run bit-exactly; inputs are checked."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_graphs import digits_mlp
from strategies import graph_inputs, graphs

from pqflow.ir import Bipolar, Dense, Fixed, Flatten, GraphBuilder, IRError, ReLU, Requant, Weight
from pqflow.kernels import run, run_reference
from pqflow.kernels.numba_ops import matmul_plan


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g=graphs(), n=st.integers(1, 9), seed=st.integers(0, 2**32 - 1))
def test_random_graphs_match_reference(g, n, seed):
    x = graph_inputs(g, n, seed)
    want = run_reference(g, x)
    got = run(g, x)
    if isinstance(want, dict):
        assert want.keys() == got.keys()
        for k in want:
            assert np.array_equal(got[k], want[k])
    else:
        assert got.dtype == want.dtype
        assert np.array_equal(got, want)
    # chunking changes nothing
    again = run(g, x, chunk=2)
    assert all(np.array_equal(a, b) for a, b in zip(_vals(again), _vals(got), strict=True))


def _vals(r):
    return list(r.values()) if isinstance(r, dict) else [r]


@pytest.mark.parametrize("density", [1.0, 0.2])
def test_digits_mlp_matches_reference_on_every_path(density):
    g = digits_mlp(seed=3, density=density)
    x = np.random.default_rng(0).random((3000, 64)) * 16
    want = run_reference(g, x)
    assert {matmul_plan(n.op, g.types()[n.inputs[0]]).path for n in g if "fc" in n.name} == {"f32"}
    for gemm in ("auto", "f32", "f64", "int"):
        assert np.array_equal(run(g, x, gemm=gemm), want), gemm
    inner = run(g, x, outputs=["q", "fc0", "relu2"])
    ref = run_reference(g, x, outputs=["q", "fc0", "relu2"])
    assert all(np.array_equal(inner[k], ref[k]) for k in ref)
    assert np.array_equal(run(g, x, outputs="fc0"), ref["fc0"])


# --- input checks ---------------------------------------------------------------------------


def _int_graph(dtype=None):
    b = GraphBuilder("g")
    x = b.input("x", dtype or Fixed(8, 0, True), (4,))
    return b.build(b.add(ReLU(), x))


def test_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"input 'x': expected shape \(N, 4\), got \(2, 5\)"):
        run(_int_graph(), np.zeros((2, 5), dtype=np.int64))
    with pytest.raises(ValueError, match=r"expected shape \(N, 4\), got \(4,\)"):
        run(_int_graph(), np.zeros(4, dtype=np.int64))


def test_rejects_out_of_range_and_non_integer_raws():
    with pytest.raises(ValueError, match=r"raws \[-3, 200\] do not fit s8f0 \(\[-128, 127\]\)"):
        run(_int_graph(), np.array([[200, 0, 0, -3]]))
    with pytest.raises(ValueError, match="expected integer raws for s8f0"):
        run(_int_graph(), np.zeros((1, 4)))
    b = GraphBuilder("g")
    g = b.build(b.add(Flatten(), b.input("x", Bipolar(), (4,))))
    with pytest.raises(ValueError, match=r"raws \[0, 2\] do not fit bipolar"):
        run(g, np.array([[0, 1, 2, 0]]))


def test_rejects_bad_dicts_options_and_outputs():
    g = _int_graph()
    with pytest.raises(ValueError, match="missing input"):
        run(g, {"y": np.zeros((1, 4), dtype=np.int64)})
    with pytest.raises(ValueError, match="gemm must be one of"):
        run(g, np.zeros((1, 4), dtype=np.int64), gemm="f16")
    with pytest.raises(ValueError, match="has no value 'nope'"):
        run(g, np.zeros((1, 4), dtype=np.int64), outputs="nope")
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        run(g, np.zeros((1, 4), dtype=np.int64), chunk=0)


def test_float_input_and_empty_batch():
    g = digits_mlp()
    assert run(g, np.zeros((0, 64))).shape == (0, 10)
    with pytest.raises(ValueError, match="expected real numbers"):
        run(g, np.array([["a"] * 64]))


def test_forcing_an_inexact_path_raises():
    b = GraphBuilder("wide")
    x = b.input("x", Fixed(30, 0, True), (2,))
    h = b.add(Dense(Weight([[2**20, 1]], Fixed(22, 0, True))), x)
    g = b.build(h)
    with pytest.raises(ValueError, match="gemm='f32' is not exact here"):
        run(g, np.zeros((1, 2), dtype=np.int64), gemm="f32")
    xs = np.array([[2**29 - 1, -(2**29)]], dtype=np.int64)
    assert np.array_equal(run(g, xs), run_reference(g, xs))
    assert run(g, xs).tolist() == [[(2**29 - 1) * 2**20 - 2**29]]


def test_requant_graph_on_raws_and_a_non_graph():
    with pytest.raises(IRError):
        run("not a graph", np.zeros((1, 4)))  # type: ignore[arg-type]
    b = GraphBuilder("rq")
    x = b.input("x", Fixed(12, 4, True), (3,))
    g = b.build(b.add(Requant(Fixed(4, 0, False), (3,), (5,), "half_up", "wrap"), x))
    xs = np.arange(-2048, 2048, dtype=np.int64)[: 3 * 1365].reshape(-1, 3)
    assert np.array_equal(run(g, xs), run_reference(g, xs))
