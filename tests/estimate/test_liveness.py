"""What synthesis folds and deletes (``pqflow.estimate.liveness``), and that the estimate
follows it: a pruned layer's constant rows, unread columns and provably-zero ReLUs."""

from __future__ import annotations

import numpy as np
import pytest

from pqflow.estimate import estimate
from pqflow.estimate.device import device
from pqflow.estimate.liveness import analyze, effective_dense
from pqflow.hwgen.design import Design
from pqflow.ir import Dense, Dequantize, Fixed, Float, GraphBuilder, Quantize, ReLU, Requant, Weight

W8 = Fixed(8, 7, True)


def _pruned_mlp() -> Design:
    """x (8 unsigned) -> fc0 (6 x 8) -> ReLU -> Requant -> fc1 (3 x 6) -> out, where
    fc0 row 0 is all zero (a constant), row 1 is all negative with a negative bias (its
    ReLU is 0), row 2 is read by no fc1 row (fc1 column 2 is zero) and row 3 feeds only
    fc1 row 2, which is all negative too."""
    rng = np.random.default_rng(7)
    w0 = rng.integers(3, 100, (6, 8)) * rng.choice([-1, 1], (6, 8))
    w0[0] = 0
    w0[1] = -np.abs(w0[1])
    b0 = np.array([200, -30, 5, 9, -3, 11])
    w1 = rng.integers(3, 100, (3, 6)) * rng.choice([-1, 1], (3, 6))
    w1[:, 2] = 0
    w1[:2, 3] = 0
    w1[2] = -np.abs(w1[2])
    b = GraphBuilder("pruned")
    xt = Fixed(8, 7, False)
    v = b.add(Quantize(xt), b.input("x", Float(), (8,)))
    acc = Fixed(16, 14, True)
    v = b.add(Dense(Weight(w0, W8), Weight(b0, acc)), v, name="fc0")
    v = b.add(ReLU(), v, name="relu0")
    v = b.add(Requant(Fixed(8, 7, False), (1,), (7,)), v, name="rq0")
    v = b.add(Dense(Weight(w1, W8), Weight(np.array([-2, 3, -5]), acc)), v, name="fc1")
    v = b.add(ReLU(), v, name="relu1")
    g = b.build(b.add(Dequantize(), v))
    return Design.uniform(g, "unrolled")


def test_constant_dead_and_provably_zero_elements():
    design = _pruned_mlp()
    facts = analyze(design, device("xc7z020"))
    assert facts["fc0"].const == {0: 200}  # an empty row is its bias
    assert facts["rq0"].const == {0: 2}  # round(200 / 2**7)
    assert 1 in facts["relu0"].abc_const  # -S with S >= 0: its ReLU is 0
    assert 2 in facts["relu1"].abc_const  # fc1 row 2 is all negative too
    live = facts["fc0"].live
    assert live is not None
    assert 0 not in live and 1 not in live  # constant / provably zero after ReLU
    assert 2 not in live  # no fc1 row reads it
    assert 3 not in live  # read only by fc1 row 2, whose ReLU is 0
    assert {4, 5} <= live
    w, b = effective_dense(design.graph.node("fc1").op, facts["rq0"], facts["fc1"])
    assert not w[:, 0].any() and b[0] != -2  # rq0[0] is a constant, folded into the bias
    assert not w[2].any()  # fc1 row 2 is deleted with its ReLU


def _naive_dsp(design: Design) -> int:
    """One DSP per distinct (input, odd factor) product of every row: no liveness."""
    n = 0
    for node in design.graph.nodes:
        if isinstance(node.op, Dense):
            keys = set()
            for row in node.op.weight.data:
                for i, w in enumerate(int(v) for v in row):
                    if w:
                        m = abs(w) >> ((abs(w) & -abs(w)).bit_length() - 1)
                        if m > 1:
                            keys.add((i, m))
            n += len(keys)
    return n


@pytest.mark.yosys
def test_dsp_count_follows_what_yosys_deletes():
    """The estimate's DSP count equals yosys's on the pruned MLP, where costing every row
    would not (the test would catch a liveness analysis that did nothing)."""
    from pqflow.estimate.yosys import synthesize
    from pqflow.hwgen.amaranth import generate_verilog

    design = _pruned_mlp()
    v = generate_verilog(design)
    dev = device("xc7z020")
    r = synthesize(v.text, v.top, dev.family, dsp=True, arch=dev.yosys_arch)
    e = estimate(design, dev)
    assert e.dsp == r["dsp"]
    assert _naive_dsp(design) != r["dsp"]
