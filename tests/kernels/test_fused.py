"""Fused chains (pqflow.kernels.fused) equal the numpy reference bit for bit, and the float
lanes are only chosen where the bound proves them exact."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_graphs import digits_mlp
from strategies import fixed_types, graph_inputs, overflows, roundings, seeds, weights

from pqflow.ir import Dense, Dequantize, Fixed, Float, GraphBuilder, Quantize, ReLU, Requant, Weight
from pqflow.kernels import run, run_reference
from pqflow.kernels.executor import _fused
from pqflow.kernels.fused import BLOCK, find_chains, plan_chain


def _same(got, want):
    if isinstance(want, dict):
        return want.keys() == got.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    return got.dtype == want.dtype and np.array_equal(got, want)


@st.composite
def fusable_chains(draw):
    """Quantize (or Fixed raws) -> [Dense -> ReLU? -> Requant]* -> Dense? -> Dequantize?,
    with every rounding and overflow, per-channel mults and shifts, wide types that push
    the bound past 2**24 (float64 lanes) or 2**53 (no fusion)."""
    rng = np.random.default_rng(draw(seeds))
    b = GraphBuilder("fchain")
    c = draw(st.integers(1, 9))
    if draw(st.booleans()):
        to = Fixed(draw(st.integers(1, 12)), draw(st.integers(-2, 6)), draw(st.booleans()))
        h = b.add(Quantize(to, draw(roundings), draw(overflows)), b.input("x", Float(), (c,)))
    else:
        h = b.input("x", draw(fixed_types(hi=16, wide=30)), (c,))
    for _ in range(draw(st.integers(1, 3))):
        xt = b.type_of(h).dtype
        wt = draw(fixed_types(hi=10, wide=24))
        n_out = draw(st.integers(1, 9))
        w = draw(weights(wt, (n_out, b.type_of(h).shape[0]), rng=rng))
        data = w.data * (rng.random(w.data.shape) < draw(st.sampled_from([1.0, 0.5, 0.2])))
        w = Weight(data, wt)
        bias = None
        if draw(st.booleans()):
            bias = draw(weights(Fixed(draw(st.integers(1, 20)), wt.frac + xt.frac, True), (n_out,)))
        h = b.add(Dense(w, bias), h)
        if draw(st.booleans()):
            h = b.add(ReLU(), h)
        acc = b.type_of(h).dtype
        if acc.width > 60 or not draw(st.integers(0, 4)):
            break
        per = draw(st.booleans())
        mbits = draw(st.integers(0, min(12, 61 - acc.width)))
        mults = st.integers(-(2**mbits) + 1, 2**mbits - 1) if mbits else st.just(1)
        mult = tuple(draw(mults) for _ in range(n_out if per else 1))
        shift = tuple(
            draw(st.integers(0, acc.width + 4)) for _ in range(n_out if draw(st.booleans()) else 1)
        )
        to = Fixed(draw(st.integers(1, 14)), acc.frac, draw(st.booleans()))
        h = b.add(Requant(to, mult, shift, draw(roundings), draw(overflows)), h)
        if draw(st.booleans()):
            h = b.add(ReLU(), h)
    if draw(st.booleans()):
        h = b.add(Dequantize(), h)
    return b.build(h)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g=fusable_chains(), n=st.sampled_from([1, 5, BLOCK - 1, BLOCK + 3]), seed=seeds)
def test_fused_chains_match_reference(g, n, seed):
    x = graph_inputs(g, n, seed)
    want = run_reference(g, x)
    for gemm in ("auto", "f32", "f64"):
        try:
            got = run(g, x, gemm=gemm)
        except ValueError as e:  # a forced path that is not exact raises, fused or not
            assert "is not exact here" in str(e)
            with pytest.raises(ValueError, match="is not exact here"):
                run(g, x, gemm=gemm, fuse=False)
            continue
        assert _same(got, want), gemm
    assert _same(run(g, x, chunk=3), want)
    x32 = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in x.items()}
    want32 = run_reference(g, {k: v.astype(np.float64) for k, v in x32.items()})
    assert _same(run(g, x32), want32)
    assert _same(run(g, x32, fuse=False), want32)
    # every inner value asked for: no fusion across it, same values
    names = [node.name for node in g.nodes]
    assert _same(run(g, x, outputs=names), run_reference(g, x, outputs=names))


def test_digits_mlp_fuses_into_one_chain():
    for density in (1.0, 0.2):
        g = digits_mlp(seed=3, density=density)
        plans = _fused(g, g.outputs, "auto")
        assert len(plans) == 1
        (p,) = plans.values()
        # Requant mults up to 255 on 19-bit sums reach past 2**24: float64 lanes
        assert p.names == tuple(node.name for node in g.nodes) and p.lane is np.float64
        x = np.random.default_rng(0).random((2 * BLOCK + 7, 64)) * 16
        assert np.array_equal(run(g, x), run_reference(g, x))
        assert np.array_equal(run(g, x, fuse=False), run_reference(g, x))
    assert _fused(g, g.outputs, "int") == {}
    assert {p.lane for p in _fused(g, g.outputs, "f64").values()} == {np.float64}
    # an inner value asked for splits the chain there
    assert [c[-1].name for c in find_chains(g, {"fc1"})] == ["fc1", "fc3"]


def _dense_graph(weight: list[int], x_type: Fixed, bias: int | None):
    wt = Fixed(16, 0, True)
    b = GraphBuilder("edge")
    x = b.input("x", x_type, (len(weight),))
    bw = None if bias is None else Weight([bias], Fixed(26, wt.frac + x_type.frac, True))
    h = b.add(Dense(Weight([weight], wt), bw), x)
    h = b.add(Requant(Fixed(30, 0, True), (1,), (0,)), h)  # identity, keeps a 2-node chain
    return b.build(h)


def _lane(g, gemm="auto"):
    plans = _fused(g, g.outputs, gemm)
    return next(iter(plans.values())).lane if plans else None


@pytest.mark.parametrize("sign", [1, -1])
def test_float32_lane_stops_exactly_at_2_pow_24(sign):
    """max|b| + sum |W| * max|x| == 2**24 - 1 fits float32; == 2**24 does not (float64).
    The extreme inputs reach the bound, and every path gives the reference's ints."""
    xt = Fixed(9, 0, True)  # raws in [-256, 255]: max|x| = 256
    ws = [32767, 32767, 1]  # sum |W| * 256 == 2**24 - 256
    cases = [
        (ws, sign * 255, np.float32),  # 2**24 - 1
        (ws, sign * 256, np.float64),  # 2**24
        ([32767, 32767, sign * 2], None, np.float64),  # 2**24, no bias
        (ws, None, np.float32),
    ]
    x = np.array([[-256, -256, -256], [255, 255, 255], [-256, -256, 255], [-256, 7, -1]])
    for w, bias, lane in cases:
        g = _dense_graph(w, xt, bias)
        assert _lane(g) is lane, (w, bias)
        want = run_reference(g, x)
        if lane is np.float64 and bias is None:
            with pytest.raises(ValueError, match="not exact"):
                run(g, x, gemm="f32")
        elif lane is np.float64:  # the per-node f32 GEMM adds the bias in int64: not fused
            assert _lane(g, "f32") is None
            assert np.array_equal(run(g, x, gemm="f32"), want)
        assert abs(want).max() >= 2**24 - 512  # near the bound (x = +256 does not exist)
        for gemm in ("auto", "f64"):
            assert np.array_equal(run(g, x, gemm=gemm), want)
        assert np.array_equal(run(g, x, fuse=False), want)


