"""The end-to-end slice: digits MLP, w8a8, oracle, unrolled RTL, cocotb + Verilator."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
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

    # the HLS C++ in C simulation, the estimate and the report
    assert s["hls"]["vectors"] == 360 and s["hls"]["bit_exact"] is True
    assert (out / "hls" / "run_hls.tcl").is_file()
    est = json.loads((out / "estimate.json").read_text())
    assert est["totals"]["dsp"] == s["estimate"]["dsp"] and s["estimate"]["lut"] > 0
    assert est["totals"]["latency"] == s["rtl"]["pipeline_latency"]
    for name in ("report.html", "report.md", "report.json"):
        assert (out / name).stat().st_size > 0, name

    # artefacts: the IR reloads to the same graph; Verilog regenerates to the same bytes
    g = ir.load(out / "model.ir.json")
    assert g == st.graph
    from pqflow.hwgen import generate_verilog

    assert generate_verilog(g).text == (out / "pqflow_top.v").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary left

    # a second run of the same config gives the same bytes (timings.json aside)
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["verify"]["enabled"] = False
    doc["hls"] = {"csim": False}
    st2 = run_flow(parse_config(doc), tmp_path / "again", progress=False)
    assert st2.graph == st.graph
    for name in (
        "model.ir.json",
        "model.ir.txt",
        "pqflow_top.v",
        "model.pt",
        "hls/firmware/pqflow_top.cpp",
    ):
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


QUICK = {
    "model": {"name": "mlp"},
    "train": {"epochs": 2, "finetune_epochs": 1},
    "compress": {"sparsity": 0.5},
    "hardware": {"style": "folded", "pe": 2, "simd": 4},
    "verify": {"enabled": False},
    "hls": {"enabled": False},
    "report": {"enabled": False},
}


def _refuse(step):
    def run(st):
        raise AssertionError(f"step {step.name} ran although its checkpoint exists")

    return replace(step, run=run)


def test_flow_resumes_from_checkpoints(tmp_path, monkeypatch):
    import pqflow.flow as flow

    monkeypatch.setenv("PQFLOW_CACHE", str(tmp_path / "cache"))
    cfg = parse_config(QUICK)

    # a run interrupted in `generate` leaves no output, but its earlier steps' checkpoints
    def crash(st):
        raise KeyboardInterrupt

    steps = tuple(replace(s, run=crash) if s.name == "generate" else s for s in flow.STEPS)
    with pytest.raises(KeyboardInterrupt):
        run_flow(cfg, tmp_path / "a", progress=False, steps=steps)
    assert not (tmp_path / "a").exists()

    # resuming restores train/compress/lower/oracle (they must not run) and runs the rest
    early = ("train", "compress", "lower", "oracle")
    steps = tuple(_refuse(s) if s.name in early else s for s in flow.STEPS)
    st = run_flow(cfg, tmp_path / "a", progress=False, steps=steps, resume=True)
    assert st.restored == list(early)
    assert (tmp_path / "a" / "pqflow_top.v").is_file()

    # a fresh run (no checkpoints read) gives the same bytes
    st2 = run_flow(cfg, tmp_path / "b", progress=False, checkpoints=False)
    assert st2.restored == []
    for name in ("model.ir.json", "model.pt", "pqflow_top.v", "summary.json", "estimate.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name

    # --from-step generate: everything before is restored, generate and later steps run
    steps = tuple(_refuse(s) if s.name in (*early, "generate") else s for s in flow.STEPS)
    with pytest.raises(AssertionError, match="step generate ran"):
        run_flow(cfg, tmp_path / "c", progress=False, steps=steps, from_step="generate")
    st3 = run_flow(cfg, tmp_path / "c", progress=False, from_step="generate")
    assert st3.restored == list(early)


def test_flow_from_step_needs_checkpoints(tmp_path, monkeypatch):
    from pqflow.errors import UserError

    monkeypatch.setenv("PQFLOW_CACHE", str(tmp_path / "cache"))
    cfg = parse_config(QUICK)
    with pytest.raises(UserError, match="step 'train' of this config has no checkpoint"):
        run_flow(cfg, tmp_path / "a", progress=False, from_step="lower")
    with pytest.raises(UserError, match="no step named 'bogus'"):
        run_flow(cfg, tmp_path / "a", progress=False, from_step="bogus")
    assert list(tmp_path.iterdir()) == [] or [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_cli_from_step_choices_are_the_flow_steps():
    from pqflow.cli import flow as flow_cmd
    from pqflow.flow import STEP_NAMES

    opt = next(p for p in flow_cmd.params if p.name == "from_step")
    assert list(opt.type.choices) == [s for s in STEP_NAMES if s not in ("data", "summary")]


@pytest.mark.icarus
def test_cnn_flow_end_to_end(tmp_path, monkeypatch):
    """The digits CNN, 50% of its filters pruned, w8a8, on folded engines fitted from
    pe=4 (the 10-output head gets pe=2): oracle bit-exact with torch, RTL on Icarus, HLS in
    C simulation, an estimate whose II is the simulated one, and a report."""
    monkeypatch.setenv("PQFLOW_CACHE", str(tmp_path / "cache"))
    doc = tomllib.loads((EXAMPLE.parent / "digits_cnn.toml").read_text())
    doc["train"] = {"epochs": 4, "finetune_epochs": 2}
    doc["verify"] = {"simulator": "icarus", "vectors": 4}
    doc["hls"] = {"vectors": 20}
    st = run_flow(parse_config(doc), tmp_path / "cnn", progress=False)
    s = json.loads((tmp_path / "cnn" / "summary.json").read_text())
    assert st.passed and s["oracle"]["bit_exact_vs_torch"] is True
    assert s["oracle"]["accuracy"] == s["quantized"]["accuracy"] >= 0.9
    design = json.loads((tmp_path / "cnn" / "design.json").read_text())
    pes = {n: d["pe"] for n, d in design["nodes"].items()}
    head = [n for n in st.graph.nodes if isinstance(n.op, ir.Dense)][-1]
    assert max(pes.values()) == 4 and pes[head.name] == 2
    v = s["verify"]
    assert v["bit_exact"] is True and v["vectors"] == 4 and v["mismatches"] == 0
    assert s["hls"]["bit_exact"] is True and s["hls"]["vectors"] == 20
    assert s["estimate"]["ii"] == v["ii_cycles"]
    convs = [n for n in st.graph.nodes if isinstance(n.op, ir.Conv2d)]
    assert [n.op.weight.shape[0] for n in convs] == [8, 16]  # half the filters are gone
