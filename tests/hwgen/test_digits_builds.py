"""Issue 5 "Done when": the real digits MLP (w8a8, 80% element-sparse) built three ways --
all unrolled, all folded, all sparse -- and the fully binary MLP, each bit-exact against
the oracle on the whole digits test split (360 images) on Verilator, with random input
stalls and output back-pressure.

The models are trained, pruned, quantized and lowered once per module with a fixed seed
(a few seconds). Each design is one Verilator build (about a minute uncached on one core;
cached by design hash afterwards, so reruns only simulate). ``benchmarks/bench_rtl.py``
records the latency, II and throughput of the same builds in BENCHMARKS.md.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from pqflow.hwgen import Design, Folded, generate_verilog
from pqflow.ir import BinaryDense, Bipolar, Dense

pytestmark = [
    pytest.mark.verilator,
    pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable"),
]

N_TEST = 360  # the whole digits test split
SPARSITY = 0.8

# Folding of the 64-64-32-32-10 MLP: every layer at (MH/PE)*(MW/SIMD) <= 16 cycles.
FOLDED = {"fc0": Folded(16, 16), "fc1": Folded(8, 16), "fc2": Folded(8, 8), "fc3": Folded(5, 8)}
# The binary MLP's matrix nodes are named by position: 0 (Dense, 8-bit in, ±1 weights),
# 2 and 4 (BinaryDense, XNOR-popcount), 6 (Dense, ±1 in, biased).
BINARY_FOLDED = {"0": Folded(16, 16), "2": Folded(8, 16), "4": Folded(8, 8), "6": Folded(5, 8)}
FOLDED_CYCLES = 16


def digits_graphs():
    """(split, w8a8 80%-sparse MLP graph, fully binary MLP graph), seed 0.

    Plain function so ``benchmarks/bench_rtl.py`` builds the very same graphs (and so
    hits the same cached simulator builds).
    """
    import torch

    from pqflow.models import (
        TrainConfig,
        load_digits_split,
        lower_mlp,
        mlp,
        prune_and_finetune,
        quantize_mlp,
        train,
    )
    from pqflow.models.lower import lower_with_info
    from pqflow.models.qat import qat
    from pqflow.models.qmodules import QuantConfig, quantize_model
    from pqflow.models.quantizers import QuantSpec

    data = load_digits_split()
    torch.manual_seed(0)
    model = train(mlp(), data.x_train, data.y_train, TrainConfig(epochs=15))
    float_model = copy.deepcopy(model)

    prune_and_finetune(model, data.x_train, data.y_train, SPARSITY, TrainConfig(epochs=8, lr=5e-3))
    sparse = lower_mlp(quantize_mlp(model, data.x_train), name="digits_sparse")

    torch.manual_seed(0)
    model = float_model
    cfg = QuantConfig(weight=QuantSpec.binary("pow2", axis=0), act=QuantSpec.binary())
    x, y = data.x_train[:500], data.y_train[:500]
    q = qat(quantize_model(model, cfg, x), x, y, TrainConfig(epochs=2, lr=2e-3, weight_decay=0.0))
    binary = lower_with_info(q, data.x_train[:4]).graph
    return data, sparse, binary


@pytest.fixture(scope="module")
def digits_models():
    return digits_graphs()


def _verify(design, graph, x, seed: int):
    from pqflow.sim.graph import verify_graph

    res = verify_graph(
        design, graph, x, sim="verilator", seed=seed, stall_prob=0.3, backpressure_prob=0.3
    )
    assert res.passed, res.summary()
    assert res.n_vectors == N_TEST
    assert res.n_mismatches == 0
    assert res.error is None
    assert res.outputs.shape[0] == N_TEST
    return res


def test_models_are_what_the_issue_asks(digits_models):
    data, sparse, binary = digits_models
    assert data.x_test.shape[0] == N_TEST
    dense = [n.op for n in sparse if isinstance(n.op, Dense)]
    assert [op.weight.shape for op in dense] == [(64, 64), (32, 64), (32, 32), (10, 32)]
    for op in dense:
        assert op.weight.dtype.width == 8
    nnz = sum(int(np.count_nonzero(op.weight.data)) for op in dense)
    total = sum(op.weight.data.size for op in dense)
    assert nnz / total == pytest.approx(1 - SPARSITY, abs=0.02)
    kinds = [type(n.op).__name__ for n in binary]
    assert kinds.count("BinaryDense") == 2
    assert isinstance(binary.node("1").type.dtype, Bipolar)
    assert isinstance(binary.node("2").op, BinaryDense)


def test_digits_all_unrolled(digits_models):
    data, g, _ = digits_models
    d = generate_verilog(Design.uniform(g, "unrolled", name="digits_unrolled"))
    assert d.cycles_per_vector == 1
    res = _verify(d, g, data.x_test, seed=1)
    assert res.ii_cycles == 1
    assert res.latency_cycles == d.latency


def test_digits_all_folded(digits_models):
    data, g, _ = digits_models
    d = generate_verilog(Design(g, FOLDED, name="digits_folded16"))
    assert d.cycles_per_vector == FOLDED_CYCLES
    res = _verify(d, g, data.x_test, seed=2)
    assert res.ii_cycles == d.cycles_per_vector
    assert res.latency_cycles == d.latency


def test_digits_all_sparse(digits_models):
    data, g, _ = digits_models
    d = generate_verilog(Design.uniform(g, "sparse", pe=4, name="digits_sparse4"))
    res = _verify(d, g, data.x_test, seed=3)
    # Data-dependent cycles; still far fewer than folded at the same PE (pe=4, simd=1).
    folded_pe4 = (64 // 4) * 64
    assert res.ii_cycles < 0.3 * folded_pe4


def test_binary_mlp_folded(digits_models):
    data, _, g = digits_models
    d = generate_verilog(Design(g, BINARY_FOLDED, name="digits_bnn_folded"))
    assert d.cycles_per_vector == FOLDED_CYCLES
    res = _verify(d, g, data.x_test, seed=4)
    assert res.ii_cycles == d.cycles_per_vector
    assert res.latency_cycles == d.latency
