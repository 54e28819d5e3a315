"""Every Dense style and every Requant rounding x overflow mode in cocotb, against the oracle.

Many small layers go through one build: a random chain whose Dense nodes cycle through
the three styles (unrolled, folded, sparse) and whose six Requant nodes take the six
rounding x overflow combinations, with random 1- to 8-bit signed and unsigned types and
per-channel multipliers, then a ReLU and a MultiThreshold. Shifts are chosen so that
ties and overflows both happen. The RTL must equal the Numba oracle on every output
word, with random input stalls and output back-pressure.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pqflow.hwgen import Design, Folded, Sparse, Unrolled, generate_verilog
from pqflow.ir import (
    Dense,
    Fixed,
    GraphBuilder,
    MultiThreshold,
    Overflow,
    ReLU,
    Requant,
    Rounding,
    Weight,
)
from pqflow.kernels import run
from pqflow.sim.graph import hardware_vectors, verify_graph

MODES = list(itertools.product(Rounding, Overflow))  # 6 combinations
STYLES = [Unrolled(levels_per_stage=1), Folded(pe=2, simd=2), Sparse(pe=2)]


def _random_type(rng, lo: int = 1) -> Fixed:
    return Fixed(int(rng.integers(lo, 9)), int(rng.integers(-2, 5)), bool(rng.integers(0, 2)))


def _inputs(dtype: Fixed, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(dtype.min_raw, dtype.max_raw + 1, (n, 6))
    x[: n // 8] = 0  # all-zero vectors exercise the sparse engine's skipping
    return x


def mode_chain(seed: int, n: int = 300):
    """(Design, inputs): six Dense -> Requant layers, one per mode, then ReLU, thresholds.

    Each Requant's shift is chosen from the values the inputs actually produce, so that
    about one output in ten overflows and low bits are dropped (ties occur).
    """
    rng = np.random.default_rng(seed)
    b = GraphBuilder(f"modes{seed}")
    v = b.input("x", _random_type(rng, lo=2), (6,))
    x = _inputs(b.type_of(v).dtype, n, seed)
    impls = {}
    for k, (rounding, overflow) in enumerate(MODES):
        n_in, n_out = b.type_of(v).shape[0], (4, 6)[k % 2]
        wt = _random_type(rng)
        w = rng.integers(wt.min_raw, wt.max_raw + 1, (n_out, n_in))
        w[rng.random(w.shape) < 0.4] = 0
        w[:, 0] = wt.max_raw or wt.min_raw  # every output sees some input
        name = f"fc{k}"
        v = b.add(Dense(Weight(w, wt)), v, name=name)
        impls[name] = STYLES[k % 3]
        to = _random_type(rng, lo=3)
        mult = rng.integers(1, 16, n_out) * rng.choice([-1, 1], n_out)
        acc = run(b.build(v), x) * mult
        big = int(np.quantile(np.abs(acc), 0.9)) + 1
        shift = max(1, big.bit_length() - to.width + (1 if to.signed else 0))
        rq = Requant(to, tuple(map(int, mult)), (shift,), rounding, overflow)
        v = b.add(rq, v)
    v = b.add(ReLU(), v)
    t = b.type_of(v).dtype
    th = np.sort(rng.integers(t.min_raw, t.max_raw + 2, (b.type_of(v).shape[0], 3)), axis=1)
    v = b.add(MultiThreshold(Weight(th, Fixed(t.width + 2, t.frac, True)), Fixed(2, 0, False)), v)
    g = b.build(v)
    return Design(g, impls, name=f"modes{seed}"), x


@pytest.mark.parametrize("seed", [0, 1])
def test_the_chain_covers_every_mode_and_style(seed):
    d, x = mode_chain(seed)
    ops = [n.op for n in d.graph.nodes]
    assert {(o.rounding, o.overflow) for o in ops if isinstance(o, Requant)} == set(MODES)
    assert {type(i) for _, i in d.impls} == {Unrolled, Folded, Sparse}
    # every Requant sees varied data and some of it overflows; the output is not constant
    names = [n.name for n in d.graph.nodes if isinstance(n.op, Requant)]
    vals = run(d.graph, x, outputs=names)
    for n in d.graph.nodes:
        if n.name in names:
            assert len(np.unique(vals[n.name])) > 3, n.name
            t = n.type.dtype
            assert np.any((vals[n.name] == t.min_raw) | (vals[n.name] == t.max_raw)), n.name
    assert len(np.unique(run(d.graph, x), axis=0)) > 3


@pytest.mark.verilator
@pytest.mark.parametrize("seed", [0, 1])
def test_every_mode_and_style_on_verilator(seed):
    d, x = mode_chain(seed)
    _, expected = hardware_vectors(d.graph, x)
    res = verify_graph(generate_verilog(d), d.graph, x, sim="verilator", seed=seed)
    assert res.passed and res.n_mismatches == 0 and res.n_vectors == 300, res.summary()
    assert np.array_equal(res.outputs, expected)


@pytest.mark.icarus
def test_every_mode_and_style_on_icarus_smoke():
    d, x = mode_chain(0, n=24)
    res = verify_graph(generate_verilog(d), d.graph, x, sim="icarus", seed=5)
    assert res.passed and res.n_vectors == 24, res.summary()
    assert np.array_equal(res.outputs, run(d.graph, x).reshape(24, -1))


@pytest.mark.parametrize("style", ["unrolled", "folded", "sparse"])
def test_one_line_per_design(rtl_check, style, sim):
    d, x = mode_chain(2, n=24 if sim == "icarus" else 100)
    rtl_check(Design.uniform(d.graph, style, **({} if style == "unrolled" else {"pe": 2})), x)


def binary_chain(seed: int, n: int):
    """Bipolar in -> BinaryDense -> MultiThreshold to Bipolar -> BinaryDense -> thresholds."""
    from pqflow.ir import BinaryDense, Bipolar

    rng = np.random.default_rng(seed)
    b = GraphBuilder(f"bnn{seed}")
    v = b.input("x", Bipolar(), (16,))
    v = b.add(BinaryDense(Weight(rng.integers(0, 2, (8, 16)), Bipolar())), v)
    th = rng.integers(-4, 5, (8, 1))
    v = b.add(MultiThreshold(Weight(th, Fixed(6, 0, True)), Bipolar()), v)
    v = b.add(BinaryDense(Weight(rng.integers(0, 2, (4, 8)), Bipolar())), v)
    th = np.sort(rng.integers(-8, 9, (4, 3)), axis=1)
    v = b.add(MultiThreshold(Weight(th, Fixed(6, 0, True)), Fixed(2, 0, False)), v)
    return b.build(v), rng.integers(0, 2, (n, 16))


def test_unrolled_binary_dense_is_the_exact_dense_twin():
    from pqflow.hwgen.amaranth.top import binary_as_dense
    from pqflow.ir import BinaryDense, Bipolar

    g, x = binary_chain(3, 200)
    bd = next(n for n in g.nodes if isinstance(n.op, BinaryDense))
    twin = binary_as_dense(bd.op)
    b = GraphBuilder("twin")
    v = b.add(twin, b.input("x", Fixed(1, 0, False), (16,)))
    assert b.type_of(v) == bd.type  # same accumulator type
    b2 = GraphBuilder("bd")
    v2 = b2.add(bd.op, b2.input("x", Bipolar(), (16,)))
    assert np.array_equal(run(b.build(v), x), run(b2.build(v2), x))


@pytest.mark.parametrize("style", ["unrolled", "folded"])
def test_binary_chain_one_line_per_design(rtl_check, style, sim):
    g, x = binary_chain(4, 24 if sim == "icarus" else 200)
    rtl_check(Design.uniform(g, style, **({} if style == "unrolled" else {"pe": 2, "simd": 4})), x)
