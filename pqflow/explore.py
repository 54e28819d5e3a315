"""Design-space exploration: sweep bit widths x sparsity x style x folding, keep the Pareto front.

``pqflow explore sweep.toml -o OUT`` builds every design point of the sweep, scores it
-- top-1 accuracy of the bit-exact oracle on the digits test split, resources and
latency from ``pqflow.estimate`` (yosys counts too with ``yosys = true``) -- and writes
the points that no other point beats on every objective (the Pareto front) among those
that fit the device (``utilization``, the largest fraction of its LUTs, FFs, DSPs and
block RAMs a point uses, at most 1).

Example (``examples/explore_digits_mlp.toml``)::

    [model]
    name = "mlp"               # the digits MLP
    dataset = "digits"

    [train]
    epochs = 40                # the float model, trained once
    finetune_epochs = 20       # after pruning, per sparsity
    seed = 0

    [sweep]
    weight_bits = [4, 6, 8]
    act_bits = []              # [] = the weight bits (paired); else a product with them
    sparsity = [0.0, 0.8]      # global L1 element pruning, fine-tuned
    styles = ["unrolled", "folded", "sparse"]
    folding = [[2, 8], [2, 32]]   # (pe, simd) targets: folded uses both, sparse pe

    [score]
    device = "xc7z020"
    objectives = ["accuracy", "utilization", "latency"]  # accuracy maximised, the rest minimised
    yosys = false

A folding target is fitted to each layer: PE becomes the largest divisor of the layer's
outputs not above it, SIMD the largest divisor of its inputs (``Folded`` needs PE | MH,
SIMD | MW), so one target applies to every layer.

The work is a task graph on Dask -- train the float model once, prune and fine-tune it
per sparsity, quantize, lower and run the oracle per (bits, sparsity), estimate per
point -- on a local cluster (processes, 2 workers) by default or on a running one given
its scheduler address. The client writes each finished point to ``OUT/points/<key>.json``
(each graph to ``OUT/graphs/<key>.json``, each pruned model to ``OUT/models/<key>.pt``)
the moment it arrives, keyed by a hash of everything that determines it (its part of the
config and pqflow's source), so an interrupted sweep resumed with ``resume=True``
computes only what is missing.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .config import ConfigError, load_toml, parse_sections
from .errors import UserError

__all__ = [
    "OBJECTIVES",
    "ExploreConfig",
    "Point",
    "SweepResult",
    "load_explore_config",
    "pareto_front",
    "parse_explore_config",
    "points_of",
    "run_sweep",
]

OBJECTIVES = {
    "accuracy": "max",
    "lut": "min",
    "ff": "min",
    "dsp": "min",
    "bram": "min",
    "latency": "min",
    "ii": "min",
    "utilization": "min",
}
"""What a point can be scored on, and which way is better. ``utilization`` is the largest
fraction of the device's LUTs, FFs, DSPs and block RAMs the point uses."""

STYLES = ("unrolled", "folded", "sparse")
FORMAT = "pqflow-explore/1"


# --- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSection:
    name: str = "mlp"
    dataset: str = "digits"

    def check(self) -> None:
        if self.dataset != "digits":
            raise ConfigError(f"[model] dataset: '{self.dataset}' is not known (known: digits)")
        if self.name != "mlp":
            raise ConfigError(f"[model] name: '{self.name}' is not supported by explore yet (mlp)")


@dataclass(frozen=True)
class TrainSection:
    epochs: int = 40
    finetune_epochs: int = 20
    seed: int = 0

    def check(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"[train] epochs must be at least 1, not {self.epochs}")
        if self.finetune_epochs < 0:
            raise ConfigError(f"[train] finetune_epochs must be >= 0, not {self.finetune_epochs}")


