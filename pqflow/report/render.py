"""Render a :class:`~pqflow.report.core.Report` as HTML, Markdown and JSON (Jinja templates).

``write_report(report, folder)`` writes ``report.html`` (self-contained: the figures are
embedded as base64 PNGs), ``report.md`` (linking ``figures/*.png``), ``report.json`` and
the PNGs. Every file is deterministic: the same report gives the same bytes.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jinja2

from .core import Report
from .plots import accuracy_figure, latency_figure, png, resource_figure

__all__ = ["FILES", "figures", "render_html", "render_markdown", "write_report"]

FILES = ("report.html", "report.md", "report.json")

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("pqflow.report", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def _num(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _shape(s) -> str:
    return "x".join(str(d) for d in s) if s else "scalar"


_env.filters.update(num=_num, pct=_pct, shape=_shape)

FIGURES = (
    ("resources", "Resources", resource_figure),
    ("latency", "Latency", latency_figure),
    ("accuracy", "Accuracy", accuracy_figure),
)


def figures(report: Report) -> dict[str, bytes]:
    """The report's PNG figures by name (``accuracy`` only when the oracle ran)."""
    out = {}
    for name, _, draw in FIGURES:
        fig = draw(report.data)
        if fig is not None:
            out[name] = png(fig)
    return out


def _context(report: Report, pngs: dict[str, bytes]) -> dict:
    return {
        "r": report.data,
        "figures": [
            {
                "name": name,
                "title": title,
                "file": f"figures/{name}.png",
                "b64": base64.b64encode(pngs[name]).decode("ascii"),
            }
            for name, title, _ in FIGURES
            if name in pngs
        ],
        "columns": ("lut", "ff", "dsp", "bram", "latency", "ii"),
    }


def render_html(report: Report, pngs: dict[str, bytes] | None = None) -> str:
    pngs = figures(report) if pngs is None else pngs
    return _env.get_template("report.html.j2").render(_context(report, pngs))


def render_markdown(report: Report, pngs: dict[str, bytes] | None = None) -> str:
    pngs = figures(report) if pngs is None else pngs
    return _env.get_template("report.md.j2").render(_context(report, pngs))


def write_report(report: Report, folder: str | Path) -> list[Path]:
    """Write the three formats and the figures into ``folder`` (created); return the paths."""
    folder = Path(folder)
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    pngs = figures(report)
    paths = []
    for name, data in pngs.items():
        p = folder / "figures" / f"{name}.png"
        p.write_bytes(data)
        paths.append(p)
    doc = {**report.data, "figures": {k: f"figures/{k}.png" for k in pngs}}
    for name, text in (
        ("report.html", render_html(report, pngs)),
        ("report.md", render_markdown(report, pngs)),
        ("report.json", json.dumps(doc, indent=2) + "\n"),
    ):
        (folder / name).write_text(text)
        paths.append(folder / name)
    return paths
