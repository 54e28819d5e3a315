"""The zoo CNNs through the real pipeline to HLS C simulation, bit-exact on digits.

``cnn`` and ``resnet_tiny`` are trained briefly (2 epochs: faithfulness, not accuracy, is
the point), quantized w8a8 power-of-two with ``quantize_model``, lowered with
``pqflow.models.lower.lower`` and their unrolled HLS C++ C-simulated with g++ against the
oracle on the digits test split (channels-last images). The 50%-filter-pruned cnn too.

Measured (2 shared cores, g++ -O0, cold cache): cnn compile ~11 s, 360 images ~6 s;
pruned cnn ~13 s + ~2.5 s; resnet_tiny compile ~48 s but ~0.24 s per image at -O0
(360 images ~88 s), so it runs on the first 60 test images. Unrolled, not folded: the
folded(1, 1) resnet_tiny compiled slower (~160 s under load). Builds are cached per
design hash, so a rerun only pays training and the runs (~20 s for the module).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from toolcheck import tool_absent

from pqflow.sim.csim import ToolNotFound, csim, find_ap_types, find_compiler

EPOCHS = 2
CALIB = 500  # training rows used to calibrate the quantizers
IMAGES = {"cnn": None, "cnn_pruned": None, "resnet_tiny": 60}  # None: the whole test split


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


def lowered(name: str, d):
    """The IR graph of zoo model ``name`` (``*_pruned``: 50% of filters pruned, L1)."""
    import torch

    from pqflow.models import TrainConfig, train_or_load
    from pqflow.models.lower import lower
    from pqflow.models.prune import prune
    from pqflow.models.qmodules import QuantConfig, quantize_model

    torch.manual_seed(0)
    base = name.removesuffix("_pruned")
    model = train_or_load(base, d.x_train, d.y_train, TrainConfig(epochs=EPOCHS))
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
    n = IMAGES[name] or len(d.x_test)
    x = d.x_test[:n]
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
