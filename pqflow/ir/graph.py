"""The immutable dataflow graph, its builder and its verifier."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .ops import Op
from .types import DType, IRError, TensorType


@dataclass(frozen=True)
class Value:
    """A graph input: a name and the type of one sample."""

    name: str
    type: TensorType


@dataclass(frozen=True)
class Node:
    """One op applied to named values; it defines the value of its own name."""

    name: str
    op: Op
    inputs: tuple[str, ...]
    type: TensorType

    def describe(self) -> str:
        return f"{type(self.op).__name__} '{self.name}'"


@dataclass(frozen=True)
class Graph:
    """Inputs, nodes in topological order, outputs. Build it with ``GraphBuilder``.

    A graph is immutable; passes return new graphs. ``verify(graph)`` checks it.
    """

    name: str
    inputs: tuple[Value, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]

    def types(self) -> dict[str, TensorType]:
        """The type of every value (inputs and node outputs) by name."""
        t = {v.name: v.type for v in self.inputs}
        t.update((n.name, n.type) for n in self.nodes)
        return t

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"graph '{self.name}' has no node '{name}'")

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def replace(self, **changes) -> Graph:
        """A new graph with some fields replaced, verified."""
        g = Graph(**{**self.__dict__, **changes})
        return verify(g)


def infer_node(name: str, op: Op, in_types: list[TensorType]) -> TensorType:
    """The output type of ``op`` on these inputs; errors name the node."""
    where = f"{type(op).__name__} '{name}'"
    if not isinstance(op, Op):
        raise IRError(f"node '{name}': {op!r} is not an op")
    if len(in_types) != op.arity:
        raise IRError(f"{where}: takes {op.arity} input(s), got {len(in_types)}")
    try:
        return op.infer(*in_types)
    except IRError as e:
        raise IRError(f"{where}: {e}") from None


def verify(graph: Graph) -> Graph:
    """Check a graph and return it unchanged; raise IRError naming the node and problem.

    Checks: unique names, inputs defined before use, arity, every op's own rules
    (shapes, types, weights, thresholds), each node's declared type equal to the type
    inferred (accumulators sized by interval analysis over the real weights, at most
    62 bits), and that outputs exist.
    """
    if not isinstance(graph, Graph):
        raise IRError(f"expected a Graph, not {type(graph).__name__}")
    types: dict[str, TensorType] = {}
    for v in graph.inputs:
        if v.name in types:
            raise IRError(f"input '{v.name}' is defined twice")
        if not isinstance(v.type, TensorType):
            raise IRError(f"input '{v.name}': type must be a TensorType, not {v.type!r}")
        types[v.name] = v.type
    if not graph.inputs:
        raise IRError(f"graph '{graph.name}' has no inputs")
    for n in graph.nodes:
        if n.name in types:
            raise IRError(f"{n.describe()}: the name '{n.name}' is already defined")
        for i in n.inputs:
            if i not in types:
                raise IRError(f"{n.describe()}: input '{i}' is not defined before this node")
        t = infer_node(n.name, n.op, [types[i] for i in n.inputs])
        if n.type != t:
            raise IRError(f"{n.describe()}: declared type {n.type} but the inputs give {t}")
        types[n.name] = t
    if not graph.outputs:
        raise IRError(f"graph '{graph.name}' has no outputs")
    for o in graph.outputs:
        if o not in types:
            raise IRError(f"output '{o}' is not defined in graph '{graph.name}'")
    return graph


class GraphBuilder:
    """Builds a graph op by op, inferring and checking types as it goes.

    >>> b = GraphBuilder("mlp")
    >>> x = b.input("x", Float(), (64,))
    >>> q = b.add(Quantize(Fixed(8, 4, False)), x)
    >>> g = b.build(q)
    """

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self._inputs: list[Value] = []
        self._nodes: list[Node] = []
        self._types: dict[str, TensorType] = {}

    def input(self, name: str, dtype: DType, shape: tuple[int, ...]) -> str:
        if name in self._types:
            raise IRError(f"input '{name}' is already defined")
        t = TensorType(dtype, tuple(shape))
        self._inputs.append(Value(name, t))
        self._types[name] = t
        return name

    def add(self, op: Op, *inputs: str, name: str | None = None) -> str:
        if name is None:
            base = type(op).__name__.lower()
            k = sum(1 for n in self._nodes if type(n.op) is type(op))
            name = f"{base}{k}"
            while name in self._types:
                k += 1
                name = f"{base}{k}"
        if name in self._types:
            raise IRError(f"{type(op).__name__} '{name}': the name '{name}' is already defined")
        for i in inputs:
            if i not in self._types:
                raise IRError(f"{type(op).__name__} '{name}': input '{i}' is not defined")
        t = infer_node(name, op, [self._types[i] for i in inputs])
        self._nodes.append(Node(name, op, tuple(inputs), t))
        self._types[name] = t
        return name

    def type_of(self, name: str) -> TensorType:
        return self._types[name]

    def build(self, *outputs: str) -> Graph:
        return verify(Graph(self.name, tuple(self._inputs), tuple(self._nodes), tuple(outputs)))