def test_requant_product_bound_picks_the_lane():
    """The Requant product x * mult counts too: a product reaching 2**24 needs float64,
    one reaching 2**53 is not fused at all; all stay exact."""
    for mult, lane in ((2**16 - 1, np.float32), (2**16, np.float64), (2**45, None)):
        b = GraphBuilder("rq")
        x = b.input("x", Fixed(8, 0, True), (2,))
        h = b.add(Dense(Weight([[1, 1], [-1, 1]], Fixed(2, 0, True))), x)  # |h| <= 256
        h = b.add(Requant(Fixed(62, 0, True), (mult,), (3,), "half_up"), h)
        g = b.build(h)
        assert _lane(g) is lane, mult
        xs = np.array([[-128, -128], [127, 127], [127, -128], [-1, 3], [5, -2]])
        assert np.array_equal(run(g, xs), run_reference(g, xs))


def test_wrap_needs_room_for_two_pow_width():
    """Wrap computes q - floor(q / 2**w) * 2**w: float32 only while |q| + 1 + 2**w < 2**24."""
    for width, lane in ((23, np.float32), (24, np.float64)):
        b = GraphBuilder("wrap")
        x = b.input("x", Fixed(4, 0, True), (3,))
        h = b.add(Dense(Weight([[3, -2, 1], [-7, 7, 7]], Fixed(4, 0, True))), x)
        h = b.add(Requant(Fixed(width, 0, True), (1,), (0,), "floor", "wrap"), h)
        g = b.build(h)
        assert _lane(g) is lane
        xs = np.stack(np.meshgrid(*[np.arange(-8, 8)] * 3), -1).reshape(-1, 3)
        assert np.array_equal(run(g, xs), run_reference(g, xs))


def test_plan_chain_needs_a_dense():
    b = GraphBuilder("nodense")
    x = b.input("x", Fixed(8, 0, True), (3,))
    g = b.build(b.add(ReLU(), b.add(Requant(Fixed(4, 0, True), (3,), (2,)), x)))
    (chain,) = find_chains(g, set())
    assert plan_chain(chain, g.types(), "auto") is None
