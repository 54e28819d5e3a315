"""The sliding-window generator, convolutions in every style and the pools, in cocotb.

One chain graph holds every case, so each simulator builds a single design: a
non-square (9, 9, 3) signed input; a 3x2 convolution with stride (2, 1) and asymmetric
padding (unrolled), a 3x3 depthwise convolution (folded), a grouped 1x3 convolution with
stride (1, 2) (sparse), a 2x2 max pool with stride 1, a 2x1 average pool; thresholds to
Bipolar, a 1x2 BinaryConv2d (folded XNOR-popcount), a Bipolar max pool (OR), a grouped
1x1 BinaryConv2d (unrolled, the Dense over the input bits) and a 1x1 BinaryConv2d
(sparse, the same twin): a pixel stream out, six beats of three raws per sample.

The RTL must equal the Numba oracle beat for beat with random input stalls and output
back-pressure; the window order and the schedules are checked in Python.
"""

from __future__ import annotations

import numpy as np
import pytest

from pqflow.hwgen import (
    Design,
    DesignError,
    Folded,
    HardwareError,
    Sparse,
    Unrolled,
    generate_verilog,
)
from pqflow.hwgen.amaranth.schedule import Schedule
from pqflow.hwgen.amaranth.top import DataflowTop
from pqflow.hwgen.amaranth.window import WindowGenerator, conv_as_dense, window_need
from pqflow.ir import (
    AvgPool2d,
    BinaryConv2d,
    Bipolar,
    Conv2d,
    Fixed,
    GraphBuilder,
    MaxPool2d,
    MultiThreshold,
    Requant,
    Reshape,
    Weight,
)
from pqflow.kernels import run
from pqflow.sim.graph import hardware_vectors, verify_graph

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

S4 = Fixed(4, 0, True)


def _requant(b: GraphBuilder, v: str, x: np.ndarray, to: Fixed) -> str:
    """A Requant whose shift keeps about one output in ten saturating."""
    acc = run(b.build(v), x)
    big = int(np.quantile(np.abs(acc), 0.9)) + 1
    shift = max(0, big.bit_length() - to.width + (1 if to.signed else 0))
    return b.add(Requant(to, (1,), (shift,)), v)


def _w(rng, shape, t: Fixed = S4) -> Weight:
    w = rng.integers(t.min_raw, t.max_raw + 1, shape)
    w[rng.random(shape) < 0.3] = 0
    return Weight(w, t)


def _bipolar(b: GraphBuilder, v: str, x: np.ndarray) -> str:
    """Thresholds to Bipolar at each channel's median, so both signs occur."""
    t = b.type_of(v).dtype
    vals = run(b.build(v), x).reshape(-1, b.type_of(v).shape[-1])
    th = np.median(vals, axis=0).astype(np.int64)[:, None]
    return b.add(MultiThreshold(Weight(th, Fixed(t.width + 1, t.frac, True)), Bipolar()), v)


