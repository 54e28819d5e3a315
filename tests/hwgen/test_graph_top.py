"""DAG tops on Amaranth's simulator: fork, skip FIFO, Add, and the analytic FIFO sizing.

The sizing is checked both ways: the computed depth runs at the analytic II, one entry
less runs slower (vectors) or deadlocks (a unit with a lead, through a test fusion), and
an override below the computed depth is refused by a one-line HardwareError.
"""

from __future__ import annotations

import numpy as np
import pytest
from hwgen_helpers import run_stream
from residual_helpers import frame_fusion, frame_residual, residual_mlp  # noqa: F401 (fixture)

from pqflow.hwgen import Design, DesignError, Folded, HardwareError, generate_verilog
from pqflow.hwgen.amaranth import graph_top
from pqflow.hwgen.amaranth.common import vector_signature
from pqflow.hwgen.amaranth.fifo import StreamFork
from pqflow.hwgen.amaranth.graph_top import (
    DataflowGraphTop,
    dataflow_top,
    hardware_graph,
)
from pqflow.hwgen.amaranth.schedule import Arrival, Schedule, elementwise, fifo_depths, lead
from pqflow.hwgen.amaranth.top import DataflowTop
from pqflow.ir import (
    Dequantize,
    Fixed,
    Float,
    GraphBuilder,
    Quantize,
    ReLU,
)
from pqflow.kernels import run


def _inputs(graph, count: int, seed: int = 1) -> np.ndarray:
    t = graph.inputs[0].type
    return np.random.default_rng(seed).integers(
        t.dtype.min_raw, t.dtype.max_raw + 1, (count, *t.shape)
    )


def _ii(outs: list[int]) -> float:
    return (outs[-1] - outs[0]) / (len(outs) - 1)


def _unchecked(monkeypatch) -> None:
    """Let a too-small override through, to show what the sizing prevents."""
    monkeypatch.setattr(graph_top, "_check_depth", lambda *args: None)


@pytest.mark.parametrize("blocks", [1, 2])
def test_residual_is_bit_exact_and_at_the_analytic_ii(blocks):
    g = residual_mlp(blocks=blocks)
    x = _inputs(g, 60)
    top = DataflowGraphTop(g)
    assert set(top.fifo_depths) == {f"add{k}" for k in range(blocks)}
    got, _, _ = run_stream(top, x, seed=3)
    assert np.array_equal(got, run(g, x))
    top = DataflowGraphTop(g)
    got, ins, outs = run_stream(top, x, stall_prob=0, backpressure_prob=0)
    assert np.array_equal(got, run(g, x))
    assert outs[0] - ins[0] == top.latency
    assert _ii(outs) == top.cycles_per_vector == 1


@pytest.mark.parametrize("folded", [False, True])
def test_the_computed_depth_keeps_the_analytic_ii(folded, monkeypatch):
    """The computed depth reaches the analytic II; at II 1 one entry less does not (the
    sizing is tight; at a larger II a late write can slip within the II, so it is safe)."""
    g = residual_mlp(seed=2)
    d = Design(g, {"fc0a": Folded(pe=2, simd=3), "fc0b": Folded(pe=3, simd=2)}) if folded else g
    x = _inputs(g, 40)
    top = DataflowGraphTop(d)
    depth, analytic = top.fifo_depths["add0"], top.cycles_per_vector
    assert analytic == (6 if folded else 1)  # (6/2)*(6/3) cycles per vector when folded
    assert depth > 2  # the long path's latency is buffered, not just one beat
    _unchecked(monkeypatch)
    iis = {}
    for k in (depth, depth - 1):
        top = DataflowGraphTop(d, fifo_depths={"add0": k})
        got, ins, outs = run_stream(top, x, stall_prob=0, backpressure_prob=0)
        assert np.array_equal(got, run(g, x))
        iis[k] = _ii(outs)
        if k == depth:
            assert outs[0] - ins[0] == top.latency
    assert iis[depth] == analytic
    if not folded:
        assert iis[depth - 1] > analytic


