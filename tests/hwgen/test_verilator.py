"""Generated Verilog on Verilator (cocotb), bit-exact against the oracle with stalls."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hwgen_helpers import random_mlp, random_raws

from pqflow.hwgen import generate_verilog
from pqflow.hwgen.amaranth import hardware_chain


def _expected(graph, x: np.ndarray) -> np.ndarray:
    """The oracle's raws of the last integer node for hardware input raws ``x``."""
    from pqflow.kernels import run

    in_type, nodes, _ = hardware_chain(graph)
    quant, last = graph.nodes[0].name, nodes[-1].name
    out = run(graph, x * 2.0**-in_type.dtype.frac, outputs=[quant, last])
    assert np.array_equal(out[quant], x)  # the float edge gives back exactly these raws
    return out[last]


def _verify(design, x, expected, seed):
    from pqflow.sim.runner import verify_stream

    return verify_stream(
        design.text,
        design.top,
        x,
        design.in_width,
        design.in_signed,
        expected,
        design.out_width,
        design.out_signed,
        sim="verilator",
        seed=seed,
        stall_prob=0.3,
        backpressure_prob=0.3,
    )


@pytest.mark.verilator
@pytest.mark.parametrize("seed", [0, 1])
def test_small_mlp_on_verilator(seed):
    g = random_mlp([12, 8, 6, 4], seed=seed, abits=6 + seed, density=0.5, name=f"small{seed}")
    design = generate_verilog(g, name="pqflow_top", levels_per_stage=2 + seed)
    in_type = hardware_chain(g)[0]
    x = random_raws(np.random.default_rng(seed), in_type.dtype, (200, 12))
    x[0], x[1] = in_type.dtype.min_raw, in_type.dtype.max_raw
    result = _verify(design, x, _expected(g, x), seed)
    assert result.passed, result.summary()
    assert result.latency_cycles == design.latency, result.summary()
    assert result.ii_cycles == pytest.approx(1.0), result.summary()


@pytest.mark.verilator
@pytest.mark.slow
@pytest.mark.parametrize("density", [1.0, 0.2])
def test_digits_size_mlp_on_verilator(density):
    """The 64-64-32-32-10 8-bit MLP: generation in seconds, a Verilator build under a minute."""
    g = random_mlp([64, 64, 32, 32, 10], seed=7, density=density, name="digits")
    t0 = time.perf_counter()
    design = generate_verilog(g)
    generate_seconds = time.perf_counter() - t0
    x = random_raws(np.random.default_rng(7), hardware_chain(g)[0].dtype, (100, 64))
    result = _verify(design, x, _expected(g, x), 7)
    print(
        f"density {density}: {len(design.text)} bytes of Verilog in {generate_seconds:.1f} s; "
        f"build {result.build.build_seconds:.1f} s (cached: {result.build.cached}); "
        f"{result.summary()}"
    )
    assert result.passed, result.summary()
    assert result.latency_cycles == design.latency, result.summary()


@pytest.mark.verilator
@pytest.mark.slow
def test_lowered_pruned_digits_mlp_on_verilator():
    """A torch MLP pruned to 80 %, quantized and lowered by pqflow.models, in hardware."""
    pytest.importorskip("torch")
    from pqflow.models.lower import lower_mlp
    from pqflow.models.quant import prune_global_l1, quantize_mlp
    from pqflow.models.zoo import build

    rng = np.random.default_rng(0)
    model = build("mlp", seed=0)
    prune_global_l1(model, 0.8)
    g = lower_mlp(quantize_mlp(model, rng.random((256, 64))), dequantize=True)
    design = generate_verilog(g)
    x = random_raws(rng, hardware_chain(g)[0].dtype, (100, 64))
    result = _verify(design, x, _expected(g, x), 0)
    assert result.passed, result.summary()
    assert result.latency_cycles == design.latency, result.summary()
