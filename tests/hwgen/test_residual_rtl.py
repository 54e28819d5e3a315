"""Residual networks in RTL (fork, skip FIFO, Add) on Verilator and Icarus, against the oracle.

Every design streams with random input stalls and output back-pressure and must equal
the Numba oracle word for word; in the stall-free timing phase the measured II must
equal the analytic one (the skip FIFOs cost no throughput), and for vectors the latency
too. A skip FIFO made too small on purpose deadlocks, and the harness reports it instead
of hanging. The digits ``resnet_tiny`` (8-bit, 50% of its filters pruned) is generated
whole and verified on Verilator: one build (~60-190 s on 2 shared cores, cached by design
hash), 30 images.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from residual_helpers import frame_fusion, frame_residual, residual_mlp  # noqa: F401 (fixture)

from pqflow import ir
from pqflow.hwgen import Design, Folded, Unrolled, generate_verilog
from pqflow.hwgen.amaranth import graph_top
from pqflow.sim.graph import deadlock_timeout, hardware_vectors, verify_graph


def _inputs(graph, count: int, seed: int = 1) -> np.ndarray:
    t = graph.inputs[0].type
    return np.random.default_rng(seed).integers(
        t.dtype.min_raw, t.dtype.max_raw + 1, (count, *t.shape)
    )


@pytest.mark.icarus
def test_unrolled_and_folded_residual_blocks_on_icarus():
    """Two blocks, one unrolled and one folded (which sets the II), every skip FIFO at its
    computed depth: bit-exact under stalls; analytic latency and II when nothing stalls."""
    g = residual_mlp(seed=6, n=6, blocks=2, name="res_uf")
    impls = {"fc0a": Unrolled(levels_per_stage=1), "fc0b": Unrolled(levels_per_stage=1)}
    impls |= {"fc1a": Folded(pe=2, simd=3), "fc1b": Folded(pe=3, simd=2)}
    d = generate_verilog(Design(g, impls, name="res_uf"))
    assert dict(d.fifo_depths) == {"add0": 2, "add1": 3}
    x = _inputs(g, 60)
    _, expected = hardware_vectors(g, x)
    res = verify_graph(d, g, x, sim="icarus", seed=3)
    assert res.passed and res.n_vectors == 60, res.summary()
    assert np.array_equal(res.outputs, expected)
    assert res.ii_cycles == d.cycles_per_vector == 6
    assert res.latency_cycles == d.latency


@pytest.mark.icarus
def test_two_residual_blocks_at_ii_1_on_icarus():
    """Two unrolled blocks: one vector per cycle with the skip FIFOs at their computed
    depths, bit-exact under stalls."""
    g = residual_mlp(seed=5, n=8, blocks=2, name="res2")
    d = generate_verilog(g)
    assert dict(d.fifo_depths) == {"add0": 7, "add1": 7}
    x = _inputs(g, 40)
    _, expected = hardware_vectors(g, x)
    res = verify_graph(d, g, x, sim="icarus", seed=2)
    assert res.passed and res.n_vectors == 40, res.summary()
    assert np.array_equal(res.outputs, expected)
    assert res.ii_cycles == d.cycles_per_vector == 1
    assert res.latency_cycles == d.latency


@pytest.mark.icarus
@pytest.mark.usefixtures("frame_fusion")
def test_a_too_small_skip_fifo_deadlocks_and_the_harness_says_so(monkeypatch):
    """The sizing refuses this depth (test_graph_top); forced through, the RTL deadlocks and
    the bench reports a timeout with the counts after a limit derived from the design's
    latency and II (2,000 cycles here), not after the bench's default 100,000."""
    g = frame_residual()
    dead, _ = graph_top.DataflowGraphTop(g).fifo_needs["add"]
    monkeypatch.setattr(graph_top, "_check_depth", lambda *args: None)
    d = generate_verilog(g, fifo_depths={"add": dead - 1})
    x = _inputs(g, 6)
    res = verify_graph(d, g, x, sim="icarus")
    assert deadlock_timeout(d) == 2000  # cycles without a handshake, from latency and II
    assert not res.passed
    assert "timeout: no handshake for 2000 cycles" in res.error, res.summary()
    assert len(res.outputs) < 6 * 12  # beats: 3 x 4 pixels per sample


def _cli(*args, capsys) -> tuple[int, str, str]:
    from pqflow.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = int(e.code)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.icarus
def test_cli_gen_and_verify_take_a_residual_graph(tmp_path, capsys):
    path = tmp_path / "res.ir.json"
    ir.save(residual_mlp(seed=7, n=8, blocks=2, name="resd", digits=True), path)
    code, text, err = _cli("gen", path, "-o", tmp_path / "out", capsys=capsys)
    assert code == 0, err
    assert "skip FIFO depths (beats, by Add node): add0 7, add1 7" in text
    info = json.loads((tmp_path / "out" / "design.json").read_text())
    assert info["fifo_depths"] == {"add0": 7, "add1": 7}
    code, text, err = _cli(  # AXI-Stream ports around the DAG top
        "verify", path, "--axis", "--sim", "icarus", "-n", 5, "--json", capsys=capsys
    )
    assert code == 0, err
    res = json.loads(text)
    assert res["bit_exact"] is True and res["vectors"] == 5 and res["mismatches"] == 0
    assert res["ii_cycles"] == res["cycles_per_vector"] == 1


@pytest.mark.slow
@pytest.mark.verilator
def test_resnet_tiny_whole_on_verilator():
    """The digits resnet_tiny (w8a8, 50% filter-pruned, lowered by the real pipeline):
    convolutions as pixel streams, a 3x3-conv residual block and a downsampling block
    with a 1x1-conv skip. Bit-exact on 30 test images under stalls; II = the analytic
    100 cycles per image (the 8x8 image padded to 10x10 windows) with the skip FIFOs at
    their computed depths."""
    from residual_helpers import resnet_tiny

    from pqflow.models import load_digits_split

    data = load_digits_split(image=True)
    graph = resnet_tiny(data)
    adds = [n.name for n in graph.nodes if type(n.op).__name__ == "Add"]
    assert len(adds) == 2
    d = generate_verilog(graph)
    assert dict(d.fifo_depths) == {adds[0]: 28, adds[1]: 12}
    x = data.x_test[:30]
    _, expected = hardware_vectors(graph, x)
    res = verify_graph(d, graph, x, sim="verilator", seed=1)
    assert res.passed and res.n_vectors == len(expected), res.summary()
    assert np.array_equal(res.outputs, expected)
    assert res.ii_cycles == d.cycles_per_vector == 100
