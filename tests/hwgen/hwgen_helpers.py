"""Test support for hwgen: a stream test bench on Amaranth's simulator, numpy semantics,
random graphs."""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from pqflow.ir import (
    Dense,
    Dequantize,
    Fixed,
    Flatten,
    Float,
    GraphBuilder,
    MultiThreshold,
    Quantize,
    ReLU,
    Requant,
    Weight,
    apply_overflow,
    round_shift,
)

# --- numpy semantics (straight from the IR docstrings and numeric.py) ----------------------


def ref_dense(op: Dense, x: np.ndarray) -> np.ndarray:
    w = op.weight.data.astype(object)
    y = x.astype(object) @ w.T
    if op.bias is not None:
        y = y + op.bias.data.astype(object)
    return y.astype(np.int64)


def ref_requant(op: Requant, x: np.ndarray) -> np.ndarray:
    c = x.shape[-1]
    mult = np.resize(np.array(op.mult, dtype=np.int64), c)
    shift = np.resize(np.array(op.shift, dtype=np.int64), c)
    return apply_overflow(round_shift(x * mult, shift, op.rounding), op.to, op.overflow)


def ref_relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def ref_threshold(op: MultiThreshold, x: np.ndarray) -> np.ndarray:
    t = op.thresholds.data
    t = np.broadcast_to(t, (x.shape[-1], t.shape[1]))
    return op.offset + (x[..., :, None] >= t).sum(axis=-1)


def ref_chain(graph, x: np.ndarray) -> np.ndarray:
    """The raws of the graph's last integer node, from the raws after its first Quantize."""
    for n in graph.nodes:
        if isinstance(n.op, Quantize | Dequantize | Flatten):
            continue
        if isinstance(n.op, Dense):
            x = ref_dense(n.op, x)
        elif isinstance(n.op, Requant):
            x = ref_requant(n.op, x)
        elif isinstance(n.op, ReLU):
            x = ref_relu(x)
        elif isinstance(n.op, MultiThreshold):
            x = ref_threshold(n.op, x)
        else:
            raise NotImplementedError(type(n.op).__name__)
    return x


# --- random data ---------------------------------------------------------------------------


def random_fixed(rng: np.random.Generator, max_width: int = 8, frac: int | None = None) -> Fixed:
    w = int(rng.integers(1, max_width + 1))
    return Fixed(w, int(rng.integers(-2, 4)) if frac is None else frac, bool(rng.integers(2)))


def random_raws(rng: np.random.Generator, t: Fixed, shape) -> np.ndarray:
    return rng.integers(t.min_raw, t.max_raw + 1, shape, dtype=np.int64)


def random_mlp(
    sizes,
    *,
    seed: int = 0,
    wbits: int = 8,
    abits: int = 8,
    density: float = 1.0,
    name: str = "mlp",
):
    """Quantize -> (Dense -> Requant -> ReLU)* -> Dense -> Requant -> Dequantize."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder(name)
    v = b.add(Quantize(Fixed(abits, abits - 1, False)), b.input("x", Float(), (sizes[0],)))
    layers = list(zip(sizes, sizes[1:], strict=False))
    for k, (n_in, n_out) in enumerate(layers):
        wt = Fixed(wbits, wbits - 1, True)
        w = rng.integers(wt.min_raw, wt.max_raw + 1, (n_out, n_in))
        w[rng.random(w.shape) >= density] = 0
        xt = b.type_of(v).dtype
        bias = Weight(rng.integers(-1000, 1000, n_out), Fixed(16, wt.frac + xt.frac, True))
        v = b.add(Dense(Weight(w, wt), bias), v, name=f"fc{k}")
        acc = b.type_of(v).dtype
        to = Fixed(abits, abits - 1, True)
        mult = tuple(int(m) for m in rng.integers(1, 200, n_out))
        shift = acc.frac - to.frac + 7
        v = b.add(Requant(to, mult=mult, shift=(shift,)), v, name=f"rq{k}")
        if k < len(layers) - 1:
            v = b.add(ReLU(), v, name=f"relu{k}")
    return b.build(b.add(Dequantize(), v))


# --- a stream test bench on Amaranth's simulator -------------------------------------------


def _layout(port):
    layout = port.payload.shape()
    shape = layout.elem_shape
    return shape.width, shape.signed, layout.length


def _pack(vec, width: int) -> int:
    mask, word = (1 << width) - 1, 0
    for k, v in enumerate(vec):
        word |= (int(v) & mask) << (k * width)
    return word


def _unpack(word: int, width: int, signed: bool, n: int) -> list[int]:
    out = []
    for k in range(n):
        v = (word >> (k * width)) & ((1 << width) - 1)
        out.append(v - (1 << width) if signed and v >> (width - 1) else v)
    return out


def run_stream(
    dut,
    vectors: np.ndarray,
    *,
    seed: int = 0,
    stall_prob: float = 0.3,
    backpressure_prob: float = 0.3,
    timeout: int = 10_000,
) -> tuple[np.ndarray, list[int], list[int]]:
    """Stream ``vectors`` through ``dut`` (ports ``i``/``o``) with random input stalls and
    output back-pressure; return (outputs, input edges, output edges), where an edge is
    the clock edge index at which a vector was taken."""
    rng = np.random.default_rng(seed)
    iw, _, _ = _layout(dut.i)
    ow, osigned, on = _layout(dut.o)
    n = len(vectors)
    outs: list[list[int]] = []
    in_edges: list[int] = []
    out_edges: list[int] = []

    async def producer(ctx):
        edge = 0
        for vec in vectors:
            while rng.random() < stall_prob:
                ctx.set(dut.i.valid, 0)
                ctx.set(dut.i.payload.as_value(), int(rng.integers(0, 1 << 30)))  # garbage
                await ctx.tick()
                edge += 1
            ctx.set(dut.i.payload.as_value(), _pack(vec, iw))
            ctx.set(dut.i.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                edge += 1
                if ready:
                    in_edges.append(edge)
                    break
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        edge = 0
        while len(outs) < n:
            ready = rng.random() >= backpressure_prob
            ctx.set(dut.o.ready, ready)
            _, _, valid, word = await ctx.tick().sample(dut.o.valid, dut.o.payload.as_value())
            edge += 1
            if valid and ready:
                outs.append(_unpack(word, ow, osigned, on))
                out_edges.append(edge)
            if edge > timeout:
                raise AssertionError(f"no progress: {len(outs)} of {n} outputs after {edge} cycles")
        # a few more cycles: nothing else may come out
        ctx.set(dut.o.ready, 1)
        for _ in range(8):
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            assert not valid, "the design emitted more vectors than it was given"

    top = Module()  # a sync domain even when the dut is combinational
    top.submodules.dut = dut
    tick = Signal()
    top.d.sync += tick.eq(~tick)
    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
    return np.array(outs, dtype=np.int64).reshape(n, on), in_edges, out_edges


def check_stream(dut, vectors: np.ndarray, expected: np.ndarray, *, seed: int = 0) -> None:
    """Bit-exact with stalls and back-pressure, then latency and II = 1 without them."""
    got, _, _ = run_stream(dut, vectors, seed=seed)
    assert np.array_equal(got, expected), f"mismatch:\n{got}\n!=\n{expected}"
    got, ins, outs = run_stream(dut, vectors, seed=seed, stall_prob=0, backpressure_prob=0)
    assert np.array_equal(got, expected)
    assert outs[0] - ins[0] == dut.latency, (outs[0] - ins[0], dut.latency)
    assert outs[-1] - outs[0] == len(vectors) - 1  # one vector per cycle
