"""The JSON form round-trips exactly; malformed files fail with the file, node and problem."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import OP_CASES, graphs, op_cases

from pqflow.ir import (
    Dense,
    Fixed,
    Float,
    GraphBuilder,
    IRError,
    Quantize,
    ReLU,
    Weight,
    format_graph,
    from_json,
    load,
    save,
    to_json,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g=graphs())
def test_json_round_trips_exactly(g):
    text = to_json(g)
    assert to_json(g) == text  # same graph, same bytes
    back = from_json(text)
    assert back == g
    assert to_json(back) == text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g=graphs())
def test_printer_prints_every_node(g):
    lines = format_graph(g).splitlines()
    assert lines[0].startswith(f"graph {g.name}(")
    assert len(lines) == len(g.nodes) + 1
    for line, node in zip(lines[1:], g.nodes, strict=True):
        assert line.startswith(f"  {node.name}: {node.type} = {type(node.op).__name__}(")


def _graph():
    b = GraphBuilder("tiny")
    x = b.input("x", Float(), (3,))
    q = b.add(Quantize(Fixed(8, 4, True)), x, name="q")
    return b.build(b.add(ReLU(), q, name="r"))


def _doc():
    return json.loads(to_json(_graph()))


def test_save_and_load(tmp_path):
    p = tmp_path / "g.json"
    save(_graph(), p)
    assert load(p) == _graph()
    assert p.read_text() == to_json(_graph())
    assert list(tmp_path.iterdir()) == [p]  # no temporary left behind


def _write(tmp_path, text: str):
    p = tmp_path / "bad.json"
    p.write_text(text)
    return p


def test_truncated_file(tmp_path):
    p = _write(tmp_path, to_json(_graph())[:-40])
    with pytest.raises(IRError, match=rf"^{p}: not valid JSON \(line \d+, column \d+"):
        load(p)


def test_missing_file(tmp_path):
    with pytest.raises(IRError, match="no such file"):
        load(tmp_path / "nope.json")


def test_wrong_version_and_format(tmp_path):
    d = _doc()
    d["version"] = 2
    p = _write(tmp_path, json.dumps(d))
    with pytest.raises(
        IRError, match=rf"^{p}: IR version 2 is not supported \(this pqflow reads version 1\)"
    ):
        load(p)
    d["format"] = "onnx"
    with pytest.raises(IRError, match="not a pqflow IR file"):
        from_json(json.dumps(d))


def test_unknown_op(tmp_path):
    d = _doc()
    d["nodes"][1]["op"] = "Softmax"
    p = _write(tmp_path, json.dumps(d))
    with pytest.raises(IRError, match=rf"^{p}: Softmax 'r': unknown op 'Softmax' \(known: Add, "):
        load(p)


def test_hand_edited_type(tmp_path):
    d = _doc()
    d["nodes"][1]["type"]["dtype"]["width"] = 8
    p = _write(tmp_path, json.dumps(d))
    with pytest.raises(
        IRError, match=rf"^{p}: ReLU 'r': declared type u8f4\[3\] but the inputs give u7f4\[3\]"
    ):
        load(p)
    d["nodes"][1]["type"]["dtype"]["width"] = 0
    with pytest.raises(
        IRError, match="ReLU 'r': Fixed: width must be an integer from 1 to 62, not 0"
    ):
        from_json(json.dumps(d))
    d["nodes"][1]["type"]["dtype"] = {"kind": "complex"}
    with pytest.raises(IRError, match="ReLU 'r': unknown dtype kind 'complex'"):
        from_json(json.dumps(d))


def test_hand_edited_attributes():
    d = _doc()
    d["nodes"][0]["attrs"]["rounding"] = "stochastic"
    with pytest.raises(
        IRError,
        match="Quantize 'q', attribute 'rounding': 'stochastic' is not one of floor, half_up, "
        "half_even",
    ):
        from_json(json.dumps(d))
    d = _doc()
    d["nodes"][0]["attrs"]["color"] = 3
    with pytest.raises(
        IRError, match=r"Quantize 'q': unknown attribute\(s\) \['color'\] for Quantize"
    ):
        from_json(json.dumps(d))


def test_hand_edited_weights():
    b = GraphBuilder("w")
    x = b.input("x", Fixed(4), (2,))
    g = b.build(b.add(Dense(Weight([[1, -2]], Fixed(4))), x, name="fc"))
    d = json.loads(to_json(g))
    d["nodes"][0]["attrs"]["weight"]["data"] = [1, 99]
    with pytest.raises(
        IRError, match=r"^w.json: Dense 'fc': weight values \[1, 99\] do not fit s4f0 \(\[-8, 7\]\)"
    ):
        from_json(json.dumps(d), "w.json")
    d["nodes"][0]["attrs"]["weight"]["data"] = [1]
    with pytest.raises(
        IRError,
        match=r"^w.json: Dense 'fc', attribute 'weight': weight shape \[1, 2\] needs 2 values, "
        "found 1",
    ):
        from_json(json.dumps(d), "w.json")
    d["nodes"][0]["attrs"]["weight"]["data"] = [1, 2.5]
    with pytest.raises(IRError, match="weight data must be a flat list of integers"):
        from_json(json.dumps(d), "w.json")


def test_undefined_input_in_file():
    d = _doc()
    d["nodes"][1]["inputs"] = ["ghost"]
    with pytest.raises(IRError, match="ReLU 'r': input 'ghost' is not defined before this node"):
        from_json(json.dumps(d))


def test_hand_edited_sparsity():
    b = GraphBuilder("w")
    x = b.input("x", Fixed(4), (2,))
    g = b.build(b.add(Dense(Weight([[1, -2]], Fixed(4))), x, name="fc"))
    d = json.loads(to_json(g))
    d["nodes"][0]["attrs"]["weight"]["sparsity"] = {"pattern": "n:m", "n": "a", "m": 4}
    with pytest.raises(IRError, match="Dense 'fc', attribute 'weight': sparsity n and m must be"):
        from_json(json.dumps(d))
    d["nodes"][0]["attrs"]["weight"]["sparsity"] = {"pattern": "n:m", "n": 3, "m": 2}
    with pytest.raises(IRError, match="bad sparsity: Sparsity n:m needs 1 <= n <= m, not 3:2"):
        from_json(json.dumps(d))
    d["nodes"][0]["attrs"]["weight"]["sparsity"] = {"pattern": "diagonal"}
    with pytest.raises(IRError, match="bad sparsity"):
        from_json(json.dumps(d))


@pytest.mark.parametrize("kind", sorted(OP_CASES))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_op_round_trips(kind, data):
    case = data.draw(op_cases(kind))
    b = GraphBuilder(f"one_{kind}")
    ins = [b.input(f"x{i}", t.dtype, t.shape) for i, t in enumerate(case.in_types)]
    g = b.build(b.add(case.op, *ins, name="n"))
    text = to_json(g)
    assert from_json(text) == g
    assert to_json(from_json(text)) == text
    assert format_graph(g).splitlines()[1].startswith(f"  n: {g.nodes[0].type} = {kind}(")
