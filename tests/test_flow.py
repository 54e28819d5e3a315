"""The end-to-end slice: digits MLP, w8a8, oracle, unrolled RTL, cocotb + Verilator."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from pqflow import ir
from pqflow.config import load_config, parse_config
from pqflow.flow import run_flow

EXAMPLE = Path(__file__).parents[1] / "examples" / "digits_mlp.toml"


@pytest.mark.verilator
def test_digits_mlp_flow_is_bit_exact_on_the_whole_test_split(tmp_path):
    out = tmp_path / "run"
    st = run_flow(load_config(EXAMPLE), out, progress=False)
    s = json.loads((out / "summary.json").read_text())

    # the float model, the quantized torch model and the oracle
    assert s["float"]["accuracy"] >= 0.97
    assert abs(s["oracle"]["accuracy"] - s["float"]["accuracy"]) <= 0.01
    assert s["oracle"]["accuracy"] == s["quantized"]["accuracy"]
    assert s["oracle"]["bit_exact_vs_torch"] is True

    # the RTL against the oracle on every test image, with stalls and back-pressure
    v = s["verify"]
    assert v["vectors"] == 360 and v["bit_exact"] is True and v["mismatches"] == 0
    assert v["ii_cycles"] == 1.0
    assert v["latency_cycles"] == s["rtl"]["pipeline_latency"]
    assert st.passed

    # artefacts: the IR reloads to the same graph; Verilog regenerates to the same bytes
    g = ir.load(out / "model.ir.json")
    assert g == st.graph
    from pqflow.hwgen import generate_verilog

    assert generate_verilog(g).text == (out / "pqflow_top.v").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary left

    # a second run of the same config gives the same bytes (timings.json aside)
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["verify"]["enabled"] = False
    st2 = run_flow(parse_config(doc), tmp_path / "again", progress=False)
    assert st2.graph == st.graph
    for name in ("model.ir.json", "model.ir.txt", "pqflow_top.v"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name


def test_flow_failure_leaves_no_output(tmp_path, monkeypatch):
    import pqflow.flow as flow

    def boom(st):
        (st.work / "half-written.v").write_text("module")
        raise RuntimeError("generator crashed")

    steps = tuple((n, boom if n == "generate" else f) for n, f in flow.STEPS)
    cfg = load_config(EXAMPLE)
    with pytest.raises(RuntimeError, match="generator crashed"):
        run_flow(cfg, tmp_path / "run", progress=False, steps=steps)
    assert list(tmp_path.iterdir()) == []


def test_flow_keeps_existing_output_without_force(tmp_path):
    from pqflow.errors import UserError

    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="exists; pass --force"):
        run_flow(load_config(EXAMPLE), out, progress=False)
    assert (out / "keep.txt").read_text() == "x"
    assert np.array_equal(sorted(p.name for p in tmp_path.iterdir()), ["run"])
