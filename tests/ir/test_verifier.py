"""The verifier and op constructors: errors name the node and the problem."""

from __future__ import annotations

import numpy as np
import pytest

from pqflow.ir import (
    MAX_WIDTH,
    Add,
    AvgPool2d,
    Bipolar,
    Conv2d,
    Dense,
    Fixed,
    Float,
    Graph,
    GraphBuilder,
    IRError,
    MultiThreshold,
    Node,
    Quantize,
    ReLU,
    Requant,
    TensorType,
    Value,
    Weight,
    bits_for,
    verify,
)


def _g(nodes, inputs=None, outputs=None):
    inputs = inputs or (Value("x", TensorType(Fixed(8, 0, True), (4,))),)
    return Graph("g", tuple(inputs), tuple(nodes), tuple(outputs or [nodes[-1].name]))


def test_accumulator_too_wide_names_node_and_bits():
    b = GraphBuilder("wide")
    x = b.input("x", Fixed(40, 0, True), (4,))
    w = Weight(np.full((2, 4), -(2**29)), Fixed(30, 0, True))
    need = bits_for(4 * -(2**29) * (2**39 - 1), 4 * 2**29 * 2**39)
    msg = f"Dense 'fc': accumulator needs {need} bits, the verifier allows at most 62"
    with pytest.raises(IRError, match=msg):
        b.add(Dense(w), x, name="fc")


@pytest.mark.parametrize("width", [0, 63, -1, 2.0, True])
def test_width_out_of_range(width):
    with pytest.raises(
        IRError, match=f"Fixed: width must be an integer from 1 to 62, not {width!r}"
    ):
        Fixed(width)


def test_widths_at_the_limits_are_legal():
    assert Fixed(1, 0, False).max_raw == 1
    assert Fixed(MAX_WIDTH).min_raw == -(2**61)


def test_weight_values_must_fit_their_dtype():
    with pytest.raises(
        IRError, match=r"weight values \[-3, 200\] do not fit s8f0 \(\[-128, 127\]\)"
    ):
        Weight([200, -3], Fixed(8, 0, True))
    with pytest.raises(IRError, match=r"weight values \[0, 2\] do not fit bipolar"):
        Weight([0, 2], Bipolar())
    with pytest.raises(IRError, match="data must be integers"):
        Weight([0.5], Fixed(8))


def test_mismatched_shapes():
    w = Weight(np.zeros((3, 5)), Fixed(4))
    n = Node("fc", Dense(w), ("x",), TensorType(Fixed(1, 0, False), (3,)))
    with pytest.raises(
        IRError, match=r"Dense 'fc': input shape \(4,\) does not match weight shape \(3, 5\)"
    ):
        verify(_g([n]))
    a = TensorType(Fixed(8), (4,))
    with pytest.raises(IRError, match=r"Add 'sum': operand shapes differ: \(4,\) and \(5,\)"):
        b = GraphBuilder()
        b.add(Add(), b.input("p", a.dtype, (4,)), b.input("q", a.dtype, (5,)), name="sum")


def test_undefined_input_and_duplicate_names():
    t = TensorType(Fixed(7, 0, False), (4,))
    with pytest.raises(IRError, match="ReLU 'r': input 'nope' is not defined before this node"):
        verify(_g([Node("r", ReLU(), ("nope",), t)]))
    with pytest.raises(IRError, match="ReLU 'r': the name 'r' is already defined"):
        verify(_g([Node("r", ReLU(), ("x",), t), Node("r", ReLU(), ("r",), t)]))
    with pytest.raises(IRError, match="ReLU 'x': the name 'x' is already defined"):
        verify(_g([Node("x", ReLU(), ("x",), t)]))
    with pytest.raises(IRError, match="input 'x' is defined twice"):
        v = Value("x", t)
        verify(_g([Node("r", ReLU(), ("x",), t)], inputs=[v, v]))
    with pytest.raises(IRError, match="output 'y' is not defined in graph 'g'"):
        verify(_g([Node("r", ReLU(), ("x",), t)], outputs=["y"]))
    with pytest.raises(IRError, match="ReLU 'r': takes 1 input\\(s\\), got 2"):
        verify(_g([Node("r", ReLU(), ("x", "x"), t)]))


def test_declared_type_must_equal_inferred():
    wrong = TensorType(Fixed(8, 0, True), (4,))
    with pytest.raises(
        IRError, match=r"ReLU 'r': declared type s8f0\[4\] but the inputs give u7f0\[4\]"
    ):
        verify(_g([Node("r", ReLU(), ("x",), wrong)]))


@pytest.mark.parametrize(
    ("dtype", "want"),
    [
        (Fixed(8, 3, True), Fixed(7, 3, False)),
        (Fixed(8, 3, False), Fixed(8, 3, False)),
        (Fixed(1, 0, True), Fixed(1, 0, False)),
        (Fixed(2, -2, True), Fixed(1, -2, False)),
    ],
)
def test_relu_types(dtype, want):
    assert ReLU().infer(TensorType(dtype, (3,))) == TensorType(want, (3,))