@dataclass(frozen=True)
class SweepSection:
    weight_bits: list = field(default_factory=lambda: [4, 6, 8])
    act_bits: list = field(default_factory=list)
    sparsity: list = field(default_factory=lambda: [0.0, 0.8])
    styles: list = field(default_factory=lambda: list(STYLES))
    folding: list = field(default_factory=lambda: [[2, 8], [2, 32]])

    def check(self) -> None:
        for k in ("weight_bits", "act_bits"):
            for v in getattr(self, k):
                if not isinstance(v, int) or isinstance(v, bool) or not 2 <= v <= 16:
                    raise ConfigError(f"[sweep] {k}: every entry must be from 2 to 16, not {v!r}")
        if not self.weight_bits:
            raise ConfigError("[sweep] weight_bits: give at least one width, e.g. [4, 8]")
        if not self.sparsity:
            raise ConfigError("[sweep] sparsity: give at least one value, e.g. [0.0]")
        for v in self.sparsity:
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v < 1.0:
                raise ConfigError(f"[sweep] sparsity: every entry must be in [0, 1), not {v!r}")
        if not self.styles:
            raise ConfigError(f"[sweep] styles: give at least one of {', '.join(STYLES)}")
        for s in self.styles:
            if s not in STYLES:
                raise ConfigError(f"[sweep] styles: '{s}' is not known ({', '.join(STYLES)})")
        needs = any(s != "unrolled" for s in self.styles)
        if needs and not self.folding:
            raise ConfigError("[sweep] folding: folded/sparse styles need [[pe, simd], ...]")
        for f in self.folding:
            ok = (
                isinstance(f, list)
                and len(f) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in f)
            )
            if not ok:
                raise ConfigError(
                    f"[sweep] folding: every entry must be [pe, simd] with positive integers, "
                    f"not {f!r}"
                )


@dataclass(frozen=True)
class ScoreSection:
    device: str = "xc7z020"
    objectives: list = field(default_factory=lambda: ["accuracy", "utilization", "latency"])
    yosys: bool = False

    def check(self) -> None:
        from .estimate.device import DEVICES

        if self.device not in DEVICES:
            raise ConfigError(
                f"[score] device: '{self.device}' is not known ({', '.join(sorted(DEVICES))})"
            )
        if len(self.objectives) < 2:
            raise ConfigError("[score] objectives: give at least two, e.g. ['accuracy', 'lut']")
        for o in self.objectives:
            if o not in OBJECTIVES:
                raise ConfigError(
                    f"[score] objectives: '{o}' is not known ({', '.join(OBJECTIVES)})"
                )


@dataclass(frozen=True)
class ExploreConfig:
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    sweep: SweepSection = field(default_factory=SweepSection)
    score: ScoreSection = field(default_factory=ScoreSection)

    def check(self) -> ExploreConfig:
        for f in fields(self):
            getattr(self, f.name).check()
        return self


def parse_explore_config(doc: dict) -> ExploreConfig:
    """An ``ExploreConfig`` from a parsed TOML document; ConfigError names the key."""
    return parse_sections(ExploreConfig, doc)


def load_explore_config(path: str | Path) -> ExploreConfig:
    """Read and check a sweep TOML file; ConfigError names the file and the key."""
    return load_toml(path, parse_explore_config, "sweep config")


# --- design points --------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One design: bit widths, sparsity, style and folding target (pe, simd; 0 = unused)."""

    weight_bits: int
    act_bits: int
    sparsity: float
    style: str
    pe: int = 0
    simd: int = 0

    @property
    def label(self) -> str:
        fold = {"folded": f" pe{self.pe} simd{self.simd}", "sparse": f" pe{self.pe}"}
        return f"w{self.weight_bits}a{self.act_bits} s{self.sparsity:g} {self.style}" + fold.get(
            self.style, ""
        )


def points_of(cfg: ExploreConfig) -> list[Point]:
    """Every design point of the sweep, in a fixed order, without duplicates."""
    s = cfg.sweep
    bits = (
        [(w, w) for w in s.weight_bits]
        if not s.act_bits
        else list(itertools.product(s.weight_bits, s.act_bits))
    )
    out: list[Point] = []
    for (wb, ab), sp, style in itertools.product(bits, s.sparsity, s.styles):
        if style == "unrolled":
            folds = [(0, 0)]
        elif style == "sparse":
            folds = [(pe, 0) for pe in dict.fromkeys(f[0] for f in s.folding)]
        else:
            folds = [tuple(f) for f in s.folding]
        for pe, simd in folds:
            p = Point(wb, ab, float(sp), style, pe, simd)
            if p not in out:
                out.append(p)
    return out


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


