"""What a report says: per-layer rows, estimate totals and the oracle's accuracy, as data.

:func:`build_report` turns a ``Design`` (or a ``Graph``, built in one style) into a
:class:`Report`, a JSON-ready record every renderer (HTML, Markdown, JSON) reads. Each
hardware node is costed by the estimator's model for it (``pqflow.estimate``); a node the
estimator has no model for is reported as ``no estimate`` with the estimator's reason,
never as zero, and the totals then say they cover only part of the design.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..estimate import EstimateError
from ..estimate.core import RESOURCES, contexts
from ..estimate.device import Device
from ..estimate.device import device as _device
from ..hwgen.design import Design
from ..ir import Dequantize, Flatten, Graph, Quantize, Reshape

__all__ = ["FORMAT", "Report", "build_report", "design_from_json"]

FORMAT = "pqflow-report/1"

ESTIMATED, NO_ESTIMATE, SOFTWARE, WIRING = "estimated", "no estimate", "software", "wiring"


@dataclass(frozen=True)
class Report:
    """A design's report: ``data`` is the JSON document (see :func:`build_report`)."""

    data: dict
    predictions: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def layers(self) -> list[dict]:
        return self.data["layers"]

    @property
    def complete(self) -> bool:
        """Whether every hardware node has an estimate."""
        return self.data["estimate"]["complete"]


def _round(v: float) -> float:
    return round(float(v), 4)


def _density(op) -> tuple[int, int, str]:
    """(weights, nonzero, pattern) over an op's weight tensors (``weight`` only)."""
    w = op.weights().get("weight")
    if w is None:
        return 0, 0, ""
    return int(w.data.size), int(w.nnz), str(w.sparsity)


def _layer_rows(graph: Graph) -> dict[str, dict]:
    types = graph.types()
    rows = {}
    for n in graph.nodes:
        weights, nnz, pattern = _density(n.op)
        in_types = [types[i] for i in n.inputs]
        rows[n.name] = {
            "node": n.name,
            "op": type(n.op).__name__,
            "inputs": list(n.inputs),
            "in_shape": [list(t.shape) for t in in_types],
            "out_shape": list(types[n.name].shape),
            "in_type": [str(t.dtype) for t in in_types],
            "out_type": str(types[n.name].dtype),
            "weights": weights,
            "nonzero": nnz,
            "sparsity": _round(1 - nnz / weights) if weights else None,
            "pattern": pattern or None,
            "style": None,
            "status": None,
            "reason": "",
            "estimate": None,
        }
    return rows


def _estimate_rows(design: Design, dev: Device, rows: dict[str, dict]) -> str:
    """Fill the rows' estimates in place; return a reason when the chain cannot be costed."""
    from ..estimate.models import node_model

    for name, row in rows.items():
        op = design.graph.node(name).op
        if isinstance(op, Quantize | Dequantize):
            row["status"], row["reason"] = SOFTWARE, "float conversion at the graph's edge"
        elif isinstance(op, Flatten | Reshape):
            row["status"], row["reason"] = WIRING, "a reshape is wiring: no logic"
    try:
        ctxs = contexts(design, dev)
    except (ValueError, TypeError) as e:
        reason = f"not a dataflow chain the estimator can cost: {e}"
        for row in rows.values():
            if row["status"] is None:
                row["status"], row["reason"] = NO_ESTIMATE, reason
        return reason
    for ctx in ctxs:
        row = rows[ctx.node.name]
        row["style"] = ctx.style
        if ctx.impl is not None:  # e.g. "folded pe=2 simd=8"
            fields = {k: v for k, v in ctx.impl.describe().items() if k != "style"}
            row["style"] = " ".join([ctx.style, *(f"{k}={v}" for k, v in fields.items())])
        try:
            e = node_model(ctx)
        except EstimateError as err:
            row["status"], row["reason"] = NO_ESTIMATE, str(err)
            continue
        row["status"] = ESTIMATED
        row["estimate"] = _node_dict(e)
    for row in rows.values():
        if row["status"] is None:
            row["status"], row["reason"] = NO_ESTIMATE, "not part of the hardware chain"
    return ""


def _whole(design: Design, dev: Device, rows: dict[str, dict]) -> dict | None:
    """The estimator's totals of the whole design; units it adds beyond the graph's nodes
    (e.g. skip FIFOs) become rows of their own. None when it cannot cost the design."""
    from ..estimate import estimate

    try:
        est = estimate(design, dev)
    except (EstimateError, ValueError, TypeError):
        return None
    for n in est.nodes:
        if n.node in rows:
            continue
        rows[n.node] = {
            "node": n.node,
            "op": n.op,
            "inputs": list(getattr(n, "inputs", ())),
            "in_shape": [],
            "out_shape": [],
            "in_type": [],
            "out_type": "",
            "weights": 0,
            "nonzero": 0,
            "sparsity": None,
            "pattern": None,
            "style": n.style,
            "status": ESTIMATED,
            "reason": "",
            "estimate": _node_dict(n),
        }
    t = est.totals()
    return {**t, "uram": t.get("uram", 0)}


