"""``pqflow explore``: a 24-point sweep of the digits MLP on Dask, resumed after an
interruption, and the same sweep on a separately started scheduler and workers.

Training is cut to a few epochs (the sweep's machinery, not the model, is under test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from pqflow import explore
from pqflow.errors import UserError
from pqflow.explore import (
    OBJECTIVES,
    load_explore_config,
    parse_explore_config,
    points_of,
    run_sweep,
)

EXAMPLE = Path(__file__).parents[1] / "examples" / "explore_digits_mlp.toml"
STOP_AFTER = 6


def quick_config():
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["train"].update(epochs=5, finetune_epochs=2)
    return parse_explore_config(doc)


class Interrupt(KeyboardInterrupt):
    pass


def interrupted_then_resumed(out: Path):
    """The example's sweep on a local cluster, interrupted after STOP_AFTER points (as
    Ctrl-C would), then resumed: (first folder listing, result)."""
    cfg = quick_config()
    seen = []

    def stop(result):
        seen.append(result)
        if len(seen) == STOP_AFTER:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_sweep(cfg, out, progress=False, on_point=stop)
    first = {p.name: p.read_text() for p in (out / "points").glob("*.json")}
    assert not (out / "pareto.json").exists()  # the interrupted sweep wrote no result
    return first, run_sweep(cfg, out, resume=True, progress=False)


def test_the_example_sweeps_at_least_24_points():
    cfg = load_explore_config(EXAMPLE)
    points = points_of(cfg)
    assert len(points) == len(set(points)) >= 24
    assert {p.style for p in points} == {"unrolled", "folded", "sparse"}
    assert len({(p.weight_bits, p.sparsity) for p in points}) == 6


def test_sweep_resumes_after_an_interruption_and_yields_a_pareto_front(tmp_path, capsys):
    """One test (one sweep, also under pytest-xdist): resume, then the front and plot."""
    out = tmp_path / "sweep"
    first, res = interrupted_then_resumed(out)
    assert len(first) == STOP_AFTER
    assert (res.cached, res.computed, len(res.results)) == (STOP_AFTER, 24 - STOP_AFTER, 24)
    # the cached points were read back, not recomputed (their files are untouched)
    for name, text in first.items():
        assert (out / "points" / name).read_text() == text
    assert len(list((out / "points").glob("*.json"))) == 24
    check_front(res, out)
    check_existing_folders(out, tmp_path)
    # the CLI on the finished folder: everything cached, no cluster started, JSON on stdout
    config = tmp_path / "quick.toml"
    config.write_text(
        EXAMPLE.read_text()
        .replace("epochs = 40", "epochs = 5")
        .replace("finetune_epochs = 20", "finetune_epochs = 2")
    )
    assert load_explore_config(config) == quick_config()
    from pqflow.cli import main

    capsys.readouterr()
    main(["explore", str(config), "-o", str(out), "--resume", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert (doc["points"], doc["computed"], doc["cached"]) == (24, 0, 24)
    assert [p["key"] for p in doc["pareto"]] == [r["key"] for r in res.front]


def check_front(res, out: Path) -> None:
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["points"] == 24 and len(doc["pareto"]) == len(res.front) >= 2
    png = (out / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    objs = res.objectives
    assert objs == ["accuracy", "utilization", "latency"]

    def dominates(a, b):
        ok = all(a[o] >= b[o] if OBJECTIVES[o] == "max" else a[o] <= b[o] for o in objs)
        return ok and any(a[o] != b[o] for o in objs)

    fits = [r for r in res.results if r["fits"]]
    front = {r["key"] for r in res.front}
    for r in fits:
        beaten = any(dominates(o, r) for o in fits)
        assert beaten == (r["key"] not in front), r["label"]
    assert all(r["fits"] for r in res.front)
    # accuracy is the oracle's per (bits, sparsity): equal across styles of one graph
    by_graph = {}
    for r in res.results:
        p = r["point"]
        by_graph.setdefault((p["weight_bits"], p["sparsity"]), set()).add(r["accuracy"])
    assert all(len(v) == 1 for v in by_graph.values())
    assert min(r["accuracy"] for r in res.results) > 0.8
    # folded points follow (MH/PE)(MW/SIMD): the wider SIMD target is never slower
    folded = [r for r in res.results if r["point"]["style"] == "folded"]
    assert {r["point"]["simd"] for r in folded} == {8, 32}
    for r in folded:
        if r["point"]["simd"] == 8:
            twin = next(
                o
                for o in folded
                if o["point"] | {"simd": 32} == r["point"] | {"simd": 32} and o is not r
            )
            assert twin["ii"] < r["ii"]


def check_existing_folders(out: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="pass --resume to continue its sweep, --force"):
        run_sweep(quick_config(), out, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    with pytest.raises(UserError, match="is not a pqflow explore folder"):
        run_sweep(quick_config(), other, resume=True, progress=False)
    assert (other / "mine.txt").read_text() == "keep"


def _start(args, log: Path) -> subprocess.Popen:
    dask = Path(sys.executable).with_name("dask")
    return subprocess.Popen(
        [str(dask), *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_the_sweep_runs_on_a_separately_started_dask_cluster(tmp_path, monkeypatch):
    """`dask scheduler` + two `dask worker` processes on 127.0.0.1, given by address:
    every task of the sweep (training, pruning, lowering, oracle, estimates) runs there."""
    cfg = quick_config()
    out = tmp_path / "remote"
    sf = tmp_path / "scheduler.json"
    procs = [
        _start(
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(sf),
            ],
            tmp_path / "scheduler.log",
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not sf.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sf.exists(), (tmp_path / "scheduler.log").read_text()
        address = json.loads(sf.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        # a scheduler without workers: a one-line error after a bounded wait, no folder left
        monkeypatch.setattr(explore, "WORKER_WAIT", 2)
        with pytest.raises(UserError, match="has had no worker for 2 s; start one with `dask wo"):
            run_sweep(cfg, out, scheduler=address, progress=False)
        assert not out.exists()
        monkeypatch.undo()
        for i in range(2):
            procs.append(
                _start(
                    [
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--no-nanny",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                    ],
                    tmp_path / f"worker{i}.log",
                )
            )
        res = run_sweep(cfg, out, scheduler=address, progress=False)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert res.computed == 24 and res.cached == 0
    workers = {p.pid for p in procs[1:]}
    ran = {
        int(json.loads(f.read_text())["worker"].rsplit(":", 1)[1])
        for f in (out / "points").glob("*.json")
    }
    assert ran <= workers and os.getpid() not in ran
    check_front(res, out)
    assert all(p.poll() is not None for p in procs)


def cli(*args: str) -> tuple[int, str]:
    """``pqflow`` in this process: (exit code, stderr)."""
    import contextlib
    import io

    from pqflow.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        main(list(args))
    return exc.value.code, err.getvalue()


@pytest.mark.parametrize(
    "edit, args, expect",
    [
        (None, ("--force", "--resume"), "give one of them"),
        (None, ("--scheduler", "127.0.0.1:8786"), "give an address like tcp://"),
        (lambda s: s.replace("[sweep]", "[sweep]\ncolor = 1"), (), "[sweep] color: unknown key"),
        (lambda s: s.replace('"sparse"]', '"spars"]'), (), "'spars' is not known"),
        (lambda s: s.replace("[[2, 8], [2, 32]]", "[[2, 0]]"), (), "positive integers"),
        (lambda s: s.replace('"utilization", "latency"', '"area"'), (), "'area' is not known"),
        (None, ("--out-exists",), "exists; pass --resume to continue its sweep"),
    ],
)
def test_explore_cli_errors_are_one_line(tmp_path, edit, args, expect):
    config = tmp_path / "sweep.toml"
    text = EXAMPLE.read_text()
    config.write_text(edit(text) if edit else text)
    out = tmp_path / "out"
    if "--out-exists" in args:
        out.mkdir()
        (out / "mine.txt").write_text("keep")
        args = ()
    code, err = cli("explore", str(config), "-o", str(out), "--quiet", *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], err
    assert not out.exists() or (out / "mine.txt").read_text() == "keep"


def test_explore_help_documents_every_option(capsys):
    from pqflow.cli import main

    main(["explore", "--help"])
    text = capsys.readouterr().out
    for opt in ("--out", "--force", "--resume", "--scheduler", "--workers", "--yosys", "--json"):
        assert opt in text
