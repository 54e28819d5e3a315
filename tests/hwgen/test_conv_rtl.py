"""Issue 6 part A: the digits ``cnn`` as pixel-stream hardware, bit-exact in cocotb.

Two networks from the real pipeline (``pqflow.models``; seed 0), lowered with
``pqflow.models.lower``:

- ``cnn8``: the zoo ``cnn`` at 8 bits (``QuantConfig()``), 50% of the filters pruned
  (L1, filter granularity: 8 and 16 filters remain) and fine-tuned; conv -> ReLU ->
  Requant -> max pool
  twice, Flatten (a deserializer), Dense. Built folded (``CNN8_FOLDED``).
- ``bcnn``: the zoo ``cnn`` with binary weights and activations (QAT, pow2 scales); the
  lowering keeps the zero padding exact by carrying +-1 activations as 2-bit raws, so its
  convolutions are ``Conv2d``s with +-1 weights; MultiThreshold activations. Built folded
  (``BCNN_FOLDED``).

Each is generated whole and verified on Verilator with random input stalls and output
back-pressure on ``N_CI`` test images (one pixel per beat in, one vector per image out);
``benchmarks/bench_rtl.py --cnn`` runs the same designs on >= 200 images and records
latency and II (cycles per image) in BENCHMARKS.md.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from pqflow.hwgen import Design, Folded, generate_verilog
from pqflow.hwgen.amaranth import DataflowTop
from pqflow.ir import Conv2d, Flatten, MaxPool2d

pytestmark = [
    pytest.mark.verilator,
    pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable"),
]

N_CI = 40
# conv "1": 8 filters x 3x3x1, one window per cycle; conv "5": 16 x 3x3x8 in 9 folds per
# window, 16 windows: 144 cycles per image; the Dense head 8 cycles.
CNN8_FOLDED = {"1": Folded(pe=8, simd=9), "5": Folded(pe=16, simd=8), "10": Folded(pe=10, simd=8)}
# bcnn: conv "1" 16 x 3x3x1 one window per cycle; conv "5" 32 x 3x3x16 in 9 folds
BCNN_FOLDED = {"1": Folded(pe=16, simd=9), "5": Folded(pe=32, simd=16), "10": Folded(10, 16)}


def digits_cnns():
    """(image split, cnn8 graph, bcnn graph), seed 0; a plain function so
    ``benchmarks/bench_rtl.py`` builds the very same designs (and hits the same cache)."""
    import torch

    from pqflow.models import TrainConfig, cnn, load_digits_split, train
    from pqflow.models.lower import lower
    from pqflow.models.prune import prune
    from pqflow.models.qat import qat
    from pqflow.models.qmodules import QuantConfig, quantize_model
    from pqflow.models.quantizers import QuantSpec

    data = load_digits_split(image=True)
    x = data.x_train[:500]
    torch.manual_seed(0)
    fm = train(cnn(), data.x_train, data.y_train, TrainConfig(epochs=8))
    pruned = prune(copy.deepcopy(fm), "filter", "l1", 0.5)
    train(pruned, data.x_train, data.y_train, TrainConfig(epochs=3, lr=5e-3))  # masks kept
    cnn8 = lower(quantize_model(pruned, QuantConfig(), x), data.x_train[:4])
    torch.manual_seed(0)
    cfg = QuantConfig(weight=QuantSpec.binary("pow2", axis=0), act=QuantSpec.binary())
    qb = qat(
        quantize_model(fm, cfg, x),
        data.x_train,
        data.y_train,
        TrainConfig(epochs=4, lr=1e-2, weight_decay=0.0),
    )
    bcnn = lower(qb, data.x_train[:4])
    return data, cnn8, bcnn


def xnor_cnn_design(data) -> Design:
    """For the benchmark: a binary cnn whose second conv is unpadded, so binary QAT
    lowers it to a real ``BinaryConv2d`` (XNOR-popcount on the folded engine); conv
    (16 x 3x3, padded) -> thresholds -> max pool -> BinaryConv2d (32 x 3x3x16) ->
    thresholds -> Dense, all folded (seed 0, QAT 4 epochs)."""
    import torch
    from torch import nn

    from pqflow.ir import BinaryConv2d, Dense
    from pqflow.models import TrainConfig, train
    from pqflow.models.lower import lower
    from pqflow.models.qat import qat
    from pqflow.models.qmodules import QuantConfig, quantize_model
    from pqflow.models.quantizers import QuantSpec
    from pqflow.models.zoo import ChannelsFirst, FlattenHWC

    torch.manual_seed(0)
    model = nn.Sequential(
        ChannelsFirst(),
        *(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()),
        nn.MaxPool2d(2),
        *(nn.Conv2d(16, 32, 3, bias=False), nn.BatchNorm2d(32), nn.ReLU()),
        FlattenHWC(),
        nn.Linear(128, 10),
    )
    fm = train(model, data.x_train, data.y_train, TrainConfig(epochs=8))
    cfg = QuantConfig(weight=QuantSpec.binary("pow2", axis=0), act=QuantSpec.binary())
    torch.manual_seed(0)
    q = qat(
        quantize_model(fm, cfg, data.x_train[:500]),
        data.x_train,
        data.y_train,
        TrainConfig(epochs=4, lr=1e-2, weight_decay=0.0),
    )
    g = lower(q, data.x_train[:4])
    impls = {}
    for n in g:
        if isinstance(n.op, BinaryConv2d):  # 32 x 144: 9 folds per window, 4 windows
            impls[n.name] = Folded(pe=32, simd=16)
        elif isinstance(n.op, Dense):
            impls[n.name] = Folded(pe=10, simd=16)
        elif isinstance(n.op, Conv2d):
            impls[n.name] = Folded(pe=16, simd=9)
    return Design(g, impls, name="digits_xnor_cnn_folded")


def cnn_designs(cnn8, bcnn, *, more: bool = False) -> list[Design]:
    """The CI designs (cnn8 folded, bcnn folded); ``more`` adds the benchmark's cnn8 on
    sparse engines (EIE-style, pe=8, zero activations skipped)."""
    designs = [
        Design(cnn8, CNN8_FOLDED, name="digits_cnn8_folded"),
        Design(bcnn, BCNN_FOLDED, name="digits_bcnn_folded"),
    ]
    if more:
        designs.append(Design.uniform(cnn8, "sparse", pe=8, name="digits_cnn8_sparse8"))
    return designs


@pytest.fixture(scope="module")
def digits_cnn_models():
    return digits_cnns()


def test_networks_are_what_the_issue_asks(digits_cnn_models):
    data, cnn8, bcnn = digits_cnn_models
    convs = [n.op for n in cnn8 if isinstance(n.op, Conv2d)]
    assert [c.weight.shape for c in convs] == [(8, 3, 3, 1), (16, 3, 3, 8)]  # 50% filters
    assert all(c.weight.dtype.width == 8 for c in convs)
    assert sum(isinstance(n.op, MaxPool2d) for n in cnn8) == 2
    assert any(isinstance(n.op, Flatten) for n in cnn8)
    bconvs = [n.op for n in bcnn if isinstance(n.op, Conv2d)]
    assert len(bconvs) == 2
    for c in bconvs:  # binary weights: +-1 raws
        assert set(np.unique(c.weight.data)) <= {-1, 1}
    from pqflow.kernels import run

    acc = [np.mean(run(g, data.x_test).argmax(axis=1) == data.y_test) for g in (cnn8, bcnn)]
    assert acc[0] > 0.95 and acc[1] > 0.85, acc  # the integer graphs classify digits


@pytest.mark.parametrize("which", [0, 1])
def test_digits_cnn_in_rtl(digits_cnn_models, which):
    from pqflow.sim.graph import hardware_vectors, verify_graph

    data, cnn8, bcnn = digits_cnn_models
    design = cnn_designs(cnn8, bcnn)[which]
    x = data.x_test[:N_CI]
    v = generate_verilog(design)
    assert (v.in_beats, v.in_count, v.out_beats) == (64, 1, 1)  # 8x8x1 pixels in
    _, expected = hardware_vectors(design.graph, x)
    res = verify_graph(
        v, design.graph, x, sim="verilator", seed=which, stall_prob=0.3, backpressure_prob=0.3
    )
    assert res.passed and res.n_mismatches == 0, res.summary()
    assert np.array_equal(res.outputs, expected)
    # II in cycles per image: the slowest unit's (the second conv's FIFO of windows lets
    # its generator refill between images while the engine works)
    assert res.ii_cycles == v.cycles_per_vector == 144
    # the latency is at least the schedule's bound: all 64 pixels, then every unit's latency
    sched = DataflowTop(design).schedule
    assert sched.need == (64,) and res.latency_cycles >= 63 + sched.latency
    # and the top's model (stream_latency over the units' schedules) is within 10%
    assert abs(res.latency_cycles - v.latency) <= 0.1 * res.latency_cycles, v.latency
