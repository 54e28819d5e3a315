"""A real QONNX producer on a CNN: a Brevitas conv net (QuantConv2d, QuantReLU, MaxPool2d,
QuantLinear; power-of-two quantizers) trained briefly on the digits images, exported with
``export_qonnx``, imported by ``from_qonnx``: qonnx's own executor, Brevitas' forward and
pqflow's oracle give identical outputs on the whole test split; ``to_qonnx`` of the
imported graph runs identically in qonnx's executor and re-imports to the same outputs."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.cleanup import cleanup_model

from pqflow.ir import Conv2d, Dense, MaxPool2d, verify
from pqflow.kernels import run
from pqflow.models.data import load_digits_split
from pqflow.models.qonnx_export import to_qonnx
from pqflow.models.qonnx_import import from_qonnx


def qonnx_run(model, x: np.ndarray) -> np.ndarray:
    mw = cleanup_model(ModelWrapper(model), override_inpsize=len(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = execute_onnx(mw, {mw.graph.input[0].name: x.astype(np.float32)})
    return np.asarray(out[mw.graph.output[0].name], dtype=np.float64)


@pytest.fixture(scope="module")
def brevitas_cnn(tmp_path_factory):
    """conv3x3(1->4)-relu-maxpool, conv3x3(4->8)-relu-maxpool, linear(32->10); 25 Adam
    steps on 400 training images (seeded; Brevitas' fake quantization is slow)."""
    import brevitas.nn as qnn
    import torch
    from brevitas.export import export_qonnx
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint

    def conv(i, o):
        return qnn.QuantConv2d(
            i,
            o,
            3,
            padding=1,
            bias=True,
            weight_quant=Int8WeightPerTensorFixedPoint,
            bias_quant=Int32Bias,
            return_quant_tensor=True,
        )

    def relu():
        return qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)

    d = load_digits_split(image=True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True),
        conv(1, 4),
        relu(),
        torch.nn.MaxPool2d(2),
        conv(4, 8),
        relu(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        qnn.QuantLinear(
            32,
            10,
            bias=True,
            weight_quant=Int8WeightPerTensorFixedPoint,
            bias_quant=Int32Bias,
            return_quant_tensor=False,
        ),
    )
    nchw = lambda a: torch.tensor(a).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    x, y = nchw(d.x_train[:400]), torch.tensor(d.y_train[:400])
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(25):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        brevitas_out = model(nchw(d.x_test)).numpy().astype(np.float64)
    path = tmp_path_factory.mktemp("qonnx_cnn") / "digits_cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, torch.zeros(1, 1, 8, 8), export_path=str(path))
    return path, d, brevitas_out


def test_brevitas_cnn_matches_qonnx_executor_and_round_trips(brevitas_cnn):
    path, d, brevitas_out = brevitas_cnn
    graph = verify(from_qonnx(path))
    kinds = [type(n.op) for n in graph]
    assert kinds.count(Conv2d) == 2 and kinds.count(MaxPool2d) == 2 and kinds.count(Dense) == 1
    x_nhwc = d.x_test.astype(np.float64)
    x_nchw = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
    ours = run(graph, x_nhwc)
    theirs = qonnx_run(onnx.load(path), x_nchw)
    assert theirs.shape == ours.shape == (360, 10)
    assert np.array_equal(ours, theirs)
    assert np.array_equal(ours, brevitas_out)  # and Brevitas' own forward
    assert (ours.argmax(1) == d.y_test).mean() > 0.6  # trained (chance is 0.1)
    # round trip: pqflow -> QONNX (qonnx's executor agrees) -> pqflow
    exported = to_qonnx(graph)
    again = verify(from_qonnx(exported))
    assert np.array_equal(run(again, x_nhwc), ours)
    assert np.array_equal(qonnx_run(exported, x_nchw), ours)  # ONNX images are NCHW
