"""Verify generated hardware for an IR graph against the oracle.

The hardware of a graph takes the raws after its leading ``Quantize`` and gives the raws
of its last integer node (``pqflow.hwgen.amaranth.graph_top.hardware_graph``); the
oracle computes both from the same float inputs, so the RTL is compared with exactly
what the integer graph defines.
"""

from __future__ import annotations

import numpy as np

from pqflow.ir import Graph
from pqflow.sim.runner import SimResult, verify_stream

__all__ = ["deadlock_timeout", "hardware_vectors", "verify_graph"]


def hardware_vectors(graph: Graph, x) -> tuple[np.ndarray, np.ndarray]:
    """(input raws, expected output raws) of the graph's hardware part for a batch ``x``.

    Both are int64 arrays of beats, computed by the Numba oracle: (N, elements) for
    vectors, (N * H * W, C) for an (H, W, C) pixel stream (raster order, sample by sample).
    """
    from pqflow.hwgen.amaranth.graph_top import hardware_graph
    from pqflow.kernels import run

    hw = hardware_graph(graph)  # a chain or a DAG (residual network)
    if not hw.nodes:
        raise ValueError(f"graph '{graph.name}' has no integer nodes to build in hardware")
    src, dst = hw.source, hw.sink
    vals = run(graph, x, outputs=[src, dst])
    n = len(vals[src])
    return _beats(vals[src], n), _beats(vals[dst], n)


def _beats(v: np.ndarray, n: int) -> np.ndarray:
    shape = v.shape[1:]
    return v.reshape(n * shape[0] * shape[1], shape[2]) if len(shape) == 3 else v.reshape(n, -1)


def deadlock_timeout(design) -> int:
    """Cycles without any handshake after which the bench reports ``design`` deadlocked.

    A working design with known ``latency`` and ``cycles_per_vector`` makes a handshake
    (an input or an output beat) at least every ``latency + II`` cycles, whatever the
    random stalls (p < 1 per cycle each side); four times that, and at least 2,000, is
    the limit, so a deadlock is reported after thousands of cycles, not the bench's
    100,000 (minutes on Icarus for a large design). Data-dependent designs keep 100,000.
    """
    lat, ii = design.latency, design.cycles_per_vector
    if lat is None or ii is None:
        return 100_000
    return max(2_000, 4 * (lat + ii))


def verify_graph(design, graph: Graph, x, **options) -> SimResult:
    """Simulate ``design`` (a ``VerilogDesign`` of ``graph``) on ``x``; compare with the oracle.

    ``options`` go to :func:`pqflow.sim.verify_stream` (``sim``, ``seed``, ``stall_prob``,
    ``backpressure_prob``, ...); ``timeout_cycles`` defaults to
    :func:`deadlock_timeout`, so a deadlocked design fails quickly with a ``timeout``
    error naming the inputs taken and outputs received.
    """
    ins, expected = hardware_vectors(graph, x)
    options.setdefault("timeout_cycles", deadlock_timeout(design))
    return verify_stream(
        design.text,
        design.top,
        ins,
        design.in_width,
        design.in_signed,
        expected,
        design.out_width,
        design.out_signed,
        **{"in_beats": design.in_beats, "out_beats": design.out_beats, **options},
    )
