"""The report's figures, drawn with matplotlib's Agg canvas and saved as deterministic PNGs.

No pyplot (no global figure state, safe in worker processes); fixed size, DPI and font;
PNG metadata emptied, so the same report gives the same bytes.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["STYLE", "accuracy_figure", "latency_figure", "png", "resource_figure"]

STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "svg.hashsalt": "pqflow",
    "path.simplify": True,
}
DPI = 100
COLORS = {"lut": "#4c72b0", "ff": "#55a868", "dsp": "#c44e52", "bram": "#8172b2", "uram": "#ccb974"}
MISSING = "#bbbbbb"


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes with no metadata (no software version, no time)."""
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _figure(w: float, h: float) -> Figure:
    with matplotlib.rc_context(STYLE):
        return Figure(figsize=(w, h), dpi=DPI, layout="constrained")


def resource_figure(doc: dict) -> Figure:
    """Left: the design's use of each device resource (% of the part). Right: LUTs and
    FFs per layer; layers without an estimate are grey, hatched and labelled."""
    with matplotlib.rc_context(STYLE):
        fig = _figure(9, 3.6)
        ax_u, ax_l = fig.subplots(1, 2, width_ratios=(1, 2))
        est = doc["estimate"]
        util = est["utilization"]
        keys = list(util)
        vals = [100 * (util[k] or 0) for k in keys]
        bars = ax_u.barh(keys, vals, color=[COLORS.get(k, "#777777") for k in keys])
        for b, k in zip(bars, keys, strict=True):
            ax_u.text(
                b.get_width(),
                b.get_y() + b.get_height() / 2,
                f" {est['totals'][k]:,} / {est['capacity'][k]:,}",
                va="center",
                fontsize=8,
            )
        ax_u.set_xlim(0, max(100.0, max(vals, default=0) * 1.6))
        ax_u.invert_yaxis()
        ax_u.set_xlabel(f"% of {est['device']}")
        part = "" if est["complete"] else " (partial)"
        ax_u.set_title(f"Device utilization{part}")

        hw = [r for r in doc["layers"] if r["status"] in ("estimated", "no estimate")]
        y = range(len(hw))
        lut = [r["estimate"]["lut"] if r["estimate"] else 0 for r in hw]
        ff = [r["estimate"]["ff"] if r["estimate"] else 0 for r in hw]
        h = 0.4
        ax_l.barh([i - h / 2 for i in y], lut, h, label="LUT", color=COLORS["lut"])
        ax_l.barh([i + h / 2 for i in y], ff, h, label="FF", color=COLORS["ff"])
        top = max(lut + ff + [1])
        for i, r in enumerate(hw):
            if r["status"] == "no estimate":
                ax_l.barh(i, top, 0.8, color="none", edgecolor=MISSING, hatch="//")
                ax_l.text(top / 50, i, "no estimate", va="center", fontsize=8, color="#555555")
        ax_l.set_yticks(list(y), [f"{r['node']} ({r['op']})" for r in hw])
        ax_l.invert_yaxis()
        ax_l.set_xlabel("cells")
        ax_l.set_title("LUTs and FFs per layer")
        ax_l.legend(loc="best")
        return fig


def latency_figure(doc: dict) -> Figure:
    """Left: when each layer works on a vector along the chain (start and latency, cycles;
    the total is the design's latency). Right: each layer's initiation interval."""
    with matplotlib.rc_context(STYLE):
        fig = _figure(9, 3.4)
        ax_s, ax_i = fig.subplots(1, 2, sharey=True)
        hw = [r for r in doc["layers"] if r["status"] in ("estimated", "no estimate")]
        ys = list(range(len(hw)))
        start = 0
        for i, r in enumerate(hw):
            if r["estimate"] is None:
                ax_s.text(start, i, " no estimate", va="center", fontsize=8, color="#555555")
                continue
            lat = r["estimate"]["latency"]
            ax_s.barh(
                i,
                max(lat, 0.02 * max(1, doc["estimate"]["totals"]["latency"])),
                left=start,
                color=COLORS["lut"] if lat else MISSING,
            )
            start += lat
        ax_s.set_yticks(ys, [f"{r['node']} ({r['op']})" for r in hw])
        ax_s.invert_yaxis()
        ax_s.set_xlabel("cycle")
        total = doc["estimate"]["totals"]["latency"]
        part = "" if doc["estimate"]["complete"] else ", estimated layers only"
        ax_s.set_title(f"Latency per layer (design: {total:,} cycles{part})")
        ii = [r["estimate"]["ii"] if r["estimate"] else 0 for r in hw]
        ax_i.barh(ys, ii, color=COLORS["ff"])
        for i, r in enumerate(hw):
            if r["estimate"] is None:
                ax_i.text(0, i, " no estimate", va="center", fontsize=8, color="#555555")
        ax_i.set_xlabel("cycles per vector")
        ax_i.set_title(f"Initiation interval per layer (II = {doc['estimate']['totals']['ii']:,})")
        return fig


def accuracy_figure(doc: dict) -> Figure | None:
    """Per-class top-1 accuracy of the oracle and its confusion matrix (None when not run)."""
    acc = doc["accuracy"]
    if acc.get("status") != "run":
        return None
    with matplotlib.rc_context(STYLE):
        fig = _figure(9, 3.4)
        ax_c, ax_m = fig.subplots(1, 2)
        per = [100 * (v or 0) for v in acc["per_class"]]
        ax_c.bar(range(len(per)), per, color=COLORS["lut"])
        ax_c.axhline(100 * acc["accuracy"], color="#c44e52", ls="--", label="overall")
        ax_c.set_xticks(range(len(per)))
        ax_c.set_ylim(min(per + [100]) - 10 if per else 0, 100.5)
        ax_c.set_xlabel("class")
        ax_c.set_ylabel("top-1 accuracy (%)")
        ax_c.set_title(f"Oracle on {acc['data']}: {100 * acc['accuracy']:.2f}% of {acc['samples']}")
        ax_c.legend(loc="lower right")
        cm = acc["confusion"]
        ax_m.imshow(cm, cmap="Blues", interpolation="nearest")
        n = len(cm)
        for i in range(n):
            for j in range(n):
                if cm[i][j]:
                    ax_m.text(
                        j,
                        i,
                        cm[i][j],
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if cm[i][j] > max(map(max, cm)) / 2 else "black",
                    )
        ax_m.set_xticks(range(n))
        ax_m.set_yticks(range(n))
        ax_m.set_xlabel("predicted")
        ax_m.set_ylabel("true")
        ax_m.set_title("Confusion matrix")
        return fig
