"""``pqflow gen/verify --target hls``: the HLS project on disk, C simulation on digits.

The graph takes the 64 digits features (Quantize u8f7 -> Dense -> Requant -> ReLU ->
Dense), so ``verify -n N`` runs it on the first N digits test images. g++ builds are
cached per design hash (``$PQFLOW_CACHE``), so repeated runs compile once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from toolcheck import tool_absent

from pqflow import ir
from pqflow.cli import main
from pqflow.hwgen.hls import generate_hls
from pqflow.sim.csim import ToolNotFound, find_ap_types, find_compiler


@pytest.fixture(scope="module", autouse=True)
def _toolchain():
    try:
        find_compiler()
        find_ap_types()
    except ToolNotFound as e:
        tool_absent(str(e))


def digits_graph(seed: int = 0) -> ir.Graph:
    rng = np.random.default_rng(seed)
    b = ir.GraphBuilder("digits_hls")
    x = b.input("x", ir.Float(), (64,))
    v = b.add(ir.Quantize(ir.Fixed(8, 7, False)), x, name="quant")
    w0 = rng.integers(-128, 128, (16, 64))
    w0[rng.random(w0.shape) < 0.3] = 0  # zero weights: dropped from the unrolled loops
    v = b.add(ir.Dense(ir.Weight(w0, ir.Fixed(8, 6))), v, name="fc0")
    v = b.add(
        ir.Requant(ir.Fixed(8, 4), (3,), (9,), ir.Rounding.HALF_EVEN, ir.Overflow.SATURATE),
        v,
        name="rq0",
    )
    v = b.add(ir.ReLU(), v, name="relu0")
    w1 = ir.Weight(rng.integers(-128, 128, (10, 16)), ir.Fixed(8, 6))
    b.add(ir.Dense(w1), v, name="fc1")
    return b.build("fc1")


@pytest.fixture
def ir_file(tmp_path):
    path = tmp_path / "digits.ir.json"
    ir.save(digits_graph(), path)
    return path


def cli(*args, capsys) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = int(e.code)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    "style,extra",
    [("unrolled", []), ("folded", ["--pe", "2", "--simd", "4"]), ("sparse", ["--pe", "3"])],
)
def test_gen_hls_writes_project(ir_file, tmp_path, capsys, style, extra):
    out = tmp_path / "hls"
    code, stdout, err = cli(
        "gen", ir_file, "--target", "hls", "--style", style, *extra, "-o", out, capsys=capsys
    )
    assert code == 0, err
    assert "HLS project pqflow_top" in stdout and "vitis_hls" in stdout
    for rel in (
        "firmware/pqflow_top.cpp",
        "firmware/pqflow_top.h",
        "firmware/pqflow_common.h",
        "tb/pqflow_top_tb.cpp",
        "tb/vectors.txt",
        "run_hls.tcl",
        "design.json",
    ):
        assert (out / rel).is_file(), rel
    # the same files generate_hls writes, byte for byte
    graph = ir.load(ir_file)
    pe, simd = {"unrolled": (1, 1), "folded": (2, 4), "sparse": (3, 1)}[style]
    ref = generate_hls(graph, style, pe=pe, simd=simd)
    for rel in ref.sources:
        assert (out / rel).read_text() == ref.files[rel]
    info = json.loads((out / "design.json").read_text())
    assert info["target"] == "hls" and info["vectors"] == 100 and info["sha256"]
    assert (out / "tb/vectors.txt").read_text().split("\n")[0] == "100 64 10"


def test_gen_hls_refuses_existing_folder_and_bad_options(ir_file, tmp_path, capsys):
    out = tmp_path / "hls"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    msg = one_line_error(*cli("gen", ir_file, "--target", "hls", "-o", out, capsys=capsys)[::2])
    assert "exists" in msg and "--force" in msg
    assert (out / "keep.txt").read_text() == "mine"
    for bad, word in (
        (["--style", "sparse", "--simd", "2"], "simd"),  # sparse takes --pe only
        (["--style", "folded", "--pe", "3"], "pe"),  # 3 does not divide 16
        (["--simd", "2"], "simd"),  # unrolled takes no folding factor
        (["--axis"], "axis"),
    ):
        msg = one_line_error(
            *cli("gen", ir_file, "--target", "hls", *bad, "-o", tmp_path / "x", capsys=capsys)[::2]
        )
        assert word in msg, msg
        assert not (tmp_path / "x").exists()
    code, stdout, err = cli("gen", ir_file, "--target", "hls", "--force", "-o", out, capsys=capsys)
    assert code == 0, err
    assert not (out / "keep.txt").exists() and (out / "run_hls.tcl").is_file()
    msg = one_line_error(*cli("gen", ir_file, "--target", "fpga", "-o", out, capsys=capsys)[::2])
    assert "fpga" in msg


@pytest.mark.parametrize(
    "style,extra",
    [("unrolled", []), ("folded", ["--pe", "2", "--simd", "8"]), ("sparse", ["--pe", "4"])],
)
def test_verify_hls_bit_exact(ir_file, capsys, style, extra):
    code, stdout, err = cli(
        "verify",
        ir_file,
        "--target",
        "hls",
        "--style",
        style,
        *extra,
        "-n",
        50,
        "--json",
        capsys=capsys,
    )
    assert code == 0, err
    s = json.loads(stdout)
    assert s["bit_exact"] is True and s["mismatches"] == 0 and s["vectors"] == 50
    assert s["target"] == "hls" and s["compile_seconds"] >= 0 and s["run_seconds"] >= 0
    code, stdout, err = cli(
        "verify", ir_file, "--target", "hls", "--style", style, *extra, "-n", 7, capsys=capsys
    )
    assert code == 0, err
    assert "bit-exact yes, 7 vectors, 0 mismatches" in stdout
    assert "compile" in stdout and "(cached)" in stdout  # built by the first run


def test_verify_hls_mismatch_exits_1(ir_file, capsys, monkeypatch):
    import pqflow.sim.csim as csim_mod

    real = csim_mod.oracle_vectors

    def off_by_one(graph, x):
        a, b = real(graph, x)
        b = b.copy()
        b[3, 0] += 1
        return a, b

    monkeypatch.setattr(csim_mod, "oracle_vectors", off_by_one)
    code, stdout, err = cli("verify", ir_file, "--target", "hls", "-n", 10, capsys=capsys)
    assert code == 1, (stdout, err)
    assert "bit-exact no, 10 vectors, 1 mismatches" in stdout
    assert "HLS C simulation != oracle" in err


def test_verify_hls_errors(ir_file, tmp_path, capsys):
    for bad, word in ((["--sim", "icarus"], "--sim"), (["--axis"], "axis")):
        msg = one_line_error(*cli("verify", ir_file, "--target", "hls", *bad, capsys=capsys)[::2])
        assert word in msg, msg
    # a graph that does not take digits samples
    b = ir.GraphBuilder("odd")
    x = b.input("x", ir.Float(), (5,))
    q = b.add(ir.Quantize(ir.Fixed(8, 7, False)), x, name="quant")
    b.add(ir.Dense(ir.Weight(np.ones((2, 5), dtype=np.int64), ir.Fixed(8, 6))), q, name="fc")
    odd = tmp_path / "odd.ir.json"
    ir.save(b.build("fc"), odd)
    msg = one_line_error(*cli("verify", odd, "--target", "hls", "-n", 3, capsys=capsys)[::2])
    assert "digits" in msg


def test_gen_and_verify_hls_sparse_cnn(tmp_path, capsys):
    """A CNN (8x8x1 digits images, stream interface): every conv and dense node sparse."""
    from test_hls import cnn_graph

    path = tmp_path / "cnn.ir.json"
    ir.save(cnn_graph(np.random.default_rng(1))[0], path)
    out = tmp_path / "hls"
    code, stdout, err = cli(
        "gen", path, "--target", "hls", "--style", "sparse", "--pe", 2, "-o", out, capsys=capsys
    )
    assert code == 0, err
    assert "(sparse, stream)" in stdout
    info = json.loads((out / "design.json").read_text())
    assert {n["style"] for n in info["nodes"].values()} == {"sparse"}
    assert {n["op"] for n in info["nodes"].values()} >= {"Conv2d", "Dense"}
    code, stdout, err = cli(
        "verify", path, "--target", "hls", "--style", "sparse", "--pe", 2, "-n", 30, capsys=capsys
    )
    assert code == 0, err
    assert "bit-exact yes, 30 vectors, 0 mismatches" in stdout
