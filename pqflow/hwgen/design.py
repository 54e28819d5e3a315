"""A ``Design``: a graph plus the hardware implementation chosen for each of its nodes.

Hardware choices live beside the graph, never in it: the same ``Graph`` can be built
several ways, and every build is verified against the same oracle. A ``Design`` names,
for each matrix node (``Dense``, ``BinaryDense``), one implementation:

- ``Unrolled(levels_per_stage, products)`` -- constant weights wired into logic, a whole
  vector per cycle (``UnrolledDense``);
- ``Folded(pe, simd)`` -- a FINN-style matrix-vector unit, weights in a ROM, PE x SIMD
  MACs (XNOR-popcount for ``BinaryDense``), (MH/PE)*(MW/SIMD) cycles per vector;
- ``Sparse(pe)`` -- an EIE-style engine over the nonzero weights.

Every other node (``Requant``, ``ReLU``, ``MultiThreshold``, ``Flatten``, ...) has one
implementation in every style, tuned by ``UnitOptions``. This module needs no Amaranth;
the builders that turn an implementation into RTL live in ``pqflow.hwgen.amaranth.top``
(``register_dense``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

from ..errors import UserError
from ..ir import BinaryConv2d, BinaryDense, Conv2d, Dense, Graph, Node

__all__ = [
    "IMPLS",
    "STYLES",
    "Design",
    "DesignError",
    "Folded",
    "HardwareError",
    "Impl",
    "Sparse",
    "UnitOptions",
    "Unrolled",
    "matrix_shape",
]

PRODUCTS = ("mul", "csd")


class HardwareError(UserError, NotImplementedError):
    """A node has no hardware implementation in the chosen style (the message names it)."""


class DesignError(UserError, ValueError):
    """A design that cannot be built as asked: a bad style, option or folding factor."""


def _positive(owner: str, name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise DesignError(f"{owner}: {name} must be a positive integer, not {value!r}")


@dataclass(frozen=True)
class Impl:
    """Base of the per-node implementations; ``style`` is the registry key users type."""

    style: ClassVar[str] = ""

    def check(self, node: Node, n_out: int, n_in: int) -> None:
        """Raise DesignError when this implementation cannot build ``node`` (out x in)."""

    def describe(self) -> dict:
        """A JSON-ready description: ``{"style": ..., **fields}``."""
        return {"style": self.style, **asdict(self)}


@dataclass(frozen=True)
class Unrolled(Impl):
    """Constant weights in logic; a register every ``levels_per_stage`` adder-tree levels;
    ``products`` is ``"mul"`` (constant multipliers) or ``"csd"`` (shifts and adds)."""

    style: ClassVar[str] = "unrolled"
    levels_per_stage: int = 3
    products: str = "mul"

    def __post_init__(self) -> None:
        _positive("Unrolled", "levels_per_stage", self.levels_per_stage)
        if self.products not in PRODUCTS:
            raise DesignError(
                f"Unrolled: products must be one of {', '.join(PRODUCTS)}, not {self.products!r}"
            )


@dataclass(frozen=True)
class Folded(Impl):
    """PE output neurons x SIMD inputs per cycle: (MH/PE)*(MW/SIMD) cycles per vector.

    PE must divide MH (outputs) and SIMD must divide MW (inputs).
    """

    style: ClassVar[str] = "folded"
    pe: int = 1
    simd: int = 1

    def __post_init__(self) -> None:
        _positive("Folded", "pe", self.pe)
        _positive("Folded", "simd", self.simd)

    def check(self, node: Node, n_out: int, n_in: int) -> None:
        for name, v, n, what in (
            ("pe", self.pe, n_out, "outputs"),
            ("simd", self.simd, n_in, "inputs"),
        ):
            if n % v:
                divisors = ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)
                raise DesignError(
                    f"{node.describe()}: folded {name}={v} must divide its {n} {what}; "
                    f"choose one of {divisors}"
                )

    def cycles(self, n_out: int, n_in: int) -> int:
        """Cycles per vector: (MH/PE) * (MW/SIMD)."""
        return (n_out // self.pe) * (n_in // self.simd)


@dataclass(frozen=True)
class Sparse(Impl):
    """An EIE-style engine with ``pe`` processing elements over the nonzero weights."""

    style: ClassVar[str] = "sparse"
    pe: int = 1

    def __post_init__(self) -> None:
        _positive("Sparse", "pe", self.pe)


IMPLS: dict[str, type[Impl]] = {c.style: c for c in (Unrolled, Folded, Sparse)}
"""Implementation classes by style name."""

STYLES = tuple(IMPLS)


@dataclass(frozen=True)
class UnitOptions:
    """Options of the units every style shares: one output register stage in ``Requant`` /
    ``MultiThreshold`` units (else combinational)."""

    register_requant: bool = True
    register_threshold: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            if not isinstance(getattr(self, f.name), bool):
                raise DesignError(f"{f.name} must be True or False, not {getattr(self, f.name)!r}")


MATRIX_OPS = (Dense, BinaryDense, Conv2d, BinaryConv2d)
"""Ops built by a style's matrix engine; a convolution runs it on each window."""


def matrix_shape(node: Node) -> tuple[int, int]:
    """(outputs, inputs) of the matrix a matrix node's engine computes: the weight of a
    Dense, or for a convolution (out, kh * kw * in) -- the window of every input channel
    (a grouped convolution is its block-diagonal Dense)."""
    w = node.op.weight.shape
    if len(w) == 4:
        return w[0], w[1] * w[2] * w[3] * node.op.groups
    return w