@functools.cache
def code_digest() -> str:
    """A hash of the pqflow source a point's scores come from (models, IR, oracle, hardware,
    estimator and this module): a cached point of older code is computed again."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for sub in ("estimate", "hwgen", "ir", "kernels", "models"):
        for p in sorted((root / sub).rglob("*")):
            if p.suffix in (".py", ".json", ".j2") and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(root)).encode())
                h.update(p.read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:20]


def model_key(cfg: ExploreConfig, sparsity: float) -> str:
    return _digest([asdict(cfg.model), asdict(cfg.train), sparsity, code_digest()])


def graph_key(cfg: ExploreConfig, p: Point) -> str:
    return _digest([model_key(cfg, p.sparsity), p.weight_bits, p.act_bits])


def point_key(cfg: ExploreConfig, p: Point) -> str:
    return _digest([graph_key(cfg, p), asdict(p), cfg.score.device, cfg.score.yosys, FORMAT])


# --- the tasks (run on Dask workers: module-level functions, plain arguments) ---------------


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def task_train(model: dict, train: dict):
    """The float model, trained once (``model``/``train``: the config sections as dicts)."""
    from .models.data import load_digits_split
    from .models.train import TrainConfig
    from .models.train import train as fit
    from .models.zoo import build

    _one_thread()
    d = load_digits_split()
    tc = TrainConfig(epochs=train["epochs"], seed=train["seed"])
    return fit(build(model["name"], seed=train["seed"]), d.x_train, d.y_train, tc)


def task_prune(float_model, sparsity: float, train: dict):
    """The float model pruned to ``sparsity`` (global L1) and fine-tuned with the mask."""
    import copy

    from .models.data import load_digits_split
    from .models.quant import prune_and_finetune
    from .models.train import TrainConfig

    _one_thread()
    if sparsity == 0:
        return float_model
    d = load_digits_split()
    ft = TrainConfig(
        epochs=max(train["finetune_epochs"], 1), seed=train["seed"], lr=TrainConfig().lr / 2
    )
    return prune_and_finetune(copy.deepcopy(float_model), d.x_train, d.y_train, sparsity, ft)


def task_graph(model, weight_bits: int, act_bits: int) -> dict:
    """Quantize, lower and run the oracle on the digits test split: the IR and its accuracy."""
    import numpy as np

    from . import ir
    from .kernels import run
    from .models.data import load_digits_split
    from .models.lower import lower_mlp
    from .models.quant import quantize_mlp

    _one_thread()
    d = load_digits_split()
    q = quantize_mlp(model, d.x_train, w_bits=weight_bits, a_bits=act_bits)
    graph = lower_mlp(q)
    out = np.asarray(run(graph, d.x_test))
    pred = out.reshape(len(out), -1).argmax(axis=1)
    dense = [n for n in graph.nodes if isinstance(n.op, ir.Dense)]
    total = sum(n.op.weight.data.size for n in dense)
    nnz = sum(n.op.weight.nnz for n in dense)
    return {
        "graph": ir.to_json(graph),
        "accuracy": float((pred == d.y_test).mean()),
        "weights": int(total),
        "nonzero": int(nnz),
    }


def fitted_design(graph, p: Point):
    """The ``Design`` of point ``p``: its folding target fitted to every layer
    (``Design.fitted``: the largest divisor of each matrix not above the target)."""
    from .hwgen.design import Design

    folding = {"folded": {"pe": p.pe, "simd": p.simd}, "sparse": {"pe": p.pe}}
    return Design.fitted(graph, p.style, **folding.get(p.style, {}))


def task_point(graph_doc: dict, point: dict, device_name: str, yosys: bool) -> dict:
    """Score one point: the oracle's accuracy (from its graph), the estimate, yosys if asked."""
    from . import ir
    from .estimate import estimate
    from .estimate.device import device

    p = Point(**point)
    graph = ir.from_json(graph_doc["graph"])
    design = fitted_design(graph, p)
    dev = device(device_name)
    est = estimate(design, dev)
    t = est.totals()
    caps = {"lut": dev.luts, "ff": dev.ffs, "dsp": dev.dsps, "bram": dev.brams}
    util = max((t[k] / c for k, c in caps.items() if c), default=0.0)
    res = {
        "point": asdict(p),
        "label": p.label,
        "accuracy": graph_doc["accuracy"],
        "density": round(graph_doc["nonzero"] / graph_doc["weights"], 4),
        **{k: t[k] for k in ("lut", "ff", "dsp", "bram", "latency", "ii")},
        "utilization": round(util, 4),
        "fits": bool(util <= 1.0),
        "design": {name: impl.describe() for name, impl in design.impls},
        "worker": f"{os.uname().nodename}:{os.getpid()}",
    }
    if yosys:
        from .estimate import synthesize
        from .hwgen import generate_verilog

        v = generate_verilog(design)
        syn = synthesize(v.text, v.top, dev.family, arch=dev.yosys_arch)
        res["yosys"] = {k: syn[k] for k in ("lut", "ff", "dsp", "bram") if k in syn}
    return res