def _node_dict(e) -> dict:
    return {
        "lut": round(e.lut),
        "ff": round(e.ff),
        "dsp": int(e.dsp),
        "bram": int(e.bram),
        "uram": int(e.uram),
        "latency": int(e.latency),
        "ii": int(e.ii),
    }


def _totals(rows: list[dict], dev: Device) -> dict:
    est = [r["estimate"] for r in rows if r["status"] == ESTIMATED]
    missing = [r["node"] for r in rows if r["status"] == NO_ESTIMATE]
    totals = {k: sum(e[k] for e in est) for k in RESOURCES}
    totals["latency"] = sum(e["latency"] for e in est)
    totals["ii"] = max((e["ii"] for e in est), default=1)
    capacity = {"lut": dev.luts, "ff": dev.ffs, "dsp": dev.dsps, "bram": dev.brams}
    if dev.urams:
        capacity["uram"] = dev.urams
    util = {k: _round(totals[k] / c) if c else None for k, c in capacity.items()}
    return {
        "device": dev.name,
        "complete": not missing,
        "missing": missing,
        "totals": totals,
        "capacity": capacity,
        "utilization": util,
    }


def _accuracy(graph: Graph, x, y, data: str) -> tuple[dict, np.ndarray | None]:
    from ..kernels import run

    if x is None or y is None:
        return {"data": data, "status": "not run", "reason": "no test data given"}, None
    out = np.asarray(run(graph, x))
    out = out.reshape(len(out), -1)
    y = np.asarray(y)
    classes = int(y.max()) + 1
    if out.shape[1] != classes:
        reason = f"the graph gives {out.shape[1]} outputs per sample, {data} has {classes} classes"
        return {"data": data, "status": "not run", "reason": reason}, None
    pred = out.argmax(axis=1)
    per_class = [
        _round((pred[y == c] == c).mean()) if (y == c).any() else None for c in range(classes)
    ]
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    return {
        "data": data,
        "status": "run",
        "samples": int(len(y)),
        "accuracy": _round((pred == y).mean()),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }, pred


def build_report(
    source: Graph | Design,
    device: Device | str = "xc7z020",
    *,
    x=None,
    y=None,
    data: str = "digits",
    title: str | None = None,
    measured: dict | None = None,
    **options,
) -> Report:
    """The report of ``source`` on ``device``.

    ``source`` is a ``Design`` or a ``Graph`` (built as ``Design.uniform(graph,
    **options)``, e.g. ``style="folded", pe=2``). With test samples ``x`` and labels ``y``
    the oracle runs on them and the report gives its top-1 accuracy, per class and as a
    confusion matrix. ``measured`` (e.g. simulated ``latency_cycles``/``ii_cycles``) is
    shown beside the estimate.
    """
    dev = _device(device)
    if isinstance(source, Graph):
        style = options.pop("style", "unrolled")
        design = Design.uniform(source, style, **options)
    elif isinstance(source, Design):
        if options:
            raise TypeError("build_report: options apply to a Graph, not to a Design")
        design = source
    else:
        raise TypeError(f"build_report: source must be a Graph or a Design, not {source!r}")
    graph = design.graph
    rows = _layer_rows(graph)
    chain_reason = _estimate_rows(design, dev, rows)
    layers = list(rows.values())
    whole = None
    if not chain_reason and all(r["status"] != NO_ESTIMATE for r in layers):
        whole = _whole(design, dev, rows)
        layers = list(rows.values())
    est = _totals(layers, dev)
    if whole is not None:  # the estimator's own totals: a DAG's latency is its longest path
        est["totals"] = {k: whole[k] for k in est["totals"]}
    est["reason"] = chain_reason
    accuracy, pred = _accuracy(graph, x, y, data)
    doc = {
        "format": FORMAT,
        "title": title or f"pqflow report: {graph.name}",
        "graph": graph.name,
        "design": design.describe(),
        "estimate": est,
        "measured": measured or {},
        "accuracy": accuracy,
        "layers": layers,
    }
    return Report(doc, pred)


def design_from_json(graph: Graph, doc: dict) -> Design:
    """The ``Design`` of ``graph`` that ``Design.describe()`` wrote as ``doc`` (design.json)."""
    from ..hwgen.design import IMPLS, DesignError, UnitOptions

    try:
        impls = {}
        for name, d in doc["nodes"].items():
            fields = {k: v for k, v in d.items() if k not in ("style", "op")}
            impls[name] = IMPLS[d["style"]](**fields)
        return Design(
            graph, impls, UnitOptions(**doc.get("options", {})), doc.get("top", "pqflow_top")
        )
    except (KeyError, TypeError) as e:
        raise DesignError(
            f"design.json does not describe a design of '{graph.name}': {e!r}"
        ) from None
