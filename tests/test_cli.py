"""The command line: one-line errors with exit code 2, no partial output, real runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pqflow import ir


def pqflow(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pqflow.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def small_graph() -> ir.Graph:
    rng = np.random.default_rng(0)
    b = ir.GraphBuilder("tiny")
    x = b.input("x", ir.Float(), (64,))
    q = b.add(ir.Quantize(ir.Fixed(8, 7, False)), x, name="quant")
    w = ir.Weight(rng.integers(-128, 128, (10, 64)), ir.Fixed(8, 6))
    b.add(ir.Dense(w), q, name="fc0")
    return b.build("fc0")


def one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def test_show_prints_every_node(tmp_path):
    f = tmp_path / "g.ir.json"
    ir.save(small_graph(), f)
    p = pqflow("show", str(f))
    assert p.returncode == 0, p.stderr
    assert "quant: u8f7[64] = Quantize(x" in p.stdout
    assert "fc0: " in p.stdout and "Dense(quant" in p.stdout


@pytest.mark.parametrize(
    "edit, expect",
    [
        (lambda s: s[: len(s) // 2], "not valid JSON"),
        (
            lambda s: s.replace('"width": 8', '"width": 0', 1),
            "width must be an integer from 1 to 62",
        ),
        (
            lambda s: s.replace('"width": 8', '"width": 63', 1),
            "width must be an integer from 1 to 62",
        ),
        (lambda s: s.replace('"version": 1', '"version": 7'), "IR version 7 is not supported"),
        (lambda s: s.replace('"op": "Dense"', '"op": "Densse"'), "unknown op 'Densse'"),
        # a weight of 300 does not fit its declared 8-bit type
        (lambda s: s.replace('"data": [', '"data": [300, ', 1).replace(", 0]", "]", 1), None),
    ],
)
def test_bad_ir_file_is_one_line_exit_2(tmp_path, edit, expect):
    f = tmp_path / "g.ir.json"
    ir.save(small_graph(), f)
    bad = edit(f.read_text())
    f.write_text(bad)
    line = one_line_error(pqflow("show", str(f)))
    assert str(f) in line
    if expect:
        assert expect in line


def test_weight_out_of_range_names_node(tmp_path):
    f = tmp_path / "g.ir.json"
    ir.save(small_graph(), f)
    doc = json.loads(f.read_text())
    doc["nodes"][1]["attrs"]["weight"]["data"][0] = 300
    f.write_text(json.dumps(doc))
    line = one_line_error(pqflow("show", str(f)))
    assert "Dense 'fc0'" in line and "do not fit s8f6" in line


def test_missing_file_and_bad_config(tmp_path):
    line = one_line_error(pqflow("show", str(tmp_path / "nope.json")))
    assert "no such file" in line
    cfg = tmp_path / "c.toml"
    cfg.write_text("[compress]\nweight_bit = 8\n")
    line = one_line_error(pqflow("flow", str(cfg), "-o", str(tmp_path / "out")))
    assert "[compress] weight_bit: unknown key" in line
    assert not (tmp_path / "out").exists()
    cfg.write_text("[compress]\nweight_bits = 99\n")
    line = one_line_error(pqflow("flow", str(cfg), "-o", str(tmp_path / "out")))
    assert "weight_bits must be from 2 to 16" in line


def test_existing_output_folder_is_refused_and_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    cfg = Path(__file__).parents[1] / "examples" / "digits_mlp.toml"
    line = one_line_error(pqflow("flow", str(cfg), "-o", str(out)))
    assert "exists" in line and "--force" in line
    assert (out / "mine.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_run_reports_accuracy_json(tmp_path):
    f = tmp_path / "g.ir.json"
    ir.save(small_graph(), f)
    p = pqflow("run", str(f), "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["samples"] == 360 and 0.0 <= res["accuracy"] <= 1.0


def test_config_hardware_styles(tmp_path):
    from pqflow.config import ConfigError, parse_config

    cfg = parse_config({"hardware": {"style": "folded", "pe": 2, "simd": 8}})
    assert cfg.hardware.impl_options() == {"pe": 2, "simd": 8}
    assert parse_config({"hardware": {"style": "sparse", "pe": 4}}).hardware.impl_options() == {
        "pe": 4
    }
    with pytest.raises(ConfigError, match="style: 'systolic' is not known"):
        parse_config({"hardware": {"style": "systolic"}})
    with pytest.raises(ConfigError, match="expected int, got str"):
        parse_config({"hardware": {"pe": "4"}})


def test_staged_out_dir_replaces_only_on_success(tmp_path):
    from pqflow.errors import UserError
    from pqflow.outdir import staged_out_dir

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_out_dir(out, force=True) as work:
        (work / "half.v").write_text("module")
        raise RuntimeError("write failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "old.txt").read_text() == "old"
    with staged_out_dir(out, force=True) as work:
        (work / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    with pytest.raises(UserError, match="exists; pass --force"), staged_out_dir(out, False):
        pass


def test_compress_lower_run_chain(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        '[model]\nname = "mlp"\n[train]\nepochs = 3\n'
        '[compress]\nquant = "ternary"\nqat_epochs = 2\nsparsity = 0.5\n'
    )
    model = tmp_path / "m.pt"
    p = pqflow("compress", str(cfg), "-o", str(model), "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["quant"] == "ternary" and doc["sparsity"] == 0.5 and doc["accuracy"] > 0.5
    assert pqflow("lower", str(model), "-o", str(tmp_path / "m.ir.json")).returncode == 0
    g = ir.load(tmp_path / "m.ir.json")
    dense = [n.op for n in g if isinstance(n.op, ir.Dense)]
    assert {int(v) for op in dense[1:-1] for v in np.unique(op.weight.data)} <= {-1, 0, 1}
    p = pqflow("run", str(tmp_path / "m.ir.json"), "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["accuracy"] == doc["accuracy"]
    # an existing output is kept, with a one-line error
    before = model.read_bytes()
    assert "exists; pass --force" in one_line_error(pqflow("compress", str(cfg), "-o", str(model)))
    assert model.read_bytes() == before


def test_gen_json_is_design_json(tmp_path):
    f = tmp_path / "g.ir.json"
    ir.save(small_graph(), f)
    p = pqflow("gen", str(f), "--style", "folded", "--pe", "2", "-o", str(tmp_path / "o"), "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc == json.loads((tmp_path / "o" / "design.json").read_text())
    assert doc["nodes"]["fc0"]["style"] == "folded" and doc["nodes"]["fc0"]["pe"] == 2


def test_every_command_explains_every_option():
    from pqflow.cli import cli

    for name, cmd in cli.commands.items():
        assert cmd.help, name
        for p in cmd.params:
            if isinstance(p, __import__("click").Option):
                assert p.help, f"pqflow {name} {p.opts[0]} has no help text"
