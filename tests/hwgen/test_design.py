"""``Design`` (graph + per-node implementation), the ``dense_units`` registry, hardware
errors, deterministic generation, and the ``pqflow gen`` / ``pqflow verify`` commands."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from hwgen_helpers import random_mlp, run_stream

from pqflow import ir
from pqflow.cli import main
from pqflow.errors import UserError
from pqflow.hwgen import (
    Design,
    DesignError,
    Folded,
    HardwareError,
    Impl,
    Sparse,
    UnitOptions,
    Unrolled,
    generate_verilog,
)
from pqflow.hwgen.amaranth import DataflowTop, UnrolledDense, dense_units, register_dense
from pqflow.sim.graph import hardware_vectors

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def test_uniform_designs():
    g = random_mlp([8, 6, 4])
    d = Design.uniform(g, "folded", pe=2, simd=2, register_requant=False)
    assert d.impls == (("fc0", Folded(2, 2)), ("fc1", Folded(2, 2)))
    assert d.impl("fc1") == Folded(pe=2, simd=2)
    assert d.options == UnitOptions(register_requant=False)
    assert Design.uniform(g).impl("fc0") == Unrolled()
    assert Design.uniform(g, "sparse", pe=2).impl("fc0") == Sparse(2)
    assert hash(d) == hash(Design.uniform(g, "folded", pe=2, simd=2, register_requant=False))
    desc = d.describe()
    assert desc["nodes"]["fc0"] == {"op": "Dense", "style": "folded", "pe": 2, "simd": 2}
    assert desc["options"] == {"register_requant": False, "register_threshold": True}
    json.dumps(desc)


def test_design_errors():
    g = random_mlp([8, 6, 4])
    with pytest.raises(DesignError, match=r"style must be one of 'unrolled', 'folded', 'sparse'"):
        Design.uniform(g, "systolic")
    with pytest.raises(TypeError, match=r"unknown option 'simd' for style 'sparse'; accepted: pe"):
        Design.uniform(g, "sparse", simd=2)
    with pytest.raises(
        DesignError,
        match=r"'rq0' is not a matrix node \(Dense, BinaryDense, Conv2d, BinaryConv2d\) of graph",
    ):
        Design(g, {"fc0": Unrolled(), "fc1": Unrolled(), "rq0": Unrolled()})
    with pytest.raises(DesignError, match=r"Dense 'fc1' has no implementation"):
        Design(g, {"fc0": Unrolled()})
    with pytest.raises(DesignError, match=r"Folded: pe must be a positive integer, not 0"):
        Folded(pe=0)
    with pytest.raises(DesignError, match=r"Unrolled: products must be one of mul, csd"):
        Unrolled(products="lut")
    with pytest.raises(DesignError, match=r"name must be a Verilog identifier, not '1top'"):
        Design.uniform(g, name="1top")
    assert issubclass(DesignError, UserError) and issubclass(DesignError, ValueError)
    assert issubclass(HardwareError, UserError) and issubclass(HardwareError, NotImplementedError)


def test_mixed_design_bit_exact_on_amaranth_sim():
    g = random_mlp([8, 6, 4], seed=4)
    d = Design(g, {"fc0": Unrolled(levels_per_stage=1), "fc1": Folded(pe=2, simd=3)})
    top = DataflowTop(d)
    kinds = [type(u).__name__ for _, u in top.units]
    assert kinds[0] == "UnrolledDense" and "FoldedDense" in kinds
    ins, expected = hardware_vectors(g, np.random.default_rng(0).random((6, 8)))
    got, _, _ = run_stream(top, ins, seed=2)
    assert np.array_equal(got, expected)
    got, i_edges, o_edges = run_stream(top, ins, stall_prob=0, backpressure_prob=0)
    assert o_edges[0] - i_edges[0] == top.latency
    assert set(np.diff(o_edges)) == {top.cycles_per_vector} == {(4 // 2) * (6 // 3)}


def test_registry_takes_a_new_style():
    """How another engine plugs in: an Impl subclass and a builder under register_dense."""

    @dataclass(frozen=True)
    class Shifted(Impl):
        style: ClassVar[str] = "shifted"
        levels: int = 1

    g = random_mlp([5, 3], seed=1)
    d = Design(g, {"fc0": Shifted()})
    with pytest.raises(HardwareError, match=r"Dense 'fc0': no builder is registered for style"):
        DataflowTop(d)

    @register_dense(Shifted)
    def build(op, node, in_type, out_type, impl):
        return UnrolledDense(op, in_type.dtype, out_type.dtype, levels_per_stage=impl.levels)

    try:
        top = DataflowTop(d)
        assert isinstance(top.units[0][1], UnrolledDense)
        assert top.cycles_per_vector == 1
    finally:
        del dense_units[Shifted]
    with pytest.raises(TypeError, match=r"register_dense: expected an Impl subclass"):
        register_dense(int)


def binary_graph() -> ir.Graph:
    b = ir.GraphBuilder("bin")
    v = b.input("x", ir.Bipolar(), (4,))
    w = ir.Weight(np.array([[0, 1, 1, 0], [1, 1, 1, 1]]), ir.Bipolar())
    return b.build(b.add(ir.BinaryDense(w), v, name="bd"))


def test_hardware_errors_name_the_node():
    with pytest.raises(HardwareError, match=r"BinaryDense 'bd': BinaryDense has no 'sparse'"):
        generate_verilog(binary_graph(), "sparse")
    d = generate_verilog(binary_graph(), "folded", simd=2)
    assert (d.in_width, d.out_width, d.out_signed, d.cycles_per_vector) == (1, 4, True, 4)


def test_generation_is_deterministic():
    g = random_mlp([8, 6, 4], seed=5)
    d = Design.uniform(g, "folded", pe=2, simd=2)
    a = generate_verilog(d, axis=True)
    b = generate_verilog(g, "folded", pe=2, simd=2, axis=True)
    assert a.text == b.text and a.digest == b.digest
    assert generate_verilog(d).text == generate_verilog(d).text
    assert generate_verilog(d, name="other").top == "other"
    with pytest.raises(TypeError, match=r"style and options apply to a Graph, not a Design"):
        generate_verilog(d, "folded")


def test_axis_bench_args_pack_bytes():
    g = random_mlp([3, 2], seed=0, abits=5)
    d = generate_verilog(g, axis=True)
    ins = np.array([[1, 2, 31]])
    args = d.bench_args(ins, np.array([[-1, 3]]))
    assert args["in_width"] == 8 and args["in_vectors"].shape == (1, 2)  # 15 bits -> 2 bytes
    assert int.from_bytes(bytes(args["in_vectors"][0].tolist()), "little") == d.pack_input(ins[0])
    assert d.port_names["in_data"] == "s_axis_tdata"
    assert "input [15:0] s_axis_tdata;" in d.text and "output [15:0] m_axis_tdata;" in d.text


# --- the command line ---------------------------------------------------------------------


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


@pytest.fixture
def ir_file(tmp_path):
    path = tmp_path / "mlp.ir.json"
    ir.save(random_mlp([64, 8, 10], seed=0, density=0.5), path)
    return path


def test_cli_gen(ir_file, tmp_path, capsys):
    out = tmp_path / "out"
    code, text, err = cli(
        "gen", ir_file, "--style", "folded", "--pe", 2, "--simd", 8, "-o", out, capsys=capsys
    )
    assert code == 0, err
    assert "cycles per vector 32" in text  # max of fc0 (8/2)*(64/8) = 32, fc1 (10/2)*(8/8) = 5
    info = json.loads((out / "design.json").read_text())
    assert info["nodes"]["fc0"] == {"op": "Dense", "style": "folded", "pe": 2, "simd": 8}
    assert info["cycles_per_vector"] == 32 and info["axis"] is False
    assert "module pqflow_top(" in (out / "pqflow_top.v").read_text()

    code, _, err = cli("gen", ir_file, "-o", out, capsys=capsys)
    assert "output folder" in one_line_error(code, err) and "--force" in err
    code, _, err = cli(
        "gen", ir_file, "-o", out, "--force", "--axis", "--top", "acc", capsys=capsys
    )
    assert code == 0, err
    assert (out / "acc.v").exists() and not (out / "pqflow_top.v").exists()
    assert json.loads((out / "design.json").read_text())["axis"] is True


def test_cli_gen_errors(ir_file, tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = cli("gen", ir_file, "--style", "systolic", "-o", out, capsys=capsys)
    assert "'systolic' is not one of 'unrolled', 'folded', 'sparse'" in one_line_error(code, err)
    code, _, err = cli("gen", ir_file, "--style", "folded", "--pe", 3, "-o", out, capsys=capsys)
    assert one_line_error(code, err) == (
        "pqflow: error: Dense 'fc0': folded pe=3 must divide its 8 outputs; "
        "choose one of 1, 2, 4, 8"
    )
    code, _, err = cli("gen", ir_file, "--simd", 2, "-o", out, capsys=capsys)
    assert "--simd applies to the folded style, not to 'unrolled'" in one_line_error(code, err)
    bin_file = tmp_path / "bin.ir.json"
    ir.save(binary_graph(), bin_file)
    code, _, err = cli("gen", bin_file, "--style", "sparse", "-o", out, capsys=capsys)
    assert "BinaryDense 'bd': BinaryDense has no 'sparse'" in one_line_error(code, err)
    code, _, err = cli("gen", tmp_path / "missing.ir.json", "-o", out, capsys=capsys)
    one_line_error(code, err)
    assert not out.exists()


@pytest.mark.icarus
def test_cli_verify_on_icarus(ir_file, capsys):
    code, text, err = cli(
        "verify",
        ir_file,
        "--style",
        "folded",
        "--pe",
        2,
        "--simd",
        8,
        "--sim",
        "icarus",
        "-n",
        3,
        "--json",
        capsys=capsys,
    )
    assert code == 0, err
    res = json.loads(text)
    assert res["bit_exact"] is True and res["mismatches"] == 0 and res["vectors"] == 3
    assert res["ii_cycles"] == res["cycles_per_vector"] == 32  # fc0: (8/2) * (64/8)
    assert res["latency_cycles"] == res["latency_model"]
    code, text, err = cli("verify", ir_file, "--sim", "icarus", "-n", 2, capsys=capsys)
    assert code == 0, err
    assert "bit-exact yes" in text and "0 mismatches" in text
