"""Issue 6 part C: dynamic channel gating in hardware (``GatedConvUnit``), bit-exact in cocotb.

- A small gated block built with the IR builder (per-channel requant after the conv, both
  ``scale`` settings, 1 and 2 PE lanes): the fused unit alone against the oracle with
  random input stalls and output back-pressure, on Verilator and Icarus.
- Cycles fall with the kept channels: the block keeping 3 or 6 of 6 channels, measured
  in simulation, equals the unit's analytic ``cycles_per_vector``.
- The digits ``gated_cnn`` (8 bits, power-of-two scales, half the channels kept per
  block, ``scale=True``) from the real pipeline, generated whole (gated blocks fused,
  max pools, Flatten, Dense head) on ``N_CI`` test images on Verilator;
  ``benchmarks/bench_rtl.py --gated`` runs it on >= 200 images (BENCHMARKS.md).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from pqflow.hwgen import Design, Folded, Unrolled, generate_verilog
from pqflow.hwgen.amaranth.gated import GatedConvUnit, find_gated_blocks
from pqflow.ir import (
    AvgPool2d,
    ChannelGate,
    Conv2d,
    Dense,
    Fixed,
    Flatten,
    Float,
    GraphBuilder,
    MultiThreshold,
    Quantize,
    ReLU,
    Requant,
    Weight,
)
from pqflow.kernels import run
from pqflow.sim.graph import verify_graph

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

N_CI = 8
GATED_PE = {"1.conv": 2, "3.conv": 2}  # PE lanes of the two gated blocks


def gated_block(k: int = 3, scale: bool = True, seed: int = 0, thresholds: bool = False):
    """A (4, 4, 2) -> (4, 4, 6) gated block with random weights: conv 3x3 (pad 1) ->
    per-channel Requant -> ReLU (or a per-channel MultiThreshold), gated by the top-k of
    avg -> Requant -> Dense -> ReLU -> Requant, then a Requant of the gated product."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder(f"gated_k{k}")
    q = b.add(Quantize(Fixed(6, 4, False)), b.input("x", Float(), (4, 4, 2)), name="q")
    w = Weight(rng.integers(-7, 8, size=(6, 3, 3, 2)), Fixed(4, 3, True))
    bias = Weight(rng.integers(-60, 60, size=6), Fixed(8, 7, True))
    h = b.add(Conv2d(w, bias, padding=(1, 1, 1, 1)), q, name="conv")
    if thresholds:  # per-channel MultiThreshold to 2 bits
        t = np.sort(rng.integers(-400, 1200, size=(6, 3)), axis=1)
        h = b.add(MultiThreshold(Weight(t, Fixed(12, 7, True)), Fixed(2, 0, False)), h, name="mt")
    else:
        mult = tuple(int(v) for v in rng.integers(1, 4, size=6))
        h = b.add(Requant(Fixed(7, 3, True), mult, (5,)), h, name="conv_rq")
        h = b.add(ReLU(), h, name="relu")
    p = b.add(Flatten(), b.add(AvgPool2d((4, 4)), q, name="pool"), name="flat")
    p = b.add(Requant(Fixed(6, 4, False), (1,), (4,)), p, name="pool_rq")
    dw = Weight(rng.integers(-7, 8, size=(6, 2)), Fixed(4, 2, True))
    s = b.add(Dense(dw, Weight(rng.integers(-20, 20, size=6), Fixed(7, 6, True))), p, name="fc")
    s = b.add(Requant(Fixed(3, 3, False), (1,), (3,)), b.add(ReLU(), s, name="s_relu"), name="s")
    y = b.add(ChannelGate(k, scale), h, s, name="gate")
    if scale:
        y = b.add(Requant(Fixed(6, 5, False), (1,), (1,)), y, name="out")
    return b.build(y)


def _design(g, pe: int, name: str, simd: int = 18) -> Design:
    """``pe`` lanes of ``simd`` window taps per cycle (18: the whole 3x3x2 window)."""
    return Design(g, {"conv": Folded(pe, simd), "fc": Unrolled()}, name=name)


def _images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 4, 4, 2)) * 4