def test_an_override_below_the_need_is_one_line_naming_fifo_need_and_fix():
    g = residual_mlp()
    need = DataflowGraphTop(g).fifo_depths["add0"]
    with pytest.raises(HardwareError) as e:
        generate_verilog(g, fifo_depths={"add0": need - 1})
    msg = str(e.value)
    assert "\n" not in msg
    assert "Add 'add0'" in msg and f"needs {need}" in msg
    assert f"fifo_depths['add0'] >= {need}" in msg
    d = generate_verilog(g, fifo_depths={"add0": need + 3})
    assert d.fifo_depths == (("add0", need + 3),)
    with pytest.raises(DesignError, match=r"'fc0a' is not an Add with a skip FIFO.*add0"):
        generate_verilog(g, fifo_depths={"fc0a": 4})


def test_chains_keep_their_top_and_dags_are_deterministic():
    b = GraphBuilder("chain")
    v = b.add(Quantize(Fixed(6, 3, True)), b.input("x", Float(), (4,)))
    v = b.add(ReLU(), v)
    chain = b.build(b.add(Dequantize(), v))
    assert type(dataflow_top(Design.uniform(chain))) is DataflowTop
    assert generate_verilog(chain).fifo_depths == ()
    g = residual_mlp(blocks=2)
    assert isinstance(dataflow_top(Design.uniform(g)), DataflowGraphTop)
    a, c = generate_verilog(g), generate_verilog(g)
    assert a.text == c.text and "skip_add1" in a.text and "fork_" in a.text


def test_hardware_graph_errors():
    b = GraphBuilder("two")
    x = b.input("x", Fixed(6, 0, True), (4,))
    r = b.add(ReLU(), x, name="r")
    dead = b.add(ReLU(), x, name="dead")
    with pytest.raises(ValueError, match=r"ReLU 'dead': does not feed the output"):
        hardware_graph(b.build(r))
    with pytest.raises(ValueError, match=r"must have one input and one output"):
        hardware_graph(b.build(r, dead))
    hw = hardware_graph(residual_mlp())
    assert (hw.source, hw.sink, hw.is_chain) == ("x", "rq0c", False)


def test_fork_gives_every_beat_to_every_consumer_once():
    """Two consumers with independent random back-pressure each see the whole stream."""
    from amaranth.sim import Simulator

    sig = vector_signature(Fixed(8, 0, False), 1)
    dut = StreamFork(sig, 2)
    rng = np.random.default_rng(0)
    words = [int(v) for v in rng.integers(0, 256, 200)]
    got = [[], []]

    async def producer(ctx):
        for w in words:
            ctx.set(dut.i.payload.as_value(), w)
            ctx.set(dut.i.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                if ready:
                    break
        ctx.set(dut.i.valid, 0)

    def consumer(k, p):
        async def bench(ctx):
            r = np.random.default_rng(k + 1)
            for _ in range(2000):
                ready = r.random() >= p
                ctx.set(dut.o[k].ready, ready)
                _, _, valid, word = await ctx.tick().sample(
                    dut.o[k].valid, dut.o[k].payload.as_value()
                )
                if valid and ready:
                    got[k].append(word)

        return bench

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer(0, 0.2))
    sim.add_testbench(consumer(1, 0.7))
    sim.run()
    assert got[0] == words and got[1] == words


@pytest.mark.usefixtures("frame_fusion")
def test_a_lead_sizes_the_fifo_and_a_smaller_one_deadlocks(monkeypatch):
    g = frame_residual()
    x = _inputs(g, 12)
    expected = run(g, x).reshape(-1, 2)  # beats: one pixel each
    beats = x.reshape(-1, 2)
    top = DataflowGraphTop(g)
    dead, full = top.fifo_needs["add"]
    assert dead == 11  # a whole sample of 3 x 4 pixels but the one the fork holds
    assert top.fifo_depths["add"] == full >= dead
    got, _, _ = run_stream(top, beats, seed=4)
    assert np.array_equal(got, expected)
    with pytest.raises(HardwareError, match=rf"depth {dead - 1} deadlocks, it needs {full}"):
        DataflowGraphTop(g, fifo_depths={"add": dead - 1})
    _unchecked(monkeypatch)
    with pytest.raises(AssertionError, match="no progress"):
        run_stream(DataflowGraphTop(g, fifo_depths={"add": dead - 1}), beats, timeout=500)


