"""Where a report's design comes from: an IR file (+ a style) or a ``pqflow flow`` folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..hwgen.design import Design
from ..ir import Graph

__all__ = ["digits_test_for", "report_source", "write_flow_report"]


def digits_test_for(graph: Graph) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The digits test split shaped as ``graph``'s input (flat or channels-last images),
    or (None, None) when the input takes neither."""
    from ..models.data import load_digits_split

    shape = tuple(graph.inputs[0].type.shape)
    split = load_digits_split(image=len(shape) == 3)
    if split.x_test[0].size != int(np.prod(shape)):
        return None, None
    return np.ascontiguousarray(split.x_test).reshape(-1, *shape), split.y_test


def report_source(path: Path, style: str = "unrolled", **options) -> tuple[Design, dict, str]:
    """(design, measured cycles, title) of an IR JSON file built in ``style`` with
    ``options``, or of a flow output folder (its ``model.ir.json`` and ``design.json``; the
    simulated cycles of its ``summary.json`` become the measured ones)."""
    from .. import ir
    from .core import design_from_json

    path = Path(path)
    if path.is_dir():
        ir_file, design_file = path / "model.ir.json", path / "design.json"
        for f in (ir_file, design_file):
            if not f.exists():
                raise UserError(
                    f"{path} is not a pqflow flow output folder (no {f.name}); give an IR "
                    "JSON file or the folder `pqflow flow -o` wrote"
                )
        if options or style != "unrolled":
            raise UserError(
                f"{path}: a flow folder fixes the design (design.json); --style, --pe and "
                "--simd apply to an IR file"
            )
        graph = ir.load(ir_file)
        design = design_from_json(graph, json.loads(design_file.read_text()))
        measured = {}
        summary = path / "summary.json"
        if summary.exists():
            v = json.loads(summary.read_text()).get("verify")
            if isinstance(v, dict):
                measured = {
                    "source": f"{v.get('simulator', 'simulation')} ({v.get('vectors')} vectors)",
                    "latency": v.get("latency_cycles"),
                    "ii": v.get("ii_cycles"),
                }
        return design, measured, f"pqflow report: {graph.name} ({path.name})"
    if not path.exists():
        raise UserError(f"{path}: no such IR file or flow folder")
    graph = ir.load(path)
    try:
        design = Design.uniform(graph, style, **options)
    except UserError:
        raise
    except (ValueError, TypeError) as e:
        raise UserError(f"{path}: {e}") from None
    return design, {}, f"pqflow report: {graph.name} ({style})"


def write_flow_report(st) -> list[Path]:
    """The flow's report step: the report of the flow's design (``st.design``) on its
    estimate device, with the oracle's accuracy on the test split and the simulated
    cycles, written into the flow's folder (``report.*``, ``figures/``)."""
    from .core import build_report
    from .render import write_report

    design = getattr(st.design, "design", None) or st.design
    if not isinstance(design, Design):
        hw = st.config.hardware
        design = Design.uniform(st.graph, hw.style, name=hw.top, **hw.impl_options())
    v = st.summary.get("verify")
    measured = {}
    if isinstance(v, dict):
        measured = {
            "source": f"{v.get('simulator', 'simulation')} ({v.get('vectors')} vectors)",
            "latency": v.get("latency_cycles"),
            "ii": v.get("ii_cycles"),
        }
    shape = tuple(design.graph.inputs[0].type.shape)
    x = np.ascontiguousarray(st.split.x_test).reshape(-1, *shape)
    section = getattr(st.config, "estimate", None)
    dev = getattr(section, "device", "xc7z020")
    cfg = st.config
    title = f"pqflow report: {cfg.model.name} on {cfg.model.dataset} ({cfg.hardware.style})"
    rep = build_report(design, dev, x=x, y=st.split.y_test, title=title, measured=measured)
    return write_report(rep, st.work)