def test_gated_blocks_are_found_and_fused():
    g = gated_block()
    (blk,) = find_gated_blocks(g)
    assert blk.x == "q" and blk.out == "out" and blk.gate.name == "gate"
    assert blk.nodes == {n.name for n in g.nodes} - {"q"}
    unit = GatedConvUnit(blk, pe=2)
    # 16 input beats; compute: 2 + 6 channels ranked + 16 pixels x ceil(3 / 2) groups
    assert (unit.in_beats, unit.out_beats, unit.cycles_per_vector) == (16, 16, 40)
    assert unit.schedule.need == (16,) * 16 and unit.latency == 3 + 6 + 2
    folded = GatedConvUnit(blk, pe=2, simd=6)  # 3 folds of 6 taps per kept channel
    assert (folded.cycles_per_vector, folded.latency) == (2 + 6 + 16 * 2 * 3, 3 + 6 + 2 * 3)
    with pytest.raises(ValueError, match="simd must be a positive integer dividing the 18"):
        GatedConvUnit(blk, simd=4)
    # a reader of an inner value outside the block: no fusion
    for inner in ("fc", "relu", "pool_rq", "conv"):
        b = GraphBuilder("leaky")
        b.input("x", Float(), (4, 4, 2))
        for n in g.nodes:
            b.add(n.op, *n.inputs, name=n.name)
        b.add(ReLU(), inner, name="spy")
        assert find_gated_blocks(b.build("out", "spy")) == [], inner


@pytest.mark.verilator
def test_gated_blocks_are_bit_exact_with_stalls_and_cycles_fall_with_fewer_kept_channels():
    """Two builds on 2 lanes of 6 window taps (3 folds per kept channel): keep 3 of 6
    channels with the saliency scale, keep all 6 without (and a MultiThreshold
    activation). Stalls and back-pressure in the stream phase; the stall-free timing
    phase measures cycles per image (the whole window in one cycle: Icarus, digits)."""
    x = _images(40)
    ii = {}
    for k, scale in ((3, True), (6, False)):
        g = gated_block(k=k, scale=scale, thresholds=not scale)
        vd = generate_verilog(_design(g, 2, f"gated_k{k}_s{int(scale)}_f3", simd=6))
        r = verify_graph(vd, g, x, seed=k, stall_prob=0.4, backpressure_prob=0.4)
        assert r.passed, r.summary()
        out = r.outputs.reshape(40, 4, 4, 6)
        assert np.array_equal(out, run(g, x))
        ran = (out != 0).any(axis=(1, 2)).sum(axis=1)
        assert ran.max() <= k and ran.max() >= min(k, 2)  # gated-off channels are exactly 0
        ii[k] = r.ii_cycles
        assert r.ii_cycles == vd.cycles_per_vector == 2 + 6 + 16 * -(-k // 2) * 3
    assert ii[3] < 0.7 * ii[6]  # 104 vs 152 cycles per image


@pytest.mark.icarus
def test_gated_block_on_icarus():
    g = gated_block(k=2, scale=True, seed=3)
    vd = generate_verilog(_design(g, 1, "gated_icarus"))
    r = verify_graph(vd, g, _images(6, seed=4), sim="icarus", timing_vectors=2)
    assert r.passed, r.summary()


# -- the digits gated cnn ------------------------------------------------------------------


def digits_gated(n_epochs: int = 8, keep: float = 0.5):
    """(image split, lowered 8-bit ``gated_cnn(keep=keep)`` graph), seed 0; a plain
    function so ``benchmarks/bench_rtl.py`` builds the very same design (and hits the
    same cache)."""
    import torch

    from pqflow.models import TrainConfig, gated_cnn, load_digits_split, train
    from pqflow.models.lower import lower
    from pqflow.models.qmodules import QuantConfig, quantize_model

    data = load_digits_split(image=True)
    torch.manual_seed(0)
    fm = train(gated_cnn(keep=keep), data.x_train, data.y_train, TrainConfig(epochs=n_epochs))
    q = quantize_model(fm, QuantConfig(), data.x_train[:500])
    return data, lower(q, data.x_train[:4])


def gated_design(g) -> Design:
    """Gated blocks on ``GATED_PE`` lanes, the Dense head folded 10 x 8."""
    impls = {}
    for n in g.nodes:
        if n.name in GATED_PE:
            window = int(np.prod(n.op.weight.shape[1:]))  # the whole window per cycle
            impls[n.name] = Folded(GATED_PE[n.name], window)
        elif isinstance(n.op, Conv2d | Dense):
            impls[n.name] = Folded(10, 8) if n.name == "6" else Unrolled()
    return Design(g, impls, name="digits_gated_cnn8")


@pytest.mark.verilator
def test_digits_gated_cnn_is_bit_exact():
    data, g = digits_gated()
    vd = generate_verilog(gated_design(g))
    modules = set(re.findall(r"^module \\?(\S+)", vd.text, re.M))
    assert {"digits_gated_cnn8.1.out_quant", "digits_gated_cnn8.3.out_quant"} <= modules
    assert not any(".conv" in m or ".gate" in m for m in modules)  # fused into those two
    r = verify_graph(vd, g, data.x_test[:N_CI], timing_vectors=2)
    assert r.passed, r.summary()
    assert np.array_equal(r.outputs, run(g, data.x_test[:N_CI]))
