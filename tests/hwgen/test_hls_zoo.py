"""The zoo CNNs through the real pipeline to HLS C simulation, bit-exact on digits.

``cnn`` and ``resnet_tiny`` are trained briefly (2 epochs: faithfulness, not accuracy, is
the point), compressed, lowered with ``pqflow.models.lower.lower`` and their unrolled HLS
C++ C-simulated with g++ against the oracle on the digits test split (channels-last
images): w8a8 power-of-two PTQ (and the 50%-filter-pruned cnn); then the technique matrix
as tests/models/test_lowering.py builds it -- QAT w4a4 (MultiThreshold activations),
ternary and binary QAT, per-channel float-scale PTQ (Requant mult + shift), 80%
element-pruned -- for both models, plus ``bcnn`` (an unpadded second conv, so binary QAT
gives a ``BinaryConv2d``: XNOR-popcount); and the gated cnn (``ChannelGate``).

Measured (2 cores shared by ~7 agents, load ~14, g++ -O0, cold cache): the matrix (11
designs, one unity build in 2 jobs, each on all 360 images) costs 165 CPU-seconds in all:
compile 84, runs ~66 (in parallel, one per core), training, QAT and lowering ~15;
resnet_tiny runs ~0.09 CPU-s per image at -O0.
-O1 would run faster but compiles ~4x slower and trips -Werror inside ap_types
(maybe-uninitialized), so the C simulation stays at -O0. Builds are cached per design
hash, so a rerun pays training and the runs only.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
from toolcheck import tool_absent

from pqflow.sim.csim import ToolNotFound, csim, find_ap_types, find_compiler

EPOCHS = 2
CALIB = 500  # training rows used to calibrate the quantizers


@pytest.fixture(scope="module", autouse=True)
def _toolchain():
    try:
        find_compiler()
        find_ap_types()
    except ToolNotFound as e:
        tool_absent(str(e))


@pytest.fixture(scope="module")
def digits_image():
    from pqflow.models import load_digits_split

    return load_digits_split(image=True)


_FLOAT: dict[str, object] = {}


def float_model(base: str, d):
    """Zoo model ``base`` (or ``bcnn``, below) trained ``EPOCHS`` epochs, once per module."""
    if base not in _FLOAT:
        import torch

        from pqflow.models import TrainConfig, train, train_or_load

        torch.manual_seed(0)
        cfg = TrainConfig(epochs=EPOCHS)
        if base == "bcnn":
            _FLOAT[base] = train(bcnn(), d.x_train, d.y_train, cfg)
        else:
            _FLOAT[base] = train_or_load(base, d.x_train, d.y_train, cfg)
    return _FLOAT[base]


def bcnn():
    """A cnn whose second conv is unpadded, so binary QAT lowers it to ``BinaryConv2d``
    (a zero-padded window is not bipolar: the zoo cnn's padded convs stay ``Conv2d``)."""
    from torch import nn

    from pqflow.models.zoo import ChannelsFirst, FlattenHWC

    return nn.Sequential(
        ChannelsFirst(),
        *(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()),
        nn.MaxPool2d(2),
        *(nn.Conv2d(16, 32, 3, bias=False), nn.BatchNorm2d(32), nn.ReLU()),
        FlattenHWC(),
        nn.Linear(128, 10),
    )


def lowered(name: str, d):
    """The IR graph of zoo model ``name`` (``*_pruned``: 50% of filters pruned, L1)."""
    from pqflow.models.lower import lower
    from pqflow.models.prune import prune
    from pqflow.models.qmodules import QuantConfig, quantize_model

    base = name.removesuffix("_pruned")
    model = float_model(base, d)
    if name.endswith("_pruned"):
        model = prune(copy.deepcopy(model), "filter", "l1", 0.5)
    q = quantize_model(model, QuantConfig(), d.x_train[:CALIB])
    return lower(q, d.x_train[:4])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn", "cnn_pruned", "resnet_tiny"])
def test_zoo_cnn_csim_bit_exact(name, digits_image):
    d = digits_image
    graph = lowered(name, d)
    ops = {type(n.op).__name__ for n in graph.nodes}
    assert "Conv2d" in ops
    if name == "resnet_tiny":
        assert "Add" in ops  # the residual join
    n = len(d.x_test)
    x = d.x_test
    res = csim(graph, x, style="unrolled")
    assert res.passed, f"{name}: {res.mismatches} of {n} samples differ from the oracle"
    assert res.mismatches == 0 and res.outputs.shape[0] == n
    assert np.array_equal(res.outputs, res.expected)


@pytest.mark.slow
def test_binary_digits_mlp_csim_bit_exact():
    """The fully binary MLP from the real pipeline (binary QAT, lowered with XNOR layers)
    in C simulation, on the whole digits test split."""
    from test_digits_builds import digits_graphs

    from pqflow.ir import BinaryDense

    data, _, binary = digits_graphs()
    assert sum(isinstance(n.op, BinaryDense) for n in binary.nodes) == 2
    res = csim(binary, data.x_test, style="unrolled")
    assert res.passed and res.mismatches == 0, res.mismatches
    assert np.array_equal(res.outputs, res.expected) and len(res.outputs) == 360


# --- every zoo CNN x technique, one C-simulation build -----------------------------------------

TECHNIQUES = ("w4a4_qat", "ternary", "binary", "float_per_channel", "element80")
MATRIX = [(m, t) for m in ("cnn", "resnet_tiny") for t in TECHNIQUES] + [("bcnn", "binary")]
SHORT_QAT = dict(epochs=2, lr=2e-3, weight_decay=0.0)  # as tests/models/test_lowering.py


def technique_graph(model: str, technique: str, d):
    """``model`` compressed by ``technique`` as tests/models/test_lowering.py does, lowered."""
    import torch

    from pqflow.models import TrainConfig
    from pqflow.models.lower import lower
    from pqflow.models.prune import prune
    from pqflow.models.qat import qat
    from pqflow.models.qmodules import QuantConfig, quantize_model
    from pqflow.models.quantizers import QuantSpec

    fm = float_model(model, d)
    x, y = d.x_train[:CALIB], d.y_train[:CALIB]
    torch.manual_seed(0)
    cfg = {
        "w4a4_qat": QuantConfig.wa(4, 4),
        "ternary": QuantConfig(weight=QuantSpec.ternary(axis=0)),
        "binary": QuantConfig(weight=QuantSpec.binary("pow2", axis=0), act=QuantSpec.binary()),
        "float_per_channel": QuantConfig(
            weight=QuantSpec(bits=8, narrow=True, axis=0, scale="float"),
            act=QuantSpec(bits=8, signed=False, scale="float"),
            input=QuantSpec(bits=8, signed=False, scale="float"),
        ),
        "element80": QuantConfig(),
    }[technique]
    if technique == "element80":
        fm = prune(copy.deepcopy(fm), "element", "l1", 0.8)
    q = quantize_model(fm, cfg, x)
    if technique in ("w4a4_qat", "ternary", "binary"):
        q = qat(q, x, y, TrainConfig(**SHORT_QAT))
    return lower(q, d.x_train[:4])


def _check_technique(model: str, technique: str, graph) -> None:
    """The graph really carries the technique (what the C++ must then reproduce)."""
    from pqflow.hwgen.hls import render_hls
    from pqflow.ir import Bipolar, Fixed

    ops = [type(nd.op).__name__ for nd in graph.nodes]
    assert "Conv2d" in ops and (model != "resnet_tiny" or "Add" in ops)
    types = graph.types()
    if technique == "w4a4_qat":  # 4-bit activations as thresholds, no Requant inside
        mts = [nd.name for nd in graph if type(nd.op).__name__ == "MultiThreshold"]
        assert mts and all(types[v].dtype.width <= 4 for v in mts)
        assert "Requant" not in ops[:-1]
    elif technique == "ternary":
        w = _weights(graph, ("Conv2d",))
        assert all(x.dtype == Fixed(2, 0, True) for x in w)
        assert set(np.unique(np.concatenate([x.data.ravel() for x in w]))) == {-1, 0, 1}
    elif technique == "binary":  # sign activations: Bipolar into an XNOR conv, else +-1
        mts = [types[nd.name].dtype for nd in graph if type(nd.op).__name__ == "MultiThreshold"]
        assert mts and all(t in (Bipolar(), Fixed(2, 0, True)) for t in mts)
        assert ("BinaryConv2d" in ops) == (Bipolar() in mts) == (model == "bcnn")
        w = _weights(graph, ("Conv2d",))
        assert all(set(np.unique(x.data)) == {-1, 1} for x in w)
    elif technique == "float_per_channel":  # per-channel integer multipliers
        rq = [nd.op for nd in graph if type(nd.op).__name__ == "Requant"]
        assert any(len(set(op.mult)) > 1 and max(op.mult) > 1 for op in rq)
    elif technique == "element80":  # 80% zeros, none of them in the unrolled C++
        w = _weights(graph, ("Conv2d", "Dense"))
        nnz, total = sum(x.nnz for x in w), sum(x.data.size for x in w)
        assert nnz <= 0.21 * total
        src = render_hls(graph, "unrolled").files["firmware/pqflow_top.cpp"]
        emitted = [int(a) for a in re.findall(r"; (\d+) of \d+ terms emitted", src)]
        assert len(emitted) == len(w) and sum(emitted) == nnz


def _weights(graph, kinds):
    return [n.op.weight for n in graph.nodes if type(n.op).__name__ in kinds]


@pytest.mark.slow
def test_zoo_techniques_csim_bit_exact(digits_image):
    """Every (model, technique) of ``MATRIX``, unrolled, on the whole digits test split,
    linked into one binary (one cached build; one test, so pytest-xdist workers do not
    each run the matrix)."""
    from pqflow.sim.csim import csim_many

    d = digits_image
    graphs = [technique_graph(m, t, d) for m, t in MATRIX]
    for (m, t), g in zip(MATRIX, graphs, strict=True):
        _check_technique(m, t, g)
    results = csim_many([(g, d.x_test) for g in graphs], style="unrolled", top="zoo")
    bad = [f"{m} {t}: {r.mismatches}" for (m, t), r in zip(MATRIX, results, strict=True)]
    bad = [b for b, r in zip(bad, results, strict=True) if not r.passed]
    assert not bad, f"samples differing from the oracle (of {len(d.x_test)}): {bad}"
    for r in results:
        assert r.outputs.shape[0] == len(d.x_test) == 360
        assert np.array_equal(r.outputs, r.expected)


@pytest.mark.slow
def test_gated_cnn_csim_bit_exact(digits_image):
    """The gated cnn (dynamic channel gating, ``ChannelGate``: per-sample top-k of the
    saliency), w8a8, with the saliency scale on and off, on the whole digits test split."""
    from pqflow.ir import ChannelGate
    from pqflow.models import TrainConfig, train_or_load
    from pqflow.models.dynamic import GatedConvBlock
    from pqflow.models.lower import lower
    from pqflow.models.qmodules import QuantConfig, quantize_model
    from pqflow.sim.csim import csim_many

    d = digits_image
    on = train_or_load("gated_cnn", d.x_train, d.y_train, TrainConfig(epochs=EPOCHS))
    off = copy.deepcopy(on)
    for b in off.modules():
        if isinstance(b, GatedConvBlock):
            b.gate.scale = False
    x = d.x_train[:CALIB]
    graphs = [lower(quantize_model(m, QuantConfig(), x), d.x_train[:4]) for m in (on, off)]
    for g, scale in zip(graphs, (True, False), strict=True):
        gates = [n.op for n in g.nodes if isinstance(n.op, ChannelGate)]
        assert len(gates) == 2 and all(op.scale == scale for op in gates)
    results = csim_many([(g, d.x_test) for g in graphs], style="unrolled", top="gated")
    for r in results:
        assert r.passed, f"{r.top}: {r.mismatches} of {len(d.x_test)} samples differ"
        assert r.outputs.shape[0] == 360 and np.array_equal(r.outputs, r.expected)
