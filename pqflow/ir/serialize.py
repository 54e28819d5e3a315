"""The versioned JSON form of a graph; it round-trips exactly.

Layout (version 1)::

    {"format": "pqflow-ir", "version": 1, "name": "mlp",
     "inputs": [{"name": "x", "type": {"dtype": {"kind": "float"}, "shape": [64]}}],
     "nodes": [
      {"name": "fc0", "op": "Dense", "inputs": ["q"], "type": {...},
       "attrs": {"weight": {"dtype": {...}, "shape": [64, 64], "sparsity": {...},
                            "data": [...]}, "bias": null}},
      ...],
     "outputs": ["fc3"]}

Attributes are the op's dataclass fields; weights are row-major integer raws. One node
per line, so a diff of two files reads node by node. Loading checks everything and
raises IRError naming the file, the node and the problem.
"""

from __future__ import annotations

import json
import os
import tempfile
import types as pytypes
import typing
from dataclasses import fields
from enum import Enum
from pathlib import Path

from .graph import Graph, Node, Value, verify
from .ops import OPS, Op
from .tensor import Sparsity, Weight
from .types import Bipolar, Fixed, Float, IRError, TensorType

FORMAT = "pqflow-ir"
VERSION = 1


# --- encode ---------------------------------------------------------------------------------


def _enc_dtype(t) -> dict:
    if isinstance(t, Fixed):
        return {"kind": "fixed", "width": t.width, "frac": t.frac, "signed": t.signed}
    if isinstance(t, Bipolar):
        return {"kind": "bipolar"}
    if isinstance(t, Float):
        return {"kind": "float"}
    raise IRError(f"cannot encode dtype {t!r}")


def _enc_type(t: TensorType) -> dict:
    return {"dtype": _enc_dtype(t.dtype), "shape": list(t.shape)}


def _enc_value(v):
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, Fixed | Bipolar | Float):
        return _enc_dtype(v)
    if isinstance(v, Weight):
        sp = v.sparsity
        return {
            "dtype": _enc_dtype(v.dtype),
            "shape": list(v.shape),
            "sparsity": {"pattern": sp.pattern.value, "n": sp.n, "m": sp.m},
            "data": [int(i) for i in v.data.ravel()],
        }
    if isinstance(v, tuple):
        return [_enc_value(i) for i in v]
    raise IRError(f"cannot encode attribute value {v!r}")


def _enc_node(n: Node) -> dict:
    return {
        "name": n.name,
        "op": type(n.op).__name__,
        "inputs": list(n.inputs),
        "type": _enc_type(n.type),
        "attrs": {f.name: _enc_value(getattr(n.op, f.name)) for f in fields(n.op)},
    }


def to_json(graph: Graph) -> str:
    """The graph as JSON text (deterministic: same graph, same bytes)."""
    verify(graph)
    head = {
        "format": FORMAT,
        "version": VERSION,
        "name": graph.name,
        "inputs": [{"name": v.name, "type": _enc_type(v.type)} for v in graph.inputs],
    }
    dump = lambda o: json.dumps(o, separators=(", ", ": "))  # noqa: E731
    lines = ["{" + dump(head)[1:-1] + ","]
    lines.append(' "nodes": [')
    lines.append(",\n".join("  " + dump(_enc_node(n)) for n in graph.nodes))
    lines.append(" ],")
    lines.append(f' "outputs": {dump(list(graph.outputs))}')
    lines.append("}")
    return "\n".join(lines) + "\n"


def save(graph: Graph, path: str | os.PathLike) -> None:
    """Write the graph's JSON atomically (a failure leaves no partial file)."""
    text = to_json(graph)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- decode ---------------------------------------------------------------------------------


def _need(d, key: str, kind, where: str):
    if not isinstance(d, dict):
        raise IRError(f"{where}: expected an object, not {type(d).__name__}")
    if key not in d:
        raise IRError(f"{where}: missing field '{key}'")
    v = d[key]
    if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise IRError(f"{where}: field '{key}' must be an integer, not {v!r}")
    if kind is not int and not isinstance(v, kind):
        raise IRError(f"{where}: field '{key}' must be {kind.__name__}, not {v!r}")
    return v


def _dec_dtype(d, where: str):
    kind = _need(d, "kind", str, where)
    if kind == "fixed":
        signed = _need(d, "signed", bool, where)
        return Fixed(_need(d, "width", int, where), _need(d, "frac", int, where), signed)
    if kind == "bipolar":
        return Bipolar()
    if kind == "float":
        return Float()
    raise IRError(f"{where}: unknown dtype kind '{kind}' (fixed, bipolar or float)")


def _dec_type(d, where: str) -> TensorType:
    shape = _need(d, "shape", list, where)
    return TensorType(_dec_dtype(_need(d, "dtype", dict, where), where), tuple(shape))