# --- Pareto front ---------------------------------------------------------------------------


def _better_or_equal(a: dict, b: dict, objectives) -> bool:
    return all((a[o] >= b[o]) if OBJECTIVES[o] == "max" else (a[o] <= b[o]) for o in objectives)


def pareto_front(results: list[dict], objectives) -> list[dict]:
    """The results no other result dominates (at least as good on every objective and
    strictly better on one), in their given order. Ties on every objective all stay."""
    front = []
    for r in results:
        dominated = any(
            _better_or_equal(o, r, objectives) and any(o[k] != r[k] for k in objectives)
            for o in results
        )
        if not dominated:
            front.append(r)
    return front


def pareto_figure(results: list[dict], front: list[dict], objectives, device_name: str):
    """Accuracy against each other objective: every point by style, the front in red."""
    import matplotlib

    from .report.plots import STYLE, _figure

    others = [o for o in objectives if o != "accuracy"] or ["lut"]
    markers = {"unrolled": "o", "folded": "s", "sparse": "^"}
    in_front = {r["key"] for r in front}
    with matplotlib.rc_context(STYLE):
        fig = _figure(4.2 * len(others), 3.8)
        axes = fig.subplots(1, len(others), squeeze=False)[0]
        for ax, o in zip(axes, others, strict=True):
            for style, m in markers.items():
                for fits, color, what in ((True, "#6b7f99", ""), (False, "#d9d9d9", ", no fit")):
                    pts = [r for r in results if r["point"]["style"] == style and r["fits"] == fits]
                    if pts:
                        ax.scatter(
                            [r[o] for r in pts],
                            [100 * r["accuracy"] for r in pts],
                            marker=m,
                            color=color,
                            label=style + what,
                            s=28,
                        )
            fr = sorted((r for r in results if r["key"] in in_front), key=lambda r: r[o])
            ax.scatter(
                [r[o] for r in fr],
                [100 * r["accuracy"] for r in fr],
                facecolors="none",
                edgecolors="#c44e52",
                s=80,
                linewidths=1.5,
                label="Pareto front",
            )
            values = [r[o] for r in results]
            if min(values) > 0 and max(values) > 50 * min(values):
                ax.set_xscale("log")
            if o == "utilization":
                ax.axvline(1.0, color="#c44e52", lw=0.8, ls=":")
                ax.text(
                    1.0, ax.get_ylim()[1], " device full", color="#c44e52", fontsize=7, va="top"
                )
            unit = {"latency": "cycles", "ii": "cycles", "utilization": f"of {device_name}"}
            ax.set_xlabel(f"{o} ({unit.get(o, 'estimate')})")
            ax.set_ylabel("oracle accuracy (%)")
            ax.set_title(f"accuracy vs {o}")
            ax.grid(True, alpha=0.3)
        axes[0].legend(loc="best", fontsize=7)
        fig.suptitle(
            f"{len(results)} design points, {len(front)} on the Pareto front "
            f"({', '.join(objectives)})"
        )
        return fig


# --- the sweep ------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """A finished sweep: every point's scores, the front, and what was computed vs cached."""

    results: list[dict]
    front: list[dict]
    objectives: list[str]
    computed: int
    cached: int
    out: Path

    def summary(self) -> dict:
        return {
            "format": FORMAT,
            "points": len(self.results),
            "computed": self.computed,
            "cached": self.cached,
            "objectives": self.objectives,
            "fit": sum(r["fits"] for r in self.results),
            "pareto": [
                {
                    k: r[k]
                    for k in (
                        "label",
                        "accuracy",
                        "lut",
                        "ff",
                        "dsp",
                        "bram",
                        "latency",
                        "ii",
                        "utilization",
                        "key",
                    )
                }
                for r in self.front
            ],
            "files": ["pareto.json", "pareto.png", "points.json", "points/", "graphs/", "models/"],
        }


