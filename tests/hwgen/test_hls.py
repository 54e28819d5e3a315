"""HLS C++: every op C-simulated bit-exact against the oracle, styles, determinism, digits.

Small designs share one C-simulation binary (``csim_many``: one compile, cached per
design hash); g++ compiles with ``-Wall -Werror``, so passing means warning-free.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from toolcheck import tool_absent

from pqflow.hwgen import Design, Folded, HardwareError, Sparse, Unrolled
from pqflow.hwgen.hls import HLS_OPS, generate_hls, hls_boundary, render_hls
from pqflow.ir import (
    OPS,
    Add,
    AvgPool2d,
    BinaryConv2d,
    BinaryDense,
    Bipolar,
    ChannelGate,
    Conv2d,
    Dense,
    Dequantize,
    Fixed,
    Flatten,
    Float,
    GraphBuilder,
    MaxPool2d,
    MultiThreshold,
    Overflow,
    Quantize,
    ReLU,
    Requant,
    Reshape,
    Rounding,
    Sparsity,
    Weight,
)
from pqflow.sim.csim import ToolNotFound, csim, csim_many, find_ap_types, find_compiler


@pytest.fixture(scope="module", autouse=True)
def _toolchain():
    try:
        find_compiler()
        find_ap_types()
    except ToolNotFound as e:
        tool_absent(str(e))


def raws(rng, t: Fixed, shape, n=300) -> np.ndarray:
    """Random raws of ``t`` with both extremes present."""
    x = rng.integers(t.min_raw, t.max_raw + 1, size=(n, *shape))
    x.reshape(n, -1)[0] = t.min_raw
    x.reshape(n, -1)[1] = t.max_raw
    return x


def sparse_weight(rng, shape, t: Fixed, density=0.5) -> Weight:
    w = rng.integers(t.min_raw, t.max_raw + 1, size=shape)
    w[rng.random(shape) > density] = 0
    return Weight(w, t, Sparsity("unstructured"))


# --- small graphs, one per op family ---------------------------------------------------------

MODES = [(r, o) for r in Rounding for o in Overflow]


def requant_graph(rng, rounding, overflow, signed_out):
    """Per-channel mult (incl. negative, zero) and shift; and a uniform power-of-two one."""
    b = GraphBuilder(f"rq_{rounding}_{overflow}")
    xt = Fixed(12, 4, True)
    x = b.input("x", xt, (7,))
    to = Fixed(5, 1, signed_out)
    v = b.add(
        Requant(to, (1, 3, -2, 5, 7, 1, 0), (0, 1, 2, 3, 4, 6, 2), rounding, overflow), x, name="rq"
    )
    v = b.add(Reshape((7, 1)), v)  # one-channel items: the uniform requant loops over 7 items
    v = b.add(Requant(Fixed(3, 0, signed_out), (1,), (2,), rounding, overflow), v, name="rq2")
    return b.build(v), raws(rng, xt, (7,))


def mlp_graph(rng, signed_in, name="mlp"):
    """Quantize -> sparse Dense (bias) -> ReLU -> Requant -> Dense -> MultiThreshold."""
    b = GraphBuilder(name)
    x = b.input("x", Float(), (12,))
    v = b.add(Quantize(Fixed(6, 3, signed_in), Rounding.HALF_UP, Overflow.SATURATE), x)
    wt = Fixed(5, 2)
    bias = Weight(rng.integers(-200, 200, 8), Fixed(14, 5))
    v = b.add(Dense(sparse_weight(rng, (8, 12), wt), bias), v, name="fc0")
    v = b.add(ReLU(), v)
    v = b.add(Requant(Fixed(4, 2, False), (1,), (4,), Rounding.HALF_EVEN, Overflow.SATURATE), v)
    v = b.add(Dense(sparse_weight(rng, (6, 8), Fixed(3, 1), 0.7)), v, name="fc1")
    t = np.sort(rng.integers(-60, 60, (6, 3)), axis=1)
    v = b.add(MultiThreshold(Weight(t, Fixed(8, 3)), Fixed(3, 0, True), offset=-1), v)
    x = rng.normal(size=(300, 12)) * 2.5
    return b.build(v), x


def threshold_graph(rng):
    """Per-channel thresholds to a 1-bit Fixed, wrapped to signed, then a 1-bit signed ReLU."""
    b = GraphBuilder("thresholds")
    xt = Fixed(7, 2, False)
    x = b.input("x", xt, (6,))
    w = b.add(MultiThreshold(Weight(np.sort(rng.integers(0, 127, (6, 5)), 1), xt), Fixed(4, 0)), x)
    s = b.add(Requant(Fixed(1, 0, True), (1,), (0,), Rounding.FLOOR, Overflow.WRAP), w)
    s = b.add(ReLU(), s)  # signed 1-bit -> unsigned 1-bit
    return b.build(s), raws(rng, xt, (6,))


def add_graph(rng):
    """A residual Add of operands at different fracs (fan-out in array mode)."""
    b = GraphBuilder("add")
    xt = Fixed(8, 2, True)
    x = b.input("x", xt, (6,))
    r = b.add(Requant(Fixed(6, 4, True), (3,), (1,), Rounding.HALF_EVEN, Overflow.WRAP), x)
    v = b.add(Add(), x, r)
    v = b.add(Add(), v, x)
    return b.build(v), raws(rng, xt, (6,))


def binary_mlp_graph(rng, name="bnn"):
    """Quantize -> Dense(+-1) -> MT(Bipolar) -> BinaryDense -> MT(Bipolar) -> BinaryDense."""
    b = GraphBuilder(name)
    x = b.input("x", Float(), (16,))
    v = b.add(Quantize(Fixed(4, 2, True)), x)
    w = rng.choice([-1, 1], size=(24, 16))
    v = b.add(Dense(Weight(w, Fixed(2, 0))), v)
    v = b.add(MultiThreshold(Weight(rng.integers(-4, 4, (24, 1)), Fixed(8, 2)), Bipolar()), v)
    v = b.add(BinaryDense(Weight(rng.integers(0, 2, (70, 24)), Bipolar())), v)
    v = b.add(MultiThreshold(Weight(rng.integers(-3, 3, (1, 1)), Fixed(6, 0)), Bipolar()), v)
    v = b.add(BinaryDense(Weight(rng.integers(0, 2, (10, 70)), Bipolar())), v)
    return b.build(v), rng.normal(size=(300, 16))


def cnn_graph(rng, name="cnn"):
    """Conv2d (pad, bias) -> Requant -> ReLU -> MaxPool -> grouped strided Conv2d ->
    AvgPool -> Flatten -> Dense -> Dequantize."""
    b = GraphBuilder(name)
    x = b.input("x", Float(), (8, 8, 1))
    v = b.add(Quantize(Fixed(5, 4, False)), x)
    w = sparse_weight(rng, (4, 3, 3, 1), Fixed(6, 4), 0.8)
    v = b.add(Conv2d(w, Weight(rng.integers(-300, 300, 4), Fixed(16, 8)), padding=(1, 1, 1, 1)), v)
    v = b.add(Requant(Fixed(6, 3, True), (1,), (5,), Rounding.HALF_UP, Overflow.SATURATE), v)
    v = b.add(ReLU(), v)
    v = b.add(MaxPool2d((2, 2)), v)
    w2 = sparse_weight(rng, (4, 2, 2, 2), Fixed(4, 2), 0.9)
    v = b.add(Conv2d(w2, stride=(1, 1), padding=(0, 1, 0, 1), groups=2), v)
    v = b.add(AvgPool2d((2, 2), (2, 2)), v)
    v = b.add(Flatten(), v)
    v = b.add(Dense(sparse_weight(rng, (5, 16), Fixed(5, 2))), v)
    v = b.add(Dequantize(), v)
    return b.build(v), rng.random((200, 8, 8, 1))


def residual_cnn_graph(rng):
    """A residual block in stream mode: the input is split to a Conv branch and the Add."""
    b = GraphBuilder("res")
    xt = Fixed(6, 2, True)
    x = b.input("x", xt, (5, 5, 2))
    c = b.add(Conv2d(sparse_weight(rng, (2, 3, 3, 2), Fixed(4, 2)), padding=(1, 1, 1, 1)), x)
    c = b.add(Requant(Fixed(6, 2, True), (1,), (2,), Rounding.FLOOR, Overflow.SATURATE), c)
    v = b.add(Add(), x, c)
    v = b.add(MaxPool2d((2, 2), (1, 1)), v)
    return b.build(v), raws(rng, xt, (5, 5, 2), 100)


def binary_cnn_graph(rng):
    """MT(Bipolar) -> grouped strided BinaryConv2d -> MT(Bipolar) -> MaxPool (OR) ->
    Flatten -> BinaryDense."""
    b = GraphBuilder("bcnn")
    xt = Fixed(5, 0, True)
    x = b.input("x", xt, (7, 7, 4))
    v = b.add(MultiThreshold(Weight(rng.integers(-3, 3, (4, 1)), xt), Bipolar()), x)
    v = b.add(BinaryConv2d(Weight(rng.integers(0, 2, (6, 3, 3, 2)), Bipolar()), (2, 2), 2), v)
    v = b.add(MultiThreshold(Weight([[0]], Fixed(6, 0)), Bipolar()), v)
    v = b.add(MaxPool2d((2, 2), (1, 1)), v)
    v = b.add(Flatten(), v)
    v = b.add(BinaryDense(Weight(rng.integers(0, 2, (3, 24)), Bipolar())), v)
    return b.build(v), raws(rng, xt, (7, 7, 4), 100)


def folded(graph, pe: int, simd: int) -> Design:
    """Every matrix node of the Design folded, PE/SIMD reduced to divisors of its sizes
    (a convolution's matrix is (out, kh * kw * in))."""
    from math import gcd

    from pqflow.hwgen.design import MATRIX_OPS

    impls = {}
    for n in graph.nodes:
        if isinstance(n.op, MATRIX_OPS):
            w = n.op.weight.shape
            n_out, n_in = (w[0], w[1] * w[2] * w[3] * n.op.groups) if len(w) == 4 else w
            impls[n.name] = Folded(gcd(pe, n_out), gcd(simd, n_in))
    return Design(graph, impls)


def gate_graphs(rng):
    """ChannelGate on pixels (stream) with the saliency from a global average pool, and
    on a vector (array); 2-bit saliencies, so ties (the lower channel wins) are common."""
    b = GraphBuilder("gate_stream")
    xt = Fixed(4, 1, True)
    x = b.input("x", xt, (4, 4, 6))
    s = b.add(Flatten(), b.add(AvgPool2d((4, 4), (4, 4)), x))
    s = b.add(Requant(Fixed(2, 0, False), (1,), (2,), Rounding.FLOOR, Overflow.SATURATE), s)
    stream = b.build(b.add(ChannelGate(3, scale=True), x, s)), raws(rng, xt, (4, 4, 6), 200)
    b = GraphBuilder("gate_array")
    x = b.input("x", xt, (7,))
    s = b.add(Requant(Fixed(2, 1, True), (1,), (1,), Rounding.HALF_UP, Overflow.WRAP), x)
    array = b.build(b.add(ChannelGate(2, scale=False), x, s)), raws(rng, xt, (7,), 200)
    return stream, array


def small_cases():
    rng = np.random.default_rng(7)
    cases = {}
    for i, (r, o) in enumerate(MODES):
        cases[f"requant_{r}_{o}"] = requant_graph(rng, r, o, signed_out=bool(i % 2))
    g, x = mlp_graph(rng, True)
    cases["mlp_unrolled"] = (g, x)
    cases["mlp_folded"] = (Design.uniform(g, "folded", pe=2, simd=4), x)
    g, x = mlp_graph(rng, False, "mlp_u")
    cases["mlp_mixed"] = (Design(g, {"fc0": Folded(4, 3), "fc1": Unrolled()}), x)
    cases["mlp_sparse"] = (Design(g, {"fc0": Sparse(3), "fc1": Sparse(4)}), x)
    cases["mlp_sparse_mixed"] = (Design(g, {"fc0": Unrolled(), "fc1": Sparse(1)}), x)
    cases["thresholds"] = threshold_graph(rng)
    cases["add"] = add_graph(rng)
    g, x = binary_mlp_graph(rng)
    cases["bnn_unrolled"] = (g, x)
    cases["bnn_folded"] = (
        Design(
            g, {"dense0": Folded(4, 4), "binarydense0": Folded(7, 6), "binarydense1": Folded(2, 5)}
        ),
        x,
    )
    g, x = cnn_graph(rng)
    cases["cnn_unrolled"] = (g, x)
    cases["cnn_folded"] = (folded(g, pe=1, simd=4), x)
    cases["residual"] = residual_cnn_graph(rng)
    cases["bcnn"] = binary_cnn_graph(rng)
    cases["gate_stream"], cases["gate_array"] = gate_graphs(rng)
    return cases


@pytest.fixture(scope="module")
def small_results():
    cases = small_cases()
    results = csim_many(list(cases.values()), top="op")
    return dict(zip(cases, results, strict=True)), cases


def test_every_op_has_an_hls_template():
    edges = {"Quantize", "Dequantize"}
    missing = sorted(set(OPS) - edges - {c.__name__ for c in HLS_OPS})
    assert not missing, f"ops without an HLS template: {missing}"


def test_small_designs_match_the_oracle(small_results):
    results, cases = small_results
    bad = {k: r.mismatches for k, r in results.items() if not r.passed}
    assert not bad, f"C simulation differs from the oracle: {bad}"
    for r in results.values():
        assert np.array_equal(r.outputs, r.expected)
    # the cases cover every op the emitter supports
    seen = set()
    for src, _ in cases.values():
        g = src.graph if isinstance(src, Design) else src
        seen |= {type(n.op) for n in g.nodes}
    assert set(HLS_OPS) <= seen


def test_all_rounding_and_overflow_modes_are_exercised(small_results):
    results, cases = small_results
    for r, o in MODES:
        res = results[f"requant_{r}_{o}"]
        assert res.passed
        # the cases really hit ties and out-of-range values
        g, x = cases[f"requant_{r}_{o}"]
        assert np.ptp(res.outputs) > 0


def test_generation_is_deterministic(tmp_path):
    rng = np.random.default_rng(3)
    g, _ = cnn_graph(rng)
    a = generate_hls(folded(g, pe=5, simd=2), out_dir=tmp_path / "a")
    b = generate_hls(folded(cnn_graph(np.random.default_rng(3))[0], 5, 2), out_dir=tmp_path / "b")
    assert a.digest == b.digest
    for rel in a.files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    # the sparse style too: same graph, same row lists, same bytes
    g1, _ = mlp_graph(np.random.default_rng(3), True)
    g2, _ = mlp_graph(np.random.default_rng(3), True)
    s1, s2 = render_hls(g1, "sparse", pe=3), render_hls(g2, "sparse", pe=3)
    assert s1.files == s2.files and s1.digest == s2.digest != a.digest
    names = sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").rglob("*"))
    assert names == sorted(
        [
            "firmware",
            "firmware/pqflow_common.h",
            "firmware/pqflow_top.cpp",
            "firmware/pqflow_top.h",
            "run_hls.tcl",
            "tb",
            "tb/pqflow_top_tb.cpp",
        ]
    )


def test_unrolled_drops_zero_weights_and_folded_keeps_a_rom():
    rng = np.random.default_rng(4)
    g, _ = mlp_graph(rng, True)
    w0 = g.node("fc0").op.weight.data
    src = render_hls(g, "unrolled").files["firmware/pqflow_top.cpp"]
    body = src.split("static void fc0_kernel")[1].split("static void fc0(")[0]
    terms = len(re.findall(r"a [+-]= x\[", body))
    assert terms == np.count_nonzero(w0) < w0.size
    assert "UNROLL" in src and "PQ_HLS(PIPELINE II=1)" in src
    folded = render_hls(g, "folded", pe=2, simd=4).files["firmware/pqflow_top.cpp"]
    assert "static const int8_t W[8][12] = {  // raws of ap_int<5>" in folded
    assert "PQ_HLS(ARRAY_PARTITION variable=W cyclic factor=2 dim=1)" in folded
    assert "PQ_HLS(ARRAY_PARTITION variable=W cyclic factor=4 dim=2)" in folded


def test_modes_map_one_to_one_to_ap_fixed():
    rng = np.random.default_rng(5)
    for r, o in MODES:
        g, _ = requant_graph(rng, r, o, True)
        src = render_hls(g).files["firmware/pqflow_top.cpp"]
        q = {"floor": "AP_TRN", "half_up": "AP_RND", "half_even": "AP_RND_CONV"}[r]
        ov = {"saturate": "AP_SAT", "wrap": "AP_WRAP"}[o]
        assert f", {q}, {ov}>(" in src


def test_interfaces_and_tcl():
    rng = np.random.default_rng(6)
    g, _ = cnn_graph(rng)
    p = render_hls(g, top="my_cnn")
    assert p.mode == "stream"
    h = p.files["firmware/my_cnn.h"]
    assert "void my_cnn(hls::stream<my_cnn_ns::quantize0_item>& x" in h
    assert "PQ_HLS(DATAFLOW)" in p.files["firmware/my_cnn.cpp"]
    tcl = p.files["run_hls.tcl"]
    for cmd in ("set_top my_cnn", "csim_design", "csynth_design", "cosim_design"):
        assert cmd in tcl
    g2, _ = mlp_graph(rng, True)
    p2 = render_hls(g2)
    assert p2.mode == "array"
    assert (
        "void pqflow_top(const pqflow_top_ns::quantize0_t x[12]"
        in p2.files["firmware/pqflow_top.h"]
    )


def test_boundary_matches_the_rtl_chain():
    rng = np.random.default_rng(8)
    g, _ = cnn_graph(rng)
    src, nodes, dst = hls_boundary(g)
    assert src == "quantize0" and dst == "dense0"
    assert [n.name for n in nodes] == [n.name for n in g.nodes[1:-1]]
    top = pytest.importorskip("pqflow.hwgen.amaranth.top")
    g2, _ = mlp_graph(rng, True)
    in_t, chain, out_t = top.hardware_chain(g2)
    s2, n2, d2 = hls_boundary(g2)
    assert [n.name for n in chain] == [n.name for n in n2]
    assert g2.types()[s2] == in_t and g2.types()[d2] == out_t


def test_sparse_stores_only_nonzeros_in_balanced_row_lists():
    rng = np.random.default_rng(13)
    g, _ = mlp_graph(rng, True)
    w0 = g.node("fc0").op.weight.data
    src = render_hls(g, "sparse", pe=3).files["firmware/pqflow_top.cpp"]
    body = src.split("static void fc0_kernel")[1].split("static void fc0(")[0]
    nnz = [int(v) for v in re.search(r"nonzeros per PE ([\d, ]+) \(", body)[1].split(", ")]
    assert sum(nnz) == np.count_nonzero(w0) and len(nnz) == 3
    assert max(nnz) - min(nnz) <= np.count_nonzero(w0, axis=1).max()  # greedy balance
    assert f"static const uint8_t COL[3][{max(nnz)}]" in body
    assert "PQ_HLS(PIPELINE II=1)" in body and "PQ_HLS(ARRAY_PARTITION variable=VAL" in body
    # every stored entry is a nonzero weight (the padding of shorter PEs aside)
    rows = re.search(r"VAL\[3\]\[\d+\] = \{(.*?)\n    \};", body, re.S)[1]
    vals = [[int(v) for v in r.strip(" {},").split(", ")] for r in rows.strip().splitlines()]
    assert [sum(v != 0 for v in r) for r in vals] == nnz


def test_errors_name_the_node():
    rng = np.random.default_rng(9)
    g, _ = binary_mlp_graph(rng)
    with pytest.raises(HardwareError, match="'binarydense0'.*no sparse form"):
        render_hls(Design.uniform(g, "sparse", pe=2))
    with pytest.raises(Exception, match="must be a C identifier"):
        render_hls(g, top="1bad")
    with pytest.raises(Exception, match="'unrolled', 'folded' or 'sparse'"):
        render_hls(g, "systolic")


def test_vectors_written_for_vitis(tmp_path):
    rng = np.random.default_rng(10)
    g, x = mlp_graph(rng, True)
    p = generate_hls(g, out_dir=tmp_path, x=x[:5])
    lines = (tmp_path / "tb" / "vectors.txt").read_text().splitlines()
    assert lines[0] == "5 12 6" and len(lines) == 6
    assert p.out_dir == tmp_path


# --- the digits MLP: dense and 80%-sparse, whole test split ----------------------------------


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from hls_digits import digits_mlps

    return digits_mlps()


@pytest.mark.slow
def test_digits_mlp_dense_and_sparse(digits):
    data, dense, sparse = digits
    x = data.x_test
    results = csim_many(
        [
            (dense, x),
            (sparse, x),
            (Design.uniform(dense, "folded", pe=2, simd=4), x),
            (Design.uniform(sparse, "sparse", pe=4), x),
        ],
        top="digits",
    )
    for r in results:
        assert r.passed, f"{r.top}: {r.mismatches} of {len(x)} samples differ"
        assert r.outputs.shape == (len(x), 10)
    acc = np.mean(results[0].outputs.argmax(1) == data.y_test)
    assert acc > 0.9
    w = [n.op.weight for n in sparse.nodes if isinstance(n.op, Dense)]
    assert sum(x.nnz for x in w) < 0.3 * sum(x.data.size for x in w)


def test_csim_single_design():
    rng = np.random.default_rng(11)
    g, x = add_graph(rng)
    r = csim(g, x[:50])
    assert r.passed and r.mismatches == 0 and r.outputs.shape == (50, 6)
    assert Path(r.binary).is_file()


def test_written_project_compiles_alone_warning_free(tmp_path):
    """The project as a Vitis user gets it: its own main, -Wall -Wextra -Werror, vectors."""
    import subprocess

    rng = np.random.default_rng(12)
    g, x = binary_cnn_graph(rng)
    p = generate_hls(g, "unrolled", tmp_path, top="bcnn", x=x[:20])
    cmd = [find_compiler(), "-std=c++17", "-Wall", "-Wextra", "-Werror", "-O0"]
    cmd += ["-isystem", str(find_ap_types()), *(str(tmp_path / s) for s in p.sources)]
    subprocess.run([*cmd, "-o", str(tmp_path / "csim")], check=True, capture_output=True)
    r = subprocess.run(
        [str(tmp_path / "csim"), str(tmp_path / "tb" / "vectors.txt")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "20 samples, 0 mismatches" in r.stdout, r.stderr