def test_lead_counts_the_latency_in_flight():
    fast, slow = elementwise(1, 0), elementwise(1, 5)
    assert lead(fast, slow) == 0  # the fork holds the one beat: no deadlock
    assert lead(fast, slow, ii=1) == 6  # five more beats are in flight at one per cycle
    assert lead(fast, slow, ii=5) == 2  # ... or one more at one per five cycles
    window = Schedule(16, 16, tuple(min(j + 6, 16) for j in range(16)), 1, 16)
    assert lead(elementwise(16, 0), window) == 5
    assert lead(elementwise(16, 0), window, ii=16) == 7
    a, b = Arrival.source(4), Arrival.source(4).through(elementwise(4, 3))
    assert fifo_depths(a, b) == (0, 0)
    assert fifo_depths(a, b, ii=4, fifo_latency=0) == (0, 4)  # 3 in flight + 1


def test_a_three_way_fork_and_a_self_add():
    """x feeds a block, its Add and a second Add past the block (a long skip); the last
    node adds a value to itself (a fork into both operands, no FIFO)."""
    from pqflow.ir import Add, Dense, Requant, Weight

    rng = np.random.default_rng(9)
    b = GraphBuilder("fork3")
    x = b.input("x", Fixed(6, 3, True), (5,))
    v = b.add(Dense(Weight(rng.integers(-16, 16, (5, 5)), Fixed(5, 2, True))), x, name="fc")
    v = b.add(Requant(Fixed(7, 4, True), (3,), (5,)), v, name="rq")
    a0 = b.add(Add(), v, x, name="add0")
    a1 = b.add(Add(), x, a0, name="add1")
    g = b.build(b.add(Add(), a1, a1, name="twice"))
    top = DataflowGraphTop(g)
    assert set(top.fifo_depths) == {"add0", "add1"}  # not "twice": its operands arrive together
    assert top.fifo_operands == {"add0": "x", "add1": "x"}
    assert top.fifo_depths["add1"] > top.fifo_depths["add0"]  # x waits longer for add0
    x = _inputs(g, 50)
    got, _, _ = run_stream(top, x, seed=5)
    assert np.array_equal(got, run(g, x))
    top = DataflowGraphTop(g)
    got, ins, outs = run_stream(top, x, stall_prob=0, backpressure_prob=0)
    assert np.array_equal(got, run(g, x))
    assert _ii(outs) == 1 and outs[0] - ins[0] == top.latency


@pytest.mark.parametrize("seed", range(4))
def test_add_aligns_random_types_exactly(seed):
    """Add of two operands of random widths, signs and fracs (negative too): the larger
    frac wins, the other operand is shifted left, the sum is exact (pysim vs oracle)."""
    from pqflow.ir import Add, Requant

    rng = np.random.default_rng(seed)

    def rand_type(lo: int = 2) -> Fixed:
        return Fixed(int(rng.integers(lo, 9)), int(rng.integers(-3, 6)), bool(rng.integers(2)))

    b = GraphBuilder(f"add{seed}")
    x = b.input("x", rand_type(), (3,))
    r = b.add(Requant(rand_type(), (int(rng.integers(1, 9)),), (int(rng.integers(0, 4)),)), x)
    a = (x, r) if seed % 2 else (r, x)
    g = b.build(b.add(Add(), *a, name="add"))
    xs = _inputs(g, 40, seed)
    got, _, _ = run_stream(DataflowGraphTop(g), xs, seed=seed)
    assert np.array_equal(got, run(g, xs))
    assert len(np.unique(got)) > 3  # varied sums, not a constant
