"""A readable text form of a graph (for people; the JSON form is for machines)."""

from __future__ import annotations

from dataclasses import fields
from enum import Enum

from .graph import Graph, Node
from .tensor import Weight


def _attr(v) -> str:
    if isinstance(v, Weight):
        return f"{v.dtype}[{','.join(map(str, v.shape))}] {v.describe()}"
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, tuple):
        if len(v) > 8:
            head = ", ".join(map(str, v[:4]))
            return f"({head}, ... {len(v)} values)"
        return "(" + ", ".join(map(str, v)) + ")"
    return str(v)


def format_node(n: Node) -> str:
    attrs = ", ".join(f"{f.name}={_attr(getattr(n.op, f.name))}" for f in fields(n.op))
    args = ", ".join(n.inputs)
    inner = f"{args}, {attrs}" if attrs else args
    return f"{n.name}: {n.type} = {type(n.op).__name__}({inner})"


def format_graph(g: Graph) -> str:
    """One line per node::

    graph mlp(x: f64[64]) -> (fc3)
      q: u8f4[64] = Quantize(x, to=u8f4, rounding=half_even, overflow=saturate)
      fc0: s19f10[64] = Dense(q, weight=s8f6[64,64] density=0.200 unstructured, bias=...)
    """
    ins = ", ".join(f"{v.name}: {v.type}" for v in g.inputs)
    lines = [f"graph {g.name}({ins}) -> ({', '.join(g.outputs)})"]
    lines += ["  " + format_node(n) for n in g.nodes]
    return "\n".join(lines)
