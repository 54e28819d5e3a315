"""Reports: a design's per-layer estimates, latency and oracle accuracy as HTML, Markdown, JSON.

- :func:`build_report` (``Design`` or ``Graph``, device, test data) -> :class:`Report`;
  layers the estimator has no model for are marked ``no estimate`` with its reason.
- :func:`write_report` writes ``report.html`` (figures embedded), ``report.md``,
  ``report.json`` and ``figures/*.png`` (matplotlib, deterministic bytes).
- :func:`report_source` reads an IR file or a ``pqflow flow`` output folder.
"""

from .core import FORMAT, Report, build_report, design_from_json
from .render import FILES, figures, render_html, render_markdown, write_report
from .source import digits_test_for, report_source, write_flow_report

__all__ = [
    "FILES",
    "FORMAT",
    "Report",
    "build_report",
    "design_from_json",
    "digits_test_for",
    "figures",
    "render_html",
    "render_markdown",
    "report_source",
    "write_flow_report",
    "write_report",
]