def test_relu_rejects_bipolar_and_float():
    with pytest.raises(IRError, match="input must be Fixed, not bipolar"):
        ReLU().infer(TensorType(Bipolar(), (3,)))


def test_multithreshold_sorted_and_sized():
    x = TensorType(Fixed(8, 2, True), (2,))
    unsorted = Weight([[1, 5, 3], [0, 1, 2]], Fixed(8, 2, True))
    with pytest.raises(IRError, match="thresholds must be sorted ascending in every channel"):
        MultiThreshold(unsorted, Fixed(2, 0, False)).infer(x)
    ok = Weight([[1, 3, 5], [0, 1, 2]], Fixed(8, 2, True))
    assert MultiThreshold(ok, Fixed(2, 0, False)).infer(x).dtype == Fixed(2, 0, False)
    with pytest.raises(IRError, match=r"outputs \[0, 3\] do not fit u1f0"):
        MultiThreshold(ok, Fixed(1, 0, False)).infer(x)
    with pytest.raises(IRError, match="thresholds frac 0 must equal the input frac 2"):
        MultiThreshold(Weight([[1]], Fixed(8)), Fixed(2, 0, False)).infer(x)
    with pytest.raises(IRError, match="a Bipolar output needs exactly one threshold and offset 0"):
        MultiThreshold(ok, Bipolar()).infer(x)


def test_avgpool_needs_a_power_of_two_window():
    with pytest.raises(IRError, match="window 3x3 has 9 elements; only power-of-two windows"):
        AvgPool2d((3, 3))
    assert AvgPool2d((2, 4)).log2_window == 3


def test_requant_checks():
    x = TensorType(Fixed(40, 0, True), (3,))
    with pytest.raises(IRError, match="product x \\* mult needs"):
        Requant(Fixed(8), (2**30,), (0,)).infer(x)
    with pytest.raises(IRError, match="mult has 2 entries; need 1 or 3"):
        Requant(Fixed(8), (1, 2), (0,)).infer(x)
    with pytest.raises(IRError, match="shift must be from 0 to 62"):
        Requant(Fixed(8), (1,), (63,))


def test_conv_and_quantize_checks():
    w = Weight(np.zeros((4, 3, 3, 2)), Fixed(4))
    x = TensorType(Fixed(8), (5, 5, 3))
    with pytest.raises(IRError, match="weight has 2 input channels per group, input gives 3"):
        Conv2d(w).infer(x)
    with pytest.raises(IRError, match="kernel 3 is larger than the padded input 2 along height"):
        Conv2d(w).infer(TensorType(Fixed(8), (2, 5, 2)))
    with pytest.raises(IRError, match="input must be Float, not s8f0"):
        Quantize(Fixed(8)).infer(TensorType(Fixed(8), (3,)))
    with pytest.raises(IRError, match="padding must be four non-negative integers"):
        Conv2d(w, padding=(1, 1))
    assert Conv2d(w, groups=1).infer(TensorType(Fixed(8), (5, 5, 2))).shape == (3, 3, 4)
    assert isinstance(Float(), Float)


def test_bias_frac_must_match_accumulator():
    w = Weight(np.ones((2, 4)), Fixed(4, 2))
    bias = Weight([1, 2], Fixed(8, 0))
    x = TensorType(Fixed(8, 3), (4,))
    with pytest.raises(IRError, match="bias frac 0 must equal the accumulator frac 5"):
        Dense(w, bias).infer(x)


def test_frac_and_shape_limits():
    from pqflow.ir import MAX_FRAC, Fixed, Float, IRError, TensorType

    Fixed(8, MAX_FRAC)
    Fixed(8, -MAX_FRAC)
    with pytest.raises(IRError, match="frac must be an integer from -256 to 256"):
        Fixed(8, MAX_FRAC + 1)
    with pytest.raises(IRError, match="shape must be one or more positive integers"):
        TensorType(Float(), ())


def test_channel_gate_checks_k_shapes_and_types():
    from pqflow.ir import ChannelGate

    b = GraphBuilder()
    x = b.input("x", Fixed(8, 4, False), (4, 4, 6))
    s = b.input("s", Fixed(8, 3, False), (6,))
    s5 = b.input("s5", Fixed(8, 3, False), (5,))
    f = b.input("f", Float(), (6,))
    with pytest.raises(IRError, match=r"ChannelGate 'g': k=7 exceeds the 6 channels"):
        b.add(ChannelGate(7), x, s, name="g")
    with pytest.raises(IRError, match=r"ChannelGate 'g': s must be one saliency per channel"):
        b.add(ChannelGate(2), x, s5, name="g")
    with pytest.raises(IRError, match=r"ChannelGate 'g': s \(second input\) must be Fixed"):
        b.add(ChannelGate(2), x, f, name="g")
    with pytest.raises(IRError, match="k must be a positive integer, not 0"):
        ChannelGate(0)
    with pytest.raises(IRError, match="scale must be True or False, not 1"):
        ChannelGate(2, 1)
    assert b.type_of(b.add(ChannelGate(3), x, s, name="g")) == TensorType(
        Fixed(16, 7, False), (4, 4, 6)
    )
