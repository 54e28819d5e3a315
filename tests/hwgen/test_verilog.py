"""The dataflow top and the Verilog generator: chains, errors, ports, determinism, sparsity."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hwgen_helpers import check_stream, random_mlp, random_raws, ref_chain

from pqflow.hwgen import VerilogDesign, generate_verilog
from pqflow.hwgen.amaranth import DataflowTop, UnrolledOptions, hardware_chain
from pqflow.ir import (
    Dense,
    Dequantize,
    Fixed,
    Flatten,
    Float,
    GraphBuilder,
    MultiThreshold,
    Op,
    Quantize,
    ReLU,
    Requant,
    Weight,
)

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


@pytest.mark.parametrize("seed", range(3))
def test_top_mlp_bit_exact_on_amaranth_sim(seed):
    g = random_mlp([5, 4, 3], seed=seed, abits=int(4 + seed), density=0.6)
    top = DataflowTop(g, UnrolledOptions(levels_per_stage=1 + seed))
    rng = np.random.default_rng(seed)
    x = random_raws(rng, top.in_type.dtype, (16, 5))
    check_stream(top, x, ref_chain(g, x), seed=seed)


def test_top_with_threshold_and_flatten():
    b = GraphBuilder("t")
    v = b.add(Quantize(Fixed(4, 0, True)), b.input("x", Float(), (3,)))
    v = b.add(Flatten(), v)
    v = b.add(Dense(Weight([[1, -2, 0], [3, 0, 1]], Fixed(3, 0, True))), v)
    t = Weight([[-4, 0, 5], [-1, 2, 3]], Fixed(8, 0, True))
    v = b.add(MultiThreshold(t, Fixed(3, 0, False), 1), v)
    g = b.build(b.add(Dequantize(), v))
    top = DataflowTop(g)
    x = random_raws(np.random.default_rng(1), Fixed(4, 0, True), (20, 3))
    check_stream(top, x, ref_chain(g, x))


def test_kernels_oracle_agrees_with_reference_chain():
    """The test reference above is the oracle's semantics."""
    from pqflow import kernels

    g = random_mlp([6, 5, 3], seed=3, density=0.5)
    in_type, nodes, _ = hardware_chain(g)
    x = random_raws(np.random.default_rng(0), in_type.dtype, (50, 6))
    quant = g.nodes[0].name
    raws = kernels.run(g, x / 2.0**in_type.dtype.frac, outputs=[quant, nodes[-1].name])
    assert np.array_equal(raws[quant], x)
    assert np.array_equal(raws[nodes[-1].name], ref_chain(g, x))


def test_design_fields_and_ports():
    g = random_mlp([6, 5, 3], seed=1)
    d = generate_verilog(g, name="mlp_top")
    assert isinstance(d, VerilogDesign)
    assert d.top == "mlp_top"
    assert (d.in_width, d.in_signed, d.in_count) == (8, False, 6)
    assert (d.out_width, d.out_signed, d.out_count) == (8, True, 3)
    assert d.latency == DataflowTop(g).latency > 0
    header = re.search(r"module mlp_top\((.*?)\);", d.text).group(1)
    ports = {p.strip() for p in header.split(",")}
    assert ports == {
        "clk",
        "rst",
        "i__valid",
        "i__ready",
        "i__payload",
        "o__valid",
        "o__ready",
        "o__payload",
    }
    assert re.search(r"input \[47:0\] i__payload;", d.text)
    assert re.search(r"output \[23:0\] o__payload;", d.text)
    v = np.array([1, -2, 3])
    assert np.array_equal(d.unpack_output(d.pack_output(v)), v)


def test_generation_is_deterministic():
    g = random_mlp([8, 6, 4], seed=5, density=0.5)
    a = generate_verilog(g, levels_per_stage=2)
    b = generate_verilog(random_mlp([8, 6, 4], seed=5, density=0.5), levels_per_stage=2)
    assert a.text == b.text
    assert a.digest == b.digest
    assert "src" not in a.text  # emit_src=False: no source paths in the output
    assert generate_verilog(g, levels_per_stage=1).text != a.text


def test_skipping_the_cycle_check_changes_nothing():
    g = random_mlp([8, 6, 4], seed=2)
    assert generate_verilog(g).text == generate_verilog(g, check_cycles=True).text