def _dec_weight(d, where: str) -> Weight:
    import numpy as np

    dtype = _dec_dtype(_need(d, "dtype", dict, where), where)
    shape = tuple(_need(d, "shape", list, where))
    data = _need(d, "data", list, where)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in data):
        raise IRError(f"{where}: weight data must be a flat list of integers")
    if not all(isinstance(i, int) and i >= 0 for i in shape):
        raise IRError(f"{where}: weight shape must be non-negative integers, not {list(shape)}")
    n = 1
    for s in shape:
        n *= s
    if len(data) != n:
        raise IRError(f"{where}: weight shape {list(shape)} needs {n} values, found {len(data)}")
    if any(abs(i) >= 1 << 62 for i in data):
        raise IRError(f"{where}: weight values must be below 2**62 in magnitude")
    sp = d.get("sparsity", {"pattern": "dense", "n": 0, "m": 0})
    pattern = _need(sp, "pattern", str, where)
    n_m = (sp.get("n", 0), sp.get("m", 0))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in n_m):
        raise IRError(f"{where}: sparsity n and m must be integers, not {n_m[0]!r} and {n_m[1]!r}")
    try:
        sparsity = Sparsity(pattern, *n_m)
    except ValueError as e:
        raise IRError(f"{where}: bad sparsity: {e}") from None
    return Weight(np.array(data, dtype=np.int64).reshape(shape), dtype, sparsity)


def _dec_value(v, ann, where: str):
    origin = typing.get_origin(ann)
    if origin in (typing.Union, pytypes.UnionType):
        args = typing.get_args(ann)
        if v is None and type(None) in args:
            return None
        if Weight in args:
            return _dec_weight(v, where)
        if any(a in (Fixed, Bipolar, Float) for a in args):
            return _dec_dtype(v, where)
        if any(typing.get_origin(a) is tuple for a in args):
            return _dec_value(v, next(a for a in args if typing.get_origin(a) is tuple), where)
        raise IRError(f"{where}: cannot decode {v!r} as {ann}")
    if origin is tuple:
        if not isinstance(v, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in v
        ):
            raise IRError(f"{where}: expected a list of integers, not {v!r}")
        return tuple(v)
    if ann is Weight:
        return _dec_weight(v, where)
    if ann in (Fixed, Bipolar, Float):
        return _dec_dtype(v, where)
    if isinstance(ann, type) and issubclass(ann, Enum):
        try:
            return ann(v)
        except ValueError:
            ok = ", ".join(m.value for m in ann)
            raise IRError(f"{where}: '{v}' is not one of {ok}") from None
    if ann is bool:
        if not isinstance(v, bool):
            raise IRError(f"{where}: expected true or false, not {v!r}")
        return v
    if ann is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise IRError(f"{where}: expected an integer, not {v!r}")
        return v
    raise IRError(f"{where}: cannot decode attribute of type {ann}")


def _dec_op(name: str, d: dict, where: str) -> Op:
    cls = OPS.get(name)
    if cls is None:
        raise IRError(f"{where}: unknown op '{name}' (known: {', '.join(sorted(OPS))})")
    attrs = _need(d, "attrs", dict, where)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    names = {f.name for f in fields(cls)}
    extra = set(attrs) - names
    if extra:
        raise IRError(f"{where}: unknown attribute(s) {sorted(extra)} for {name}")
    for f in fields(cls):
        if f.name in attrs:
            kwargs[f.name] = _dec_value(
                attrs[f.name], hints[f.name], f"{where}, attribute '{f.name}'"
            )
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise IRError(f"{where}: {e}") from None


def from_json(text: str, source: str = "<string>") -> Graph:
    """Parse and verify a graph; IRError names the source, node and problem."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise IRError(
            f"{source}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from None
    try:
        return _from_doc(doc, source)
    except IRError as e:
        msg = str(e)
        raise IRError(msg if msg.startswith(source) else f"{source}: {msg}") from None


def _from_doc(doc, source: str) -> Graph:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise IRError(f'not a pqflow IR file (expected "format": "{FORMAT}")')
    version = doc.get("version")
    if version != VERSION:
        raise IRError(
            f"IR version {version!r} is not supported (this pqflow reads version {VERSION})"
        )
    name = _need(doc, "name", str, "graph")
    inputs = []
    for i, v in enumerate(_need(doc, "inputs", list, "graph")):
        vname = _need(v, "name", str, f"input {i}")
        inputs.append(
            Value(vname, _dec_type(_need(v, "type", dict, f"input '{vname}'"), f"input '{vname}'"))
        )
    nodes = []
    for i, nd in enumerate(_need(doc, "nodes", list, "graph")):
        nname = _need(nd, "name", str, f"node {i}")
        opname = _need(nd, "op", str, f"node '{nname}'")
        where = f"{opname} '{nname}'"
        try:
            op = _dec_op(opname, nd, where)
            ins = _need(nd, "inputs", list, where)
            if not all(isinstance(s, str) for s in ins):
                raise IRError(f"{where}: inputs must be names (strings)")
            t = _dec_type(_need(nd, "type", dict, where), where)
        except IRError as e:
            msg = str(e)
            raise IRError(msg if msg.startswith(where) else f"{where}: {msg}") from None
        nodes.append(Node(nname, op, tuple(ins), t))
    outputs = _need(doc, "outputs", list, "graph")
    if not all(isinstance(s, str) for s in outputs):
        raise IRError("graph: outputs must be names (strings)")
    return verify(Graph(name, tuple(inputs), tuple(nodes), tuple(outputs)))


def load(path: str | os.PathLike) -> Graph:
    """Read and verify an IR JSON file."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise IRError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise IRError(f"{p}: cannot read: {e}") from None
    return from_json(text, str(p))
