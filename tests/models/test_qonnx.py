"""QONNX import and export, checked against qonnx's own executor bit for bit.

- A Brevitas digits MLP (power-of-two quantizers), exported with ``export_qonnx``: qonnx's
  ``execute_onnx`` and pqflow's oracle give identical floats on the whole test split.
- Hand-built QONNX graphs with MultiThreshold, Trunc, BipolarQuant, Mul/Div, narrow Quant.
- IR -> QONNX -> ``execute_onnx`` == oracle, and IR -> QONNX -> IR' with oracle(IR') ==
  oracle(IR), on a graph using every exported op.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.core.onnx_exec import execute_onnx  # noqa: E402
from qonnx.util.cleanup import cleanup_model  # noqa: E402

from pqflow.ir import (  # noqa: E402
    Add,
    AvgPool2d,
    BinaryDense,
    Bipolar,
    Conv2d,
    Dense,
    Dequantize,
    Fixed,
    Flatten,
    Float,
    GraphBuilder,
    MaxPool2d,
    MultiThreshold,
    Quantize,
    ReLU,
    Requant,
    Reshape,
    Weight,
)
from pqflow.kernels import run  # noqa: E402
from pqflow.models.data import load_digits_split  # noqa: E402
from pqflow.models.qonnx_export import QONNXExportError, to_qonnx  # noqa: E402
from pqflow.models.qonnx_import import (  # noqa: E402
    QONNXImportError,
    UnsupportedONNXOp,
    from_qonnx,
)

DOMAIN = "qonnx.custom_op.general"


def qonnx_run(model, x: np.ndarray) -> list[np.ndarray]:
    """qonnx's executor over a whole batch (float32 in, outputs as float64, NCHW kept)."""
    mw = cleanup_model(ModelWrapper(model), override_inpsize=len(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = execute_onnx(mw, {mw.graph.input[0].name: x.astype(np.float32)})
    return [np.asarray(out[o.name], dtype=np.float64) for o in mw.graph.output]


# --- a real producer: Brevitas ---------------------------------------------------------------


@pytest.fixture(scope="module")
def brevitas_digits(tmp_path_factory):
    """A Brevitas 64-32-32-10 MLP trained briefly (seeded) and exported to QONNX."""
    import brevitas.nn as qnn
    import torch
    from brevitas.export import export_qonnx
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint

    def linear(i, o, last=False):
        return qnn.QuantLinear(
            i,
            o,
            bias=True,
            weight_quant=Int8WeightPerTensorFixedPoint,
            bias_quant=Int32Bias,
            return_quant_tensor=not last,
        )

    def relu():
        return qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)

    digits = load_digits_split()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True),
        linear(64, 32),
        relu(),
        linear(32, 32),
        relu(),
        linear(32, 10, last=True),
    )
    x, y = torch.tensor(digits.x_train), torch.tensor(digits.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        brevitas_out = model(torch.tensor(digits.x_test)).numpy().astype(np.float64)
    path = tmp_path_factory.mktemp("qonnx") / "digits_mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, torch.zeros(1, 64), export_path=str(path))
    return path, digits, brevitas_out


def test_brevitas_mlp_matches_qonnx_executor_bit_exactly(brevitas_digits):
    path, digits, brevitas_out = brevitas_digits
    graph = from_qonnx(path)
    ops = [type(n.op).__name__ for n in graph]
    assert ops == ["Quantize"] + ["Dense", "ReLU", "Requant"] * 2 + ["Dense", "Dequantize"]
    assert all(n.op.mult == (1,) for n in graph if isinstance(n.op, Requant))  # pure shifts
    ours = run(graph, digits.x_test.astype(np.float64))
    (theirs,) = qonnx_run(onnx.load(path), digits.x_test)
    assert theirs.shape == ours.shape == (360, 10)
    assert np.array_equal(ours, theirs)
    assert np.array_equal(ours, brevitas_out)  # and Brevitas' own forward
    assert (ours.argmax(1) == digits.y_test).mean() > 0.9


# --- hand-built QONNX --------------------------------------------------------------------------


def _model(nodes, inits, in_shape, out_shape):
    graph = helper.make_graph(
        nodes,
        "hand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, 1)]
    )


def _quant(x, y, scale, bits, signed=1, narrow=0, mode="ROUND"):
    inits = [(f"{y}_s", scale), (f"{y}_z", 0.0), (f"{y}_b", float(bits))]
    node = helper.make_node(
        "Quant",
        [x, f"{y}_s", f"{y}_z", f"{y}_b"],
        [y],
        domain=DOMAIN,
        signed=signed,
        narrow=narrow,
        rounding_mode=mode,
    )
    return node, inits


def test_hand_built_qonnx_ops_match_qonnx_executor():
    rng = np.random.default_rng(1)
    nodes, inits = [], []

    def add(pair):
        nodes.append(pair[0])
        inits.extend(pair[1])

    add(_quant("x", "xq", 2.0**-6, 8, signed=1, narrow=1))  # narrow input clip
    w = rng.integers(-7, 8, (16, 8)) * 2.0**-3
    inits.append(("w", w))
    add(_quant("w", "wq", np.full((1, 8), 2.0**-3), 4))
    nodes.append(helper.make_node("MatMul", ["xq", "wq"], ["acc"]))
    inits.append(("bias", rng.integers(-50, 50, 8) * 2.0**-9))
    nodes.append(helper.make_node("Add", ["acc", "bias"], ["accb"]))
    inits.append(("k", np.full((1, 8), 0.5)))
    nodes.append(helper.make_node("Mul", ["accb", "k"], ["half"]))
    inits.append(("two", 2.0))
    nodes.append(helper.make_node("Div", ["half", "two"], ["quarter"]))
    add(_quant("quarter", "aq", 2.0**-8, 12, mode="FLOOR"))
    # Trunc v1: drop 4 bits (output keeps the input scale, as qonnx defines it)
    inits += [("ts", 2.0**-8), ("tz", 0.0), ("tin", 12.0), ("tout", 8.0)]
    nodes.append(
        helper.make_node(
            "Trunc", ["aq", "ts", "tz", "tin", "tout"], ["tr"], domain=DOMAIN, rounding_mode="FLOOR"
        )
    )
    th = np.sort(rng.integers(-60, 60, (8, 3)), axis=1) * 2.0**-8
    inits.append(("th", th))
    nodes.append(
        helper.make_node(
            "MultiThreshold",
            ["tr", "th"],
            ["mt"],
            domain=DOMAIN,
            out_dtype="INT3",
            out_scale=0.5,
            out_bias=-1.0,
        )
    )
    inits.append(("bs", 1.0))
    nodes.append(helper.make_node("BipolarQuant", ["mt", "bs"], ["bq"], domain=DOMAIN))
    inits.append(("wb", np.where(rng.random((8, 4)) < 0.5, -1.0, 1.0)))
    nodes.append(helper.make_node("BipolarQuant", ["wb", "bs"], ["wbq"], domain=DOMAIN))
    nodes.append(helper.make_node("MatMul", ["bq", "wbq"], ["y"]))
    model = _model(nodes, inits, [1, 16], [1, 4])

    graph = from_qonnx(model)
    kinds = {type(n.op).__name__ for n in graph}
    assert {"MultiThreshold", "BinaryDense", "Requant", "Dense"} <= kinds
    x = rng.uniform(-2.2, 2.2, (500, 16))
    x[:4, 0] = [-2.0, -1.984375, 1.984375, 0.0]  # -128 clips to the narrow -127
    (theirs,) = qonnx_run(model, x)
    ours = run(graph, x.astype(np.float32).astype(np.float64))
    assert np.array_equal(ours, theirs)


def test_conv_maxpool_flatten_from_nchw():
    """A Conv/MaxPool/Flatten/Gemm QONNX graph: flatten order C-major in ONNX, HWC in the IR."""
    rng = np.random.default_rng(2)
    nodes, inits = [], []
    n, i = _quant("x", "xq", 2.0**-7, 8, signed=0)
    nodes.append(n)
    inits += i
    inits.append(("cw", rng.integers(-8, 8, (4, 1, 3, 3)) * 2.0**-3))
    inits.append(("cb", rng.integers(-100, 100, 4) * 2.0**-10))
    nodes.append(helper.make_node("Conv", ["xq", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Relu", ["c"], ["r"]))
    n, i = _quant("r", "rq", 2.0**-4, 6, signed=0)
    nodes.append(n)
    inits += i
    nodes.append(helper.make_node("MaxPool", ["rq"], ["p"], kernel_shape=[2, 2], strides=[2, 2]))
    nodes.append(helper.make_node("Flatten", ["p"], ["f"], axis=1))
    inits.append(("gw", rng.integers(-8, 8, (10, 64)) * 2.0**-3))
    nodes.append(helper.make_node("Gemm", ["f", "gw"], ["y"], transB=1))
    model = _model(nodes, inits, [1, 1, 8, 8], [1, 10])
    graph = from_qonnx(model)
    digits = load_digits_split(image=True)
    ours = run(graph, digits.x_test.astype(np.float64))
    (theirs,) = qonnx_run(model, digits.x_test.transpose(0, 3, 1, 2))
    assert np.array_equal(ours, theirs)


def test_unsupported_op_names_node_type_and_supported_list():
    nodes = [helper.make_node("Softmax", ["x"], ["y"], name="sm0")]
    model = _model(nodes, [], [1, 4], [1, 4])
    with pytest.raises(UnsupportedONNXOp) as e:
        from_qonnx(model)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("ONNX node 'sm0': op type Softmax is not supported; supported: Add,")
    assert "MultiThreshold" in msg and "Quant" in msg


def test_non_power_of_two_input_scale_is_rejected():
    n, i = _quant("x", "y", 0.1, 8)
    with pytest.raises(QONNXImportError, match="must be one power of two"):
        from_qonnx(_model([n], i, [1, 4], [1, 4]))


def test_float_activation_scale_becomes_mult_shift():
    """A non-power-of-two activation scale becomes an integer mult/shift Requant."""
    nodes, inits = [], []
    for pair in (_quant("x", "xq", 2.0**-5, 8), _quant("xq", "aq", 0.75 * 2.0**-4, 8)):
        nodes.append(pair[0])
        inits += pair[1]
    inits.append(("s", 0.75))
    nodes.append(helper.make_node("Div", ["aq", "s"], ["y"]))
    model = _model(nodes, inits, [1, 4], [1, 4])
    graph = from_qonnx(model)
    rq = [n.op for n in graph if isinstance(n.op, Requant)][0]
    assert rq.mult[0].bit_length() == 31  # 2/3 is not dyadic: the nearest 31-bit mult
    assert abs(rq.mult[0] * 2.0 ** -rq.shift[0] - 2 / 3) < 2.0**-31
    x = np.random.default_rng(3).uniform(-3, 3, (400, 4))
    (theirs,) = qonnx_run(model, x)
    ours = run(graph, x.astype(np.float32).astype(np.float64))
    assert np.mean(ours == theirs) > 0.99


# --- export and round trip ---------------------------------------------------------------------


def _every_op_graph():
    rng = np.random.default_rng(0)
    b = GraphBuilder("cnn")
    x = b.input("x", Float(), (8, 8, 1))
    q = b.add(Quantize(Fixed(8, 7, False)), x)
    w = Weight(rng.integers(-64, 64, (8, 3, 3, 1)), Fixed(8, 6))
    c = b.add(Conv2d(w, Weight(rng.integers(-500, 500, 8), Fixed(12, 13)), padding=(1,) * 4), q)
    r = b.add(ReLU(), c)
    rq = b.add(Requant(Fixed(6, 3, False), mult=tuple(rng.integers(50, 100, 8)), shift=(16,)), r)
    p = b.add(AvgPool2d((2, 2)), b.add(MaxPool2d((2, 2)), rq))
    d = b.add(Dense(Weight(rng.integers(-8, 8, (16, 32)), Fixed(4, 2))), b.add(Flatten(), p))
    r2 = b.add(Requant(Fixed(8, 2, True), shift=(4,), rounding="floor"), d)
    th = Weight(np.sort(rng.integers(-100, 100, (16, 3)), axis=1), Fixed(8, 2))
    mt = b.add(MultiThreshold(th, Fixed(3, 1, True), offset=-2), r2)
    bp = b.add(MultiThreshold(Weight(np.zeros((1, 1), int), Fixed(1, 2)), Bipolar()), r2)
    bd = b.add(BinaryDense(Weight(rng.integers(0, 2, (16, 16)), Bipolar())), bp)
    r3 = b.add(Requant(Fixed(3, 1, True), shift=(2,)), bd)
    img = b.add(Reshape((4, 4, 1)), b.add(Add(), mt, r3))
    return b.build(b.add(Dequantize(), img), b.add(Dequantize(), bd))


def test_export_matches_oracle_and_round_trips():
    graph = _every_op_graph()
    model = to_qonnx(graph)
    onnx.checker.check_model(model)
    x = load_digits_split(image=True).x_test.astype(np.float64)
    ours = run(graph, x)
    theirs = qonnx_run(model, x.transpose(0, 3, 1, 2))
    assert np.array_equal(theirs[0].transpose(0, 2, 3, 1), ours[graph.outputs[0]])
    assert np.array_equal(theirs[1], ours[graph.outputs[1]])
    again = run(from_qonnx(model), x)
    assert all(np.array_equal(a, b) for a, b in zip(ours.values(), again.values(), strict=True))


def test_brevitas_round_trip_through_export(brevitas_digits):
    path, digits, _ = brevitas_digits
    graph = from_qonnx(path)
    x = digits.x_test.astype(np.float64)
    model = to_qonnx(graph)
    (theirs,) = qonnx_run(model, digits.x_test)
    assert np.array_equal(theirs, run(graph, x))
    assert np.array_equal(run(from_qonnx(model), x), run(graph, x))


def test_export_rejects_wrap_overflow():
    b = GraphBuilder("w")
    q = b.add(Quantize(Fixed(8, 4), overflow="wrap"), b.input("x", Float(), (4,)))
    with pytest.raises(QONNXExportError, match="Quantize 'quantize0': overflow wrap"):
        to_qonnx(b.build(b.add(Dequantize(), q)))
