"""Dataflow tops for graphs that are not plain chains (fork, skip FIFO, join), and fusions.

A *fusion* lets a generator implement a connected group of IR nodes as one streaming
unit (for example a gated convolution block, whose gate branch and convolution share one
input). Fusion finders are registered with :func:`register_fusion`; the graph top asks
each of them, in registration order, before it builds per-node units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from amaranth.lib import wiring

from ...ir import Graph
from ..design import Design

__all__ = ["FUSIONS", "Fusion", "register_fusion"]


@dataclass(frozen=True)
class Fusion:
    """IR nodes ``nodes`` built as one unit that reads the value ``input`` (one stream)
    and writes the value ``output``. ``build()`` returns the unit: a Component with
    ``i``, ``o``, ``latency``, ``cycles_per_vector`` and ``schedule``."""

    nodes: frozenset[str]
    input: str
    output: str
    build: Callable[[], wiring.Component]


FUSIONS: list[Callable[[Graph, Design], list[Fusion]]] = []


def register_fusion(
    finder: Callable[[Graph, Design], list[Fusion]],
) -> Callable[[Graph, Design], list[Fusion]]:
    """Register ``finder(graph, design) -> [Fusion, ...]`` (a decorator)."""
    FUSIONS.append(finder)
    return finder
