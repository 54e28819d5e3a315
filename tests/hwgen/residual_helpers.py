"""Residual test graphs (vector blocks, the digits resnet_tiny) and a unit with a lead (a
frame buffer) plugged in as a fusion."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from pqflow.hwgen.amaranth.common import vector_signature
from pqflow.hwgen.amaranth.graph_top import FUSIONS, Fusion, register_fusion
from pqflow.hwgen.amaranth.schedule import Schedule
from pqflow.ir import (
    Add,
    Dense,
    Dequantize,
    Fixed,
    Float,
    GraphBuilder,
    Quantize,
    ReLU,
    Requant,
    TensorType,
    Weight,
)


def residual_mlp(
    seed: int = 0, n: int = 6, blocks: int = 1, name: str = "res", digits: bool = False
):
    """x -> [Dense -> Requant -> ReLU -> Dense -> Requant, + x] * blocks (vectors).

    ``digits``: a float (64,) input, quantized and taken to ``n`` by a Dense first, and a
    trailing Dequantize (a graph ``pqflow verify`` feeds with digits images)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder(name)
    wt = Fixed(5, 2, True)
    if digits:
        x = b.add(Quantize(Fixed(6, 2, False)), b.input("x", Float(), (64,)))
        x = b.add(Dense(Weight(rng.integers(-16, 16, (n, 64)), wt)), x, name="fc_in")
        x = b.add(Requant(Fixed(6, 3, True), (1,), (6,)), x, name="rq_in")
    else:
        x = b.input("x", Fixed(6, 3, True), (n,))
    for k in range(blocks):
        v = b.add(Dense(Weight(rng.integers(-16, 16, (n, n)), wt)), x, name=f"fc{k}a")
        v = b.add(Requant(Fixed(6, 3, True), (3,), (4,)), v, name=f"rq{k}a")
        v = b.add(ReLU(), v, name=f"relu{k}")
        v = b.add(Dense(Weight(rng.integers(-16, 16, (n, n)), wt)), v, name=f"fc{k}b")
        v = b.add(Requant(Fixed(7, 4, True), (5,), (5,)), v, name=f"rq{k}b")
        v = b.add(Add(), x, v, name=f"add{k}")
        x = b.add(Requant(Fixed(6, 3, True), (1,), (1,)), v, name=f"rq{k}c")
    return b.build(b.add(Dequantize(), x) if digits else x)


def resnet_tiny(data, epochs: int = 2, calib: int = 500):
    """The digits ``resnet_tiny`` through the real pipeline: trained ``epochs`` (seed 0),
    50% of its filters pruned (L1), w8a8 power-of-two PTQ (``QuantConfig()`` calibrated on
    ``calib`` training images), lowered. ``data`` is ``load_digits_split(image=True)``."""
    import copy

    import torch

    from pqflow.models import TrainConfig, train_or_load
    from pqflow.models.lower import lower
    from pqflow.models.prune import prune
    from pqflow.models.qmodules import QuantConfig, quantize_model

    torch.manual_seed(0)
    model = train_or_load("resnet_tiny", data.x_train, data.y_train, TrainConfig(epochs=epochs))
    model = prune(copy.deepcopy(model), "filter", "l1", 0.5)
    q = quantize_model(model, QuantConfig(), data.x_train[:calib])
    return lower(q, data.x_train[:4])


# -- a unit with a lead: a frame buffer, through a test fusion --------------------------------


class FrameReLU(wiring.Component):
    """ReLU on a pixel stream that emits a sample's beats only after taking all of them:
    schedule need = (B, ..., B), so a skip edge beside it must hold a whole sample."""

    latency = 1

    def __init__(self, dtype: Fixed, beats: int, c: int) -> None:
        self.beats, self.c = beats, c
        self.cycles_per_vector = 2 * beats
        self.schedule = Schedule(beats, beats, (beats,) * beats, 1, 2 * beats)
        out = ReLU().infer(TensorType(dtype, (c,))).dtype
        super().__init__({"i": In(vector_signature(dtype, c)), "o": Out(vector_signature(out, c))})

    def elaborate(self, platform) -> Module:
        m = Module()
        mem = Array(Signal.like(self.i.payload, name=f"m{k}") for k in range(self.beats))
        count = Signal(range(self.beats + 1))
        emitting = Signal()
        m.d.comb += self.i.ready.eq(~emitting)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += mem[count].eq(self.i.payload)
            m.d.sync += count.eq(count + 1)
            with m.If(count == self.beats - 1):
                m.d.sync += [emitting.eq(1), count.eq(0)]
        word = mem[count]
        m.d.comb += self.o.valid.eq(emitting)
        for k in range(self.c):
            m.d.comb += self.o.payload[k].eq(Mux(word[k] < 0, 0, word[k]))
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += count.eq(count + 1)
            with m.If(count == self.beats - 1):
                m.d.sync += [emitting.eq(0), count.eq(0)]
        return m


@pytest.fixture
def frame_fusion():
    """Every ReLU on a pixel stream becomes a FrameReLU (removed after the test)."""

    @register_fusion
    def finder(graph, design):
        fused = []
        for n in graph.nodes:
            if isinstance(n.op, ReLU) and len(n.type.shape) == 3:
                h, w, c = n.type.shape
                t = graph.types()[n.inputs[0]]
                fused.append(
                    Fusion(
                        frozenset([n.name]),
                        n.inputs[0],
                        n.name,
                        lambda t=t, h=h, w=w, c=c: FrameReLU(t.dtype, h * w, c),
                    )
                )
        return fused

    yield
    FUSIONS.remove(finder)


def frame_residual():
    b = GraphBuilder("frame")
    x = b.input("x", Fixed(5, 2, True), (3, 4, 2))
    r = b.add(ReLU(), x, name="relu")
    return b.build(b.add(Add(), x, r, name="add"))
