"""``pqflow report``: the digits MLP and CNN as HTML, Markdown and JSON, rendered in Chromium.

The models are trained briefly (faithfulness of the report, not accuracy, is the point)
and lowered once per module. The report's numbers are checked against the estimator's
public API and the oracle, run independently here; layers the estimator has no model
for must appear as "no estimate" with the estimator's own reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from toolcheck import tool_absent

from pqflow import ir
from pqflow.cli import main
from pqflow.estimate import EstimateError, device, estimate
from pqflow.estimate.core import contexts
from pqflow.estimate.models import node_model
from pqflow.hwgen import Design
from pqflow.kernels import run
from pqflow.report import build_report, digits_test_for, write_report


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """{"mlp": path, "cnn": path} of IR files of the digits MLP (w6a6) and CNN (w8a8)."""
    from pqflow.models import TrainConfig, load_digits_split, quantize_mlp, train_or_load
    from pqflow.models.lower import lower, lower_mlp
    from pqflow.models.qmodules import QuantConfig, quantize_model

    folder = tmp_path_factory.mktemp("report-graphs")
    d = load_digits_split()
    mlp = train_or_load("mlp", d.x_train, d.y_train, TrainConfig(epochs=5))
    ir.save(lower_mlp(quantize_mlp(mlp, d.x_train, w_bits=6, a_bits=6)), folder / "mlp.json")
    di = load_digits_split(image=True)
    cnn = train_or_load("cnn", di.x_train, di.y_train, TrainConfig(epochs=1))
    q = quantize_model(cnn, QuantConfig(), di.x_train[:300])
    ir.save(lower(q, di.x_train[:4]), folder / "cnn.json")
    return {"mlp": folder / "mlp.json", "cnn": folder / "cnn.json"}


def expected_missing(design: Design) -> dict[str, str]:
    """The nodes the estimator has no model for, with its message (the public API)."""
    out = {}
    for ctx in contexts(design, device("xc7z020")):
        try:
            node_model(ctx)
        except EstimateError as e:
            out[ctx.node.name] = str(e)
    return out


def oracle_accuracy(graph: ir.Graph) -> float:
    x, y = digits_test_for(graph)
    out = np.asarray(run(graph, x))
    return float((out.reshape(len(out), -1).argmax(1) == y).mean())


@pytest.mark.parametrize("name, style", [("mlp", "folded"), ("cnn", "unrolled")])
def test_report_writes_three_formats_with_the_estimators_numbers(graphs, tmp_path, name, style):
    out = tmp_path / "rep"
    options = ["--pe", "2", "--simd", "8"] if style == "folded" else []
    main(["report", str(graphs[name]), "-o", str(out), "--style", style, *options])
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "figures/accuracy.png",
        "figures/latency.png",
        "figures/resources.png",
        "report.html",
        "report.json",
        "report.md",
    ]
    for png in (out / "figures").iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"Software" not in png.read_bytes()  # no version/time metadata
    doc = json.loads((out / "report.json").read_text())
    graph = ir.load(graphs[name])
    design = Design.uniform(graph, style, **({"pe": 2, "simd": 8} if style == "folded" else {}))
    assert [r["node"] for r in doc["layers"]][: len(graph)] == [n.name for n in graph.nodes]

    # every estimated layer carries the estimator's numbers; missing ones its reason
    missing = expected_missing(design)
    by_name = {r["node"]: r for r in doc["layers"]}
    assert sorted(doc["estimate"]["missing"]) == sorted(missing)
    assert doc["estimate"]["complete"] == (not missing)
    lut = 0
    for ctx in contexts(design, device("xc7z020")):
        row = by_name[ctx.node.name]
        if ctx.node.name in missing:
            assert row["status"] == "no estimate" and row["estimate"] is None
            assert row["reason"] == missing[ctx.node.name]
            continue
        e = node_model(ctx)
        assert row["estimate"]["lut"] == round(e.lut) and row["estimate"]["dsp"] == e.dsp
        assert (row["estimate"]["latency"], row["estimate"]["ii"]) == (e.latency, e.ii)
        lut += round(e.lut)
    if missing:  # the totals cover the estimated layers only
        assert doc["estimate"]["totals"]["lut"] == lut
    else:  # the estimator's own totals
        assert doc["estimate"]["totals"] == {**estimate(design).totals(), "uram": 0}
    if name == "cnn":
        assert by_name[graph.nodes[0].name]["status"] == "software"
        conv = [n.name for n in graph.nodes if isinstance(n.op, ir.Conv2d)]
        assert by_name[conv[0]]["weights"] > 0 and by_name[conv[0]]["sparsity"] is not None

    # the oracle's accuracy on the whole digits test split
    assert doc["accuracy"]["samples"] == 360
    assert doc["accuracy"]["accuracy"] == pytest.approx(oracle_accuracy(graph), abs=1e-4)
    assert sum(map(sum, doc["accuracy"]["confusion"])) == 360

    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert html.count('src="data:image/png;base64,') == 3
    assert md.count("](figures/") == 3
    for n in graph.nodes:
        assert f"| {n.name} | {type(n.op).__name__} |" in md
    for node, reason in missing.items():
        assert "no estimate" in md and reason.split(":")[0] in md, node
        assert 'id="partial"' in html


def test_report_is_deterministic(graphs, tmp_path):
    g = ir.load(graphs["mlp"])
    x, y = digits_test_for(g)
    for folder in ("a", "b"):
        write_report(build_report(g, "xczu3eg", x=x, y=y, style="sparse", pe=2), tmp_path / folder)
    for f in sorted((tmp_path / "a").rglob("*")):
        if f.is_file():
            assert (
                f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()
            ), f


CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const p = document.createElement("pre");
  p.id = "pqflow-check";
  p.textContent = JSON.stringify({
    images: imgs.length,
    widths: imgs.map(i => (i.complete ? i.naturalWidth : 0)),
    tables: [...document.querySelectorAll("table")].map(t => t.id),
    layer_rows: document.querySelectorAll("#layers tr").length - 1,
    missing_cells: [...document.querySelectorAll("#layers td.reason")].length,
  });
  document.body.appendChild(p);
});
</script>
</body>"""