MARKER = "explore.json"
WORKER_WAIT = 120
"""Seconds a sweep on a running cluster waits for its first worker."""


def prepare_out(out: Path, force: bool, resume: bool) -> Path:
    """The sweep's folder: new; an earlier sweep's (``resume``); replaced (``force``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; choose another output path")
    if out.exists() and force:
        shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()):
        if not resume:
            raise UserError(
                f"output folder {out} exists; pass --resume to continue its sweep, --force to "
                "start over, or choose another"
            )
        if not (out / MARKER).exists():
            raise UserError(
                f"{out} is not a pqflow explore folder (no {MARKER}); choose another output "
                "folder or pass --force to replace it"
            )
    (out / "points").mkdir(parents=True, exist_ok=True)
    (out / "graphs").mkdir(exist_ok=True)
    return out


def _write_atomic(path: Path, text: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(text, bytes):
        tmp.write_bytes(text)
    else:
        tmp.write_text(text)
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # missing or half-written: compute again


def _save_model(path: Path, model) -> None:
    import torch

    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(model, tmp)
    os.replace(tmp, path)


def _load_model(path: Path):
    """A model this sweep saved (a pickle of our own output folder), or None."""
    if not path.exists():
        return None
    import torch

    try:
        return torch.load(path, weights_only=False)
    except Exception:  # a damaged cache file: train again
        return None


class _Client:
    """A Dask client on a new local cluster (processes) or on a running scheduler."""

    def __init__(self, scheduler: str | None, workers: int) -> None:
        from distributed import Client, LocalCluster

        self.cluster = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as e:
                raise UserError(
                    f"cannot reach the Dask scheduler at {scheduler} ({e}); start one with "
                    "`dask scheduler` or leave out --scheduler for a local cluster"
                ) from None
            try:
                self.client.wait_for_workers(1, timeout=WORKER_WAIT)
            except TimeoutError:
                self.client.close()
                raise UserError(
                    f"the Dask scheduler at {scheduler} has had no worker for {WORKER_WAIT} s; "
                    f"start one with `dask worker {scheduler}`"
                ) from None
        else:
            with warnings.catch_warnings():  # the HTTP port falls back when 8787 is taken
                warnings.filterwarnings("ignore", message="Port .* is already in use")
                self.cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    silence_logs=40,
                )
            self.client = Client(self.cluster)

    def close(self) -> None:
        """Disconnect (and stop a local cluster). Runs in ``finally`` blocks, so a slow or
        failing shutdown is logged, never raised over the error that got us here."""
        import logging

        closers = [self.client.close] + ([self.cluster.close] if self.cluster else [])
        for close in closers:
            try:
                close(timeout=30)
            except Exception as e:
                logging.getLogger(__name__).warning("closing the Dask cluster: %s", e)


def run_sweep(
    cfg: ExploreConfig,
    out: str | Path,
    *,
    force: bool = False,
    resume: bool = False,
    scheduler: str | None = None,
    workers: int = 2,
    progress: bool = True,
    on_point: Callable[[dict], None] | None = None,
) -> SweepResult:
    """Run the sweep of ``cfg`` into ``out``; return every point's scores and the front.

    ``scheduler`` (``tcp://host:port``) runs it on a running Dask cluster, else on a local
    cluster of ``workers`` processes. With ``resume`` an earlier sweep's folder is reused
    and its cached points are not computed again. ``on_point(result)`` is called (in
    this process) after each point is written.
    """
    fresh = not Path(out).exists() or force
    out = prepare_out(Path(out), force, resume)
    _write_atomic(out / MARKER, json.dumps({"format": FORMAT, "config": asdict(cfg)}, indent=2))
    points = points_of(cfg)
    keys = [point_key(cfg, p) for p in points]
    results: dict[str, dict] = {}
    for k in keys:
        r = _read_json(out / "points" / f"{k}.json")
        if r is not None and r.get("key") == k:
            results[k] = r
    cached = len(results)
    todo = [(p, k) for p, k in zip(points, keys, strict=True) if k not in results]
    try:
        with _Progress(progress, len(points), cached) as bar:
            if todo:
                _compute(cfg, out, todo, results, scheduler, workers, bar, on_point)
    except BaseException:
        if fresh and not any((out / "points").iterdir()):
            shutil.rmtree(out, ignore_errors=True)  # nothing worth resuming: leave no folder
        raise
    # the artefacts leave out where each point ran (kept in its cache file): same bytes
    ordered = [{k: v for k, v in results[key].items() if k != "worker"} for key in keys]
    objectives = list(cfg.score.objectives)
    # a design that does not fit the device is no choice: the front is of those that fit
    front = pareto_front([r for r in ordered if r["fits"]], objectives)
    res = SweepResult(ordered, front, objectives, len(todo), cached, out)
    _write_atomic(out / "points.json", json.dumps(ordered, indent=2) + "\n")
    _write_atomic(out / "pareto.json", json.dumps(res.summary(), indent=2) + "\n")
    from .report.plots import png

    fig = pareto_figure(ordered, front, objectives, cfg.score.device)
    _write_atomic(out / "pareto.png", png(fig))
    return res


def _compute(cfg, out: Path, todo, results, scheduler, workers, bar, on_point) -> None:
    from distributed import as_completed

    client = _Client(scheduler, workers)
    try:
        c = client.client
        model, train = asdict(cfg.model), asdict(cfg.train)
        graphs: dict[str, object] = {}  # graph key -> future or cached dict
        models: dict[float, object] = {}
        float_model = None
        futures = {}
        for p, k in todo:
            gk = graph_key(cfg, p)
            if gk not in graphs:
                doc = _read_json(out / "graphs" / f"{gk}.json")
                if doc is not None and doc.get("key") == gk:
                    graphs[gk] = doc
                else:
                    if p.sparsity not in models:
                        mk = model_key(cfg, p.sparsity)
                        saved = _load_model(out / "models" / f"{mk}.pt")
                        if saved is not None:
                            models[p.sparsity] = c.scatter(saved)
                        else:
                            if float_model is None:
                                float_model = c.submit(task_train, model, train, pure=False)
                            models[p.sparsity] = f = c.submit(
                                task_prune, float_model, p.sparsity, train, pure=False
                            )
                            futures[f] = ("model", mk)
                    f = c.submit(
                        task_graph, models[p.sparsity], p.weight_bits, p.act_bits, pure=False
                    )
                    graphs[gk] = f
                    futures[f] = ("graph", gk)
            fut = c.submit(
                task_point, graphs[gk], asdict(p), cfg.score.device, cfg.score.yosys, pure=False
            )
            futures[fut] = ("point", k)
        for fut in as_completed(list(futures)):
            kind, key = futures[fut]
            value = fut.result()
            if kind == "model":  # pruned and fine-tuned: kept so a resumed sweep skips training
                _save_model(out / "models" / f"{key}.pt", value)
                continue
            if kind == "graph":
                _write_atomic(out / "graphs" / f"{key}.json", json.dumps({"key": key, **value}))
                continue
            value = {"key": key, **value}
            _write_atomic(out / "points" / f"{key}.json", json.dumps(value, indent=2) + "\n")
            results[key] = value
            bar(value)
            if on_point is not None:
                on_point(value)
    finally:
        client.close()


class _Progress:
    """A rich progress bar over the sweep's points (cached ones counted from the start)."""

    def __init__(self, enabled: bool, total: int, done: int) -> None:
        self.enabled, self.total, self.done = enabled, total, done

    def __enter__(self):
        if not self.enabled:
            return lambda result: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.p = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),  # stdout keeps the result (--json) clean
        )
        self.p.__enter__()
        self.task = self.p.add_task(
            f"explore ({self.done} cached)", total=self.total, completed=self.done
        )

        def advance(result: dict) -> None:
            self.p.update(self.task, advance=1, description=f"explore: {result['label']}")

        return advance

    def __exit__(self, *exc):
        if self.enabled:
            self.p.__exit__(*exc)
        return False