def _dense_graph(density: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, (16, 32))
    w[rng.random(w.shape) >= density] = 0
    b = GraphBuilder("d")
    v = b.add(Quantize(Fixed(8, 0, False)), b.input("x", Float(), (32,)))
    v = b.add(Dense(Weight(w, Fixed(8, 0, True))), v)
    return b.build(b.add(Dequantize(), v))


def _operators(text: str) -> int:
    """Arithmetic operators in the Verilog (adders, subtractors, multipliers)."""
    return len(re.findall(r"^\s*assign .* [-+*] ", text, flags=re.M))


def test_zero_weights_remove_logic():
    dense_g, sparse_g = _dense_graph(1.0), _dense_graph(0.2)
    dense_t, sparse_t = generate_verilog(dense_g).text, generate_verilog(sparse_g).text
    ((_, dense_unit),) = DataflowTop(dense_g).units
    ((_, sparse_unit),) = DataflowTop(sparse_g).units
    nnz = np.count_nonzero(sparse_g.nodes[1].op.weight.data)
    assert sparse_unit.adders == nnz - 16 + sum(
        1 for r in sparse_g.nodes[1].op.weight.data if not r.any()
    )
    assert sparse_unit.adders < 0.3 * dense_unit.adders
    assert _operators(sparse_t) < 0.35 * _operators(dense_t)
    assert len(sparse_t) < 0.5 * len(dense_t)


def test_all_zero_layer_is_constant():
    b = GraphBuilder("z")
    v = b.add(Quantize(Fixed(8, 0, False)), b.input("x", Float(), (4,)))
    v = b.add(Dense(Weight(np.zeros((3, 4)), Fixed(4, 0, True)), Weight([1, 0, -2], Fixed(6))), v)
    g = b.build(v)
    assert _operators(generate_verilog(g).text) == 0
    x = random_raws(np.random.default_rng(0), Fixed(8, 0, False), (5, 4))
    check_stream(DataflowTop(g), x, ref_chain(g, x))


class Mystery(Op):
    """An op no hardware generator knows."""

    def infer(self, x):
        return x


def test_unsupported_op_names_the_node():
    b = GraphBuilder("c")
    v = b.add(Quantize(Fixed(8, 0, False)), b.input("x", Float(), (4, 4, 1)))
    g = b.build(b.add(Mystery(), v, name="odd_a"))
    with pytest.raises(NotImplementedError, match=r"Mystery 'odd_a': Mystery has no 'unrolled'"):
        generate_verilog(g)


def test_chain_errors():
    b = GraphBuilder("q")
    x = b.input("x", Float(), (4,))
    v = b.add(Quantize(Fixed(8, 0, False)), x)
    v = b.add(ReLU(), v)
    v = b.add(Dequantize(), v)
    v = b.add(Quantize(Fixed(8, 0, False)), v, name="requantize")
    with pytest.raises(ValueError, match=r"Dequantize 'dequantize0': float conversions are"):
        hardware_chain(b.build(v))
    with pytest.raises(
        ValueError, match=r"style must be one of 'unrolled', 'folded', 'sparse', not 'fold'"
    ):
        generate_verilog(random_mlp([3, 2]), style="fold")
    with pytest.raises(TypeError, match=r"unknown option 'pe' for style 'unrolled'"):
        generate_verilog(random_mlp([3, 2]), pe=4)
    with pytest.raises(ValueError, match=r"name must be a Verilog identifier, not 'a b'"):
        generate_verilog(random_mlp([3, 2]), name="a b")


def test_chain_without_float_edges():
    b = GraphBuilder("raw")
    v = b.input("x", Fixed(6, 0, True), (3,))
    v = b.add(Requant(Fixed(4, 0, True), shift=(1,)), v)
    g = b.build(v)
    d = generate_verilog(g)
    assert (d.in_width, d.in_signed, d.out_width, d.in_count) == (6, True, 4, 3)


def test_registry_names_the_ops_it_builds():
    """Ops every style builds besides the matrix ops (``dense_units``); every other IR op is
    refused by name (tested above)."""
    from pqflow.hwgen.amaranth import Folded, Unrolled, dense_units, op_unit
    from pqflow.ir import OPS

    supported = {c.__name__ for c in op_unit.registry if c is not object}
    assert {"Requant", "ReLU", "MultiThreshold", "Flatten", "Reshape"} <= supported
    assert {"MaxPool2d", "AvgPool2d"} <= supported  # pixel-stream pools (pool.py)
    assert supported <= set(OPS)
    assert {Unrolled, Folded} <= set(dense_units)