def chromium() -> str:
    for exe in ("chromium", "chromium-browser"):
        path = shutil.which(exe)
        if path:
            return path
    tool_absent("chromium not found: run scripts/setup.sh (apt-get install chromium)")


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_html_report_renders_in_headless_chromium(graphs, tmp_path, name):
    exe = chromium()
    out = tmp_path / "rep"
    main(["report", str(graphs[name]), "-o", str(out)])
    doc = json.loads((out / "report.json").read_text())
    # the report with a script that writes what the browser laid out into the DOM
    page = tmp_path / "check.html"
    page.write_text((out / "report.html").read_text().replace("</body>", CHECK))
    p = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    start = p.stdout.index('<pre id="pqflow-check">') + len('<pre id="pqflow-check">')
    got = json.loads(p.stdout[start : p.stdout.index("</pre>", start)])
    assert got["images"] == 3 and all(w == 900 for w in got["widths"]), got
    assert got["tables"] == ["totals", "layers"]
    assert got["layer_rows"] == len(doc["layers"])
    assert got["missing_cells"] == len(doc["estimate"]["missing"])
    if name != "mlp":
        return
    # a screenshot of the page is not blank
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1200,2400",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            (out / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[0] == 2400 and img.std() > 0.05


def pqflow(*args: str) -> tuple[int, str]:
    """Run the command line in this process: (exit code, stderr)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        main(list(args))
    return exc.value.code, err.getvalue()


def one_line_error(p: tuple[int, str]) -> str:
    code, stderr = p
    assert code == 2, p
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_report_cli_errors_are_one_line(graphs, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    err = one_line_error(pqflow("report", str(graphs["mlp"]), "-o", str(tmp_path / "taken")))
    assert "exists; pass --force" in err
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep"
    err = one_line_error(
        pqflow("report", str(graphs["mlp"]), "-o", str(tmp_path / "a"), "--pe", "2")
    )
    assert "--pe applies to the folded and sparse style" in err
    err = one_line_error(pqflow("report", str(tmp_path / "nope.json"), "-o", str(tmp_path / "b")))
    assert "no such IR file or flow folder" in err
    err = one_line_error(pqflow("report", str(tmp_path / "taken"), "-o", str(tmp_path / "c")))
    assert "not a pqflow flow output folder (no model.ir.json)" in err
    assert not any((tmp_path / d).exists() for d in "abc")


def test_report_of_a_flow_folder_shows_the_measured_cycles(graphs, tmp_path, capsys):
    """A flow output folder: its design.json fixes the style; summary.json's cycles shown."""
    flow = tmp_path / "flow"
    flow.mkdir()
    g = ir.load(graphs["mlp"])
    design = Design.uniform(g, "folded", pe=2, simd=4)
    ir.save(g, flow / "model.ir.json")
    (flow / "design.json").write_text(json.dumps(design.describe()))
    verify = {"simulator": "verilator", "vectors": 360, "latency_cycles": 7, "ii_cycles": 3}
    (flow / "summary.json").write_text(json.dumps({"verify": verify}))
    main(["report", str(flow), "-o", str(tmp_path / "rep"), "--json", "--no-accuracy"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["design"] == design.describe()
    assert doc["measured"] == {"source": "verilator (360 vectors)", "latency": 7, "ii": 3}
    assert doc["accuracy"]["status"] == "not run"
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| latency (cycles) |" in md and "measured 7" in md
    assert not (tmp_path / "rep" / "figures" / "accuracy.png").exists()
    err = one_line_error(
        pqflow("report", str(flow), "-o", str(tmp_path / "x"), "--style", "sparse")
    )
    assert "a flow folder fixes the design" in err


def test_layers_without_a_model_are_reported_as_no_estimate(graphs, tmp_path, monkeypatch):
    """Whatever the estimator covers today: a layer it has no model for is never zero."""
    from pqflow.estimate import models

    monkeypatch.delitem(models.registry, (ir.ReLU, "unit"))
    g = ir.load(graphs["mlp"])
    rep = build_report(g, style="folded", pe=2, simd=8)
    relus = [n.name for n in g.nodes if isinstance(n.op, ir.ReLU)]
    assert relus and rep.data["estimate"]["missing"] == relus and not rep.complete
    for row in rep.layers:
        if row["node"] in relus:
            assert row["status"] == "no estimate" and row["estimate"] is None
            assert "no resource model for ReLU in style 'unit'" in row["reason"]
    dense = [r["estimate"]["lut"] for r in rep.layers if r["op"] in ("Dense", "Requant")]
    assert rep.data["estimate"]["totals"]["lut"] == sum(dense)
    write_report(rep, tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert html.count('class="l reason">no estimate: ') == len(relus)
    assert f"Partial estimate: {len(relus)} layer(s) have no estimate" in html
    assert "**Partial estimate**" in (tmp_path / "report.md").read_text()