def window_chain(n: int, seed: int = 0):
    """(Design, inputs): every window, convolution and pool case in one chain."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("windows")
    v = b.input("x", S4, (9, 9, 3))
    x = rng.integers(S4.min_raw, S4.max_raw + 1, (n, 9, 9, 3))
    x[: n // 8] = 0  # zero images: the sparse engine's skipping

    def bw(shape) -> Weight:
        return Weight(rng.integers(0, 2, shape), Bipolar())

    v = b.add(Conv2d(_w(rng, (4, 3, 2, 3)), stride=(2, 1), padding=(1, 0, 2, 1)), v, name="c1")
    v = _requant(b, v, x, S4)
    v = b.add(Conv2d(_w(rng, (4, 3, 3, 1)), padding=(1, 1, 1, 1), groups=4), v, name="dw")
    v = _requant(b, v, x, S4)
    v = b.add(
        Conv2d(_w(rng, (4, 1, 3, 2)), stride=(1, 2), padding=(0, 0, 1, 1), groups=2), v, name="g2"
    )
    v = _requant(b, v, x, S4)
    v = b.add(MaxPool2d((2, 2), (1, 1)), v)
    v = b.add(AvgPool2d((2, 1), (1, 1)), v)
    v = _bipolar(b, v, x)
    v = b.add(BinaryConv2d(bw((4, 1, 2, 4))), v, name="b1")
    v = _bipolar(b, v, x)
    v = b.add(MaxPool2d((1, 2), (1, 1)), v)
    v = b.add(BinaryConv2d(bw((4, 1, 1, 2)), groups=2), v, name="b2")
    v = _bipolar(b, v, x)
    v = b.add(BinaryConv2d(bw((3, 1, 1, 4))), v, name="b3")
    impls = {"c1": Unrolled(levels_per_stage=2), "dw": Folded(pe=2, simd=9), "g2": Sparse(pe=2)}
    impls |= {"b1": Folded(pe=2, simd=8), "b2": Unrolled(), "b3": Sparse(pe=3)}
    return Design(b.build(v), impls, name="windows"), x


def test_the_chain_covers_the_cases():
    d, x = window_chain(40)
    shapes = {n.name: n.type.shape for n in d.graph.nodes}
    assert shapes["c1"] == (4, 11, 4) and shapes["g2"] == (4, 6, 4) and shapes["b3"] == (2, 3, 3)
    ins, out = hardware_vectors(d.graph, x)
    assert ins.shape == (40 * 81, 3) and out.shape == (40 * 6, 3)
    assert len(np.unique(out.reshape(40, -1), axis=0)) > 20  # the data reaches the output
    vals = run(d.graph, x, outputs=[n.name for n in d.graph.nodes])
    for n in d.graph.nodes:  # every stage varies (no constant layer hides a bug)
        assert len(np.unique(vals[n.name])) > 1, n.name
    top = DataflowTop(d)
    assert (top.in_beats, top.in_count, top.out_beats, top.out_count) == (81, 3, 6, 3)


def test_window_order_is_the_conv_weight_order():
    """A window generator feeding an identity Dense reproduces the windows the oracle's
    convolution reads: check conv_as_dense and the element order with numpy."""
    rng = np.random.default_rng(3)
    w = rng.integers(-7, 8, (6, 2, 3, 2))
    op = Conv2d(Weight(w, S4), stride=(1, 2), padding=(0, 1, 2, 0), groups=2)
    dense, bits = conv_as_dense(op, 4)
    assert bits is None and dense.weight.shape == (6, 2 * 3 * 4)
    x = rng.integers(-8, 8, (5, 6, 4))
    xp = np.pad(x, ((0, 1), (2, 0), (0, 0)))
    b = GraphBuilder("one")
    y = run(b.build(b.add(op, b.input("x", S4, (5, 6, 4)))), x[None])[0]
    for oy in range(y.shape[0]):
        for ox in range(y.shape[1]):
            window = xp[oy : oy + 2, ox * 2 : ox * 2 + 3, :].reshape(-1)
            assert np.array_equal(dense.weight.data @ window, y[oy, ox])


def test_window_schedule():
    win = WindowGenerator(S4, (4, 5, 2), (3, 3), (2, 2), (1, 1, 1, 1))
    assert win.out_shape == (2, 3) and win.n_out == 18
    # output (0, 0) needs rows 0..1 up to column 1; (1, 2) needs everything
    assert window_need((4, 5), (3, 3), (2, 2), (1, 1, 1, 1)) == (7, 9, 10, 17, 19, 20)
    assert win.schedule == Schedule(20, 6, (7, 9, 10, 17, 19, 20), 1, 42)
    with pytest.raises(ValueError, match=r"kernel \(5, 5\) is larger than the padded input"):
        WindowGenerator(S4, (3, 3, 1), (5, 5), padding=(0, 0, 0, 1))


def test_top_cycles_per_vector_is_per_image():
    d, _ = window_chain(1)
    top = DataflowTop(d)
    units = dict(top.units)
    assert units["c1"].cycles_per_vector == 10 * 12  # Hp * Wp of the padded input
    assert units["c1"].schedule.out_beats == 44
    # a window FIFO only before slow engines; it costs one cycle of latency
    assert units["c1"].fifo_depth == 0 and units["dw"].fifo_depth > 0
    assert units["dw"].latency == 1 + 1 + units["dw"].engine.latency
    assert top.cycles_per_vector is None  # the sparse engines are data dependent
    du = Design.uniform(d.graph, "folded", pe=1, simd=1)
    top = DataflowTop(du)
    fold_dw = 44 * 4 * 36  # 44 windows x (4 outputs x 36 window inputs), the slowest unit
    assert dict(top.units)["c1"].cycles_per_vector == 44 * 4 * 18
    assert top.cycles_per_vector == fold_dw == top.schedule.cycles_per_sample


def test_conv_folding_is_checked_per_window_matrix():
    d, _ = window_chain(1)
    with pytest.raises(DesignError, match=r"Conv2d 'dw': folded simd=5 must divide its 36 inputs"):
        Design(d.graph, {**dict(d.impls), "dw": Folded(pe=1, simd=5)})
    with pytest.raises(DesignError, match=r"Conv2d 'c1': folded pe=3 must divide its 4 outputs"):
        Design(d.graph, {**dict(d.impls), "c1": Folded(pe=3)})


def test_unsupported_reshape_names_the_node():
    b = GraphBuilder("rs")
    v = b.add(Reshape((4, 2, 4)), b.input("x", S4, (4, 4, 2)), name="rs")
    with pytest.raises(HardwareError, match=r"Reshape 'rs'.*supported: a pixel stream to a"):
        generate_verilog(b.build(v))


def test_windows_and_pools_in_rtl(sim):
    d, x = window_chain(40 if sim == "verilator" else 12)
    _, expected = hardware_vectors(d.graph, x)
    v = generate_verilog(d)
    assert (v.in_beats, v.out_beats) == (81, 6)
    res = verify_graph(v, d.graph, x, sim=sim, seed=7, timing_vectors=4)
    assert res.passed and res.n_mismatches == 0, res.summary()
    assert np.array_equal(res.outputs, expected)
    assert res.ii_cycles >= 81  # reads 81 pixels per image
    # the schedule is a lower bound: the first output beat needs need[0] input beats
    sched = DataflowTop(d).schedule
    assert res.latency_cycles >= sched.need[0] - 1 + sched.latency


def test_axis_tlast_marks_the_last_beat_of_each_sample():
    """AXI-Stream: a pixel-stream output is one packet per sample (Amaranth simulator)."""
    from amaranth.sim import Simulator

    from pqflow.hwgen.amaranth.axis import AxisTop

    b = GraphBuilder("pool")
    g = b.build(b.add(MaxPool2d((2, 2)), b.input("x", S4, (4, 4, 1))))
    dut = AxisTop(DataflowTop(g))
    x = np.random.default_rng(0).integers(-8, 8, (3, 4, 4, 1))
    got: list[tuple[int, int]] = []

    async def bench(ctx):
        ctx.set(dut.ap_rst_n, 1)
        ctx.set(dut.m_axis_tready, 1)
        for v in x.reshape(-1):
            ctx.set(dut.s_axis_tdata, int(v) & 0xF)
            ctx.set(dut.s_axis_tvalid, 1)
            while True:
                _, _, ready, valid, data, last = await ctx.tick("sync").sample(
                    dut.s_axis_tready, dut.m_axis_tvalid, dut.m_axis_tdata, dut.m_axis_tlast
                )
                if valid:
                    got.append((data, last))
                if ready:
                    break
        ctx.set(dut.s_axis_tvalid, 0)
        for _ in range(8):
            _, _, valid, data, last = await ctx.tick("sync").sample(
                dut.m_axis_tvalid, dut.m_axis_tdata, dut.m_axis_tlast
            )
            if valid:
                got.append((data, last))

    async def clock(ctx):  # ap_clk drives the design's sync domain
        while True:
            ctx.set(dut.ap_clk, 0)
            await ctx.delay(0.5e-6)
            ctx.set(dut.ap_clk, 1)
            await ctx.delay(0.5e-6)

    sim = Simulator(dut)
    sim.add_process(clock)
    sim.add_testbench(bench)
    sim.run()
    want = x.reshape(3, 2, 2, 2, 2).max(axis=(2, 4)).reshape(-1) & 0xF
    assert [d for d, _ in got] == list(want)
    assert [t for _, t in got] == [0, 0, 0, 1] * 3


def test_pixel_stream_verilog_is_deterministic():
    d, _ = window_chain(1)
    a, b = generate_verilog(d), generate_verilog(d)
    assert a.text == b.text and a.digest == b.digest
    assert (a.in_count, a.in_beats, a.out_count, a.out_beats) == (3, 81, 3, 6)


def test_cli_gen_records_the_beats_of_a_pixel_stream(tmp_path, capsys):
    import json

    from pqflow.cli import main
    from pqflow.ir.serialize import save

    d, _ = window_chain(1)
    save(d.graph, tmp_path / "windows.json")
    out = tmp_path / "out"
    args = ["gen", tmp_path / "windows.json", "--style", "folded", "--pe", "1", "--simd", "1"]
    try:
        main([str(a) for a in [*args, "-o", out]])
    except SystemExit as e:
        assert e.code == 0, capsys.readouterr().err
    info = json.loads((out / "design.json").read_text())
    assert info["input"] == {"count": 3, "width": 4, "signed": True, "beats": 81}
    assert info["output"]["beats"] == 6 and info["output"]["count"] == 3
    assert info["cycles_per_vector"] == 44 * 4 * 36  # per image: the depthwise conv, folded