def _matrix_nodes(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if isinstance(n.op, MATRIX_OPS)]


@dataclass(frozen=True)
class Design:
    """A graph and the implementation of each of its matrix nodes.

    ``impls`` maps node name -> ``Impl`` for every ``Dense``/``BinaryDense`` node (a
    mapping or pairs; stored as a tuple of pairs in graph order, so a Design is
    hashable). ``options`` tunes the shared units; ``name`` is the Verilog module name.
    Construction checks every choice against the node's shape (e.g. PE | MH) and fails
    with a ``DesignError`` naming the node.
    """

    graph: Graph
    impls: tuple[tuple[str, Impl], ...] | Mapping[str, Impl]
    options: UnitOptions = field(default_factory=UnitOptions)
    name: str = "pqflow_top"

    def __post_init__(self) -> None:
        if not isinstance(self.graph, Graph):
            raise TypeError(f"Design: graph must be a pqflow.ir.Graph, not {self.graph!r}")
        given = dict(self.impls.items() if isinstance(self.impls, Mapping) else self.impls)
        if not isinstance(self.options, UnitOptions):
            raise TypeError(f"Design: options must be UnitOptions, not {self.options!r}")
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise DesignError(f"name must be a Verilog identifier, not {self.name!r}")
        nodes = _matrix_nodes(self.graph)
        names = {n.name for n in nodes}
        for key in given:
            if key not in names:
                known = ", ".join(sorted(names)) or "none"
                raise DesignError(
                    f"Design: '{key}' is not a matrix node (Dense, BinaryDense, Conv2d, "
                    f"BinaryConv2d) of graph "
                    f"'{self.graph.name}'; its matrix nodes are {known}"
                )
        pairs = []
        for n in nodes:
            if n.name not in given:
                raise DesignError(f"Design: {n.describe()} has no implementation")
            impl = given[n.name]
            if not isinstance(impl, Impl):
                raise TypeError(
                    f"Design: the implementation of '{n.name}' must be an Impl, not {impl!r}"
                )
            n_out, n_in = matrix_shape(n)
            impl.check(n, n_out, n_in)
            pairs.append((n.name, impl))
        object.__setattr__(self, "impls", tuple(pairs))

    def impl(self, node: str) -> Impl:
        """The implementation of matrix node ``node`` (KeyError when it is not one)."""
        for name, impl in self.impls:
            if name == node:
                return impl
        raise KeyError(node)

    @classmethod
    def uniform(
        cls, graph: Graph, style: str = "unrolled", *, name: str = "pqflow_top", **options
    ) -> Design:
        """Every matrix node in one ``style``; ``options`` are the fields of its ``Impl``
        (``pe``, ``simd``, ``levels_per_stage``, ``products``) and of ``UnitOptions``."""
        if style not in IMPLS:
            raise DesignError(f"style must be one of {', '.join(map(repr, STYLES))}, not {style!r}")
        impl_cls = IMPLS[style]
        impl_keys = [f.name for f in fields(impl_cls)]
        unit_keys = [f.name for f in fields(UnitOptions)]
        for key in options:
            if key not in impl_keys and key not in unit_keys:
                raise TypeError(
                    f"unknown option {key!r} for style {style!r}; accepted: "
                    f"{', '.join(impl_keys + unit_keys)}"
                )
        impl = impl_cls(**{k: v for k, v in options.items() if k in impl_keys})
        unit = UnitOptions(**{k: v for k, v in options.items() if k in unit_keys})
        return cls(graph, {n.name: impl for n in _matrix_nodes(graph)}, unit, name)

    @classmethod
    def fitted(
        cls,
        graph: Graph,
        style: str = "unrolled",
        *,
        pe: int = 1,
        simd: int = 1,
        name: str = "pqflow_top",
    ) -> Design:
        """Every matrix node in one ``style`` with ``pe``/``simd`` as upper bounds: each
        node gets the largest factor that divides its matrix (outputs for PE, inputs for
        SIMD) and is at most the bound, so one setting fits every layer."""
        if style not in IMPLS:
            raise DesignError(f"style must be one of {', '.join(map(repr, STYLES))}, not {style!r}")
        for what, v in (("pe", pe), ("simd", simd)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise DesignError(f"{what} must be a positive integer, not {v!r}")

        def largest_divisor(n: int, at_most: int) -> int:
            return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)

        impls: dict[str, Impl] = {}
        for n in _matrix_nodes(graph):
            mh, mw = matrix_shape(n)
            if style == "folded":
                impls[n.name] = Folded(largest_divisor(mh, pe), largest_divisor(mw, simd))
            elif style == "sparse":
                impls[n.name] = IMPLS["sparse"](min(pe, mh))
            else:
                impls[n.name] = IMPLS[style]()
        return cls(graph, impls, UnitOptions(), name)

    def describe(self) -> dict:
        """JSON-ready: graph name, top name, shared options, per-node implementation."""
        return {
            "graph": self.graph.name,
            "top": self.name,
            "options": asdict(self.options),
            "nodes": {
                name: {"op": type(self.graph.node(name).op).__name__, **impl.describe()}
                for name, impl in self.impls
            },
        }
