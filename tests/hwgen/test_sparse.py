"""The sparse (EIE-style) Dense engine: bit-exact against the oracle with stalls, cycles
exactly as ``expected_cycles`` predicts, and the cycle targets on the real digits MLP."""

from __future__ import annotations

import numpy as np
import pytest
from hwgen_helpers import random_fixed, random_raws, run_stream

from pqflow.hwgen.amaranth.sparse import (
    SparseDense,
    compress,
    expected_cycles,
    folded_cycles,
    lockstep_cycles,
)
from pqflow.ir import Dense, Fixed, GraphBuilder, TensorType
from pqflow.ir import Weight as W

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def oracle_dense(op: Dense, in_type: Fixed, x: np.ndarray) -> np.ndarray:
    """The Numba oracle on a one-Dense graph whose input is already integer raws."""
    from pqflow.kernels import run

    b = GraphBuilder("one_dense")
    v = b.add(op, b.input("x", in_type, (x.shape[1],)), name="fc")
    return run(b.build(v), x)


def random_case(rng: np.random.Generator, n_vectors: int = 10):
    """A random Dense (1-8 bit types, density 0.1-1.0, one all-zero weight column) and
    inputs with many zeros, an all-zero vector and the range's ends."""
    in_type, wt = random_fixed(rng), random_fixed(rng)
    n_in, n_out = int(rng.integers(1, 10)), int(rng.integers(1, 8))
    w = random_raws(rng, wt, (n_out, n_in))
    w[rng.random(w.shape) >= rng.choice([0.1, 0.3, 0.5, 0.8, 1.0])] = 0
    w[:, rng.integers(n_in)] = 0
    bias = None
    if rng.integers(2):
        bt = Fixed(10, wt.frac + in_type.frac, True)
        bias = W(random_raws(rng, bt, n_out), bt)
    op = Dense(W(w, wt), bias)
    x = random_raws(rng, in_type, (n_vectors, n_in))
    x[rng.random(x.shape) < rng.choice([0.0, 0.5, 0.9])] = 0
    x[1] = 0
    x[2], x[3] = in_type.min_raw, in_type.max_raw
    return op, in_type, op.infer(TensorType(in_type, (n_in,))).dtype, x


def check_engine(dut: SparseDense, in_type: Fixed, x: np.ndarray, seed: int) -> None:
    """Bit-exact with random stalls and back-pressure; then, stall-free, every vector
    takes exactly ``expected_cycles`` (and its latency is one more)."""
    want = oracle_dense(dut.op, in_type, x)
    got, _, _ = run_stream(dut, x, seed=seed)
    assert np.array_equal(got, want), f"mismatch:\n{got}\n!=\n{want}"
    got, ins, outs = run_stream(dut, x, seed=seed, stall_prob=0, backpressure_prob=0)
    assert np.array_equal(got, want)
    cycles = dut.expected_cycles(x)
    assert outs[0] - ins[0] == cycles[0] + 1
    assert np.diff(ins).tolist() == cycles[:-1].tolist()  # the next vector enters as one ends
    assert np.diff(outs).tolist() == cycles[1:].tolist()


@pytest.mark.parametrize("seed", range(10))
def test_random_layers_bit_exact_and_cycle_exact(seed):
    rng = np.random.default_rng(seed)
    op, in_type, out_type, x = random_case(rng)
    pe = (1, 2, 4)[seed % 3]
    check_engine(SparseDense(op, in_type, out_type, pe), in_type, x, seed)


def test_static_only_mode_walks_every_nonzero_column():
    rng = np.random.default_rng(42)
    op, in_type, out_type, x = random_case(rng)
    dut = SparseDense(op, in_type, out_type, 2, skip_zero_activations=False)
    check_engine(dut, in_type, x, 42)
    assert len(set(dut.expected_cycles(x).tolist())) == 1  # independent of the input


def test_all_zero_weights_and_more_pes_than_rows():
    in_type = Fixed(3, 0, False)
    op = Dense(W(np.zeros((3, 4), dtype=np.int64), Fixed(2, 0, True)), W([1, -2, 3], Fixed(4)))
    out_type = op.infer(TensorType(in_type, (4,))).dtype
    dut = SparseDense(op, in_type, out_type, pe=4)
    assert dut.pe == 3 and dut.max_cycles == 1
    x = np.array([[0, 0, 0, 0], [7, 7, 7, 7], [1, 0, 2, 0]])
    check_engine(dut, in_type, x, 0)


def test_compress_interleaves_rows_and_stores_columns():
    w = np.array(
        [
            [1, 0, 2],
            [0, 0, 3],
            [4, 0, 0],
            [5, 0, 6],
            [0, 0, 7],
        ]
    )
    sw = compress(w, 2)  # PE 0: rows 0, 2, 4; PE 1: rows 1, 3
    assert sw.values == ((1, 4, 2, 7), (5, 3, 6))
    assert sw.rows == ((0, 1, 0, 2), (1, 0, 1))
    assert sw.start == ((0, 2, 2), (0, 1, 1))
    assert sw.counts == ((2, 0, 2), (1, 0, 2))
    assert sw.nnz == 7 and sw.local_rows == 3
    assert sw.imbalance() == pytest.approx(4 / 3.5)
    assert sw.column_imbalance() == pytest.approx((2 + 0 + 2) * 2 / 7)
    op = Dense(W(w, Fixed(4, 0, True)))
    # column 0 and 2 active: PE 0 does 2 + 2, PE 1 does 1 + 2 -> S = 4
    assert expected_cycles(op, [1, 1, 1], 2) == 1 + 4 + 1
    assert expected_cycles(op, [0, 5, 0], 2) == 1  # only an all-zero weight column is active
    assert expected_cycles(op, [0, 0, 0], 2, skip_zero_activations=False) == 1 + 4 + 1
    assert expected_cycles(op, [3, 0, 0], 1) == 1 + 3 + 1
    assert lockstep_cycles(op, [1, 1, 1], 2) == 1 + 4 + 1
    assert folded_cycles(op, 2) == 3 * 3
    assert expected_cycles(op, np.array([[1, 1, 1], [0, 0, 0]]), 2).tolist() == [6, 1]


def test_constructor_errors():
    in_type = Fixed(8, 0, False)
    op = Dense(W(np.ones((2, 3)), Fixed(2, 0, True)))
    out_type = op.infer(TensorType(in_type, (3,))).dtype
    with pytest.raises(TypeError, match="SparseDense: op must be a pqflow.ir.Dense, not 3"):
        SparseDense(3, in_type, out_type)
    with pytest.raises(TypeError, match="SparseDense: in_type must be a Fixed element type"):
        SparseDense(op, "u8", out_type)
    with pytest.raises(ValueError, match="SparseDense: pe must be a positive integer, not 0"):
        SparseDense(op, in_type, out_type, 0)
    with pytest.raises(ValueError, match="out_type must be the accumulator type"):
        SparseDense(op, in_type, Fixed(8, 0, True))
    with pytest.raises(ValueError, match="skip_zero_activations must be True or False"):
        SparseDense(op, in_type, out_type, skip_zero_activations=1)
    with pytest.raises(ValueError, match="expected_cycles: input has 2 elements, not 3"):
        expected_cycles(op, [1, 2], 1)
