"""The end-to-end flow: a readable list of named steps over one shared state.

    data -> train -> compress -> lower -> oracle -> generate -> verify -> hls -> estimate
         -> report -> summary

Each step reads what earlier steps put in the ``FlowState`` and adds its own results.
Every artefact but ``timings.json`` (step times, simulator throughput) is deterministic:
the same config gives the same bytes. Artefacts are written into a temporary folder
beside the output folder, which replaces the output folder only when every step
succeeded: a failed or interrupted run leaves the user's files as they were.

Resuming. After each step the flow stores a checkpoint (the state the step produced and
the files it wrote) in the cache (``$PQFLOW_CACHE/flow``, else ``~/.cache/pqflow/flow``),
keyed by a hash of the config sections the step and its predecessors read, the
previous step's key and pqflow's own source. ``run_flow(..., resume=True)`` restores
every step whose checkpoint exists instead of running it, so a run that failed or was
interrupted in ``verify`` starts again at ``verify``; ``from_step="generate"`` restores
the steps before ``generate`` (their checkpoints must exist) and runs the rest again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .config import FlowConfig
from .errors import UserError
from .outdir import staged_out_dir


@dataclass
class FlowState:
    """What the steps share: the config, the work folder and each step's results."""

    config: FlowConfig
    work: Path
    split: object = None
    float_model: object = None
    qmodel: object = None
    graph: object = None
    output_scale: float | None = None
    design: object = None
    estimate: object = None
    summary: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    passed: bool = True
    restored: list = field(default_factory=list)

    def summary_text(self) -> str:
        s = self.summary
        lines = [f"pqflow flow: {s.get('model', '?')} on {s.get('dataset', '?')}"]
        for k, v in s.items():
            if k in ("model", "dataset", "config"):
                continue
            if isinstance(v, dict):
                v = ", ".join(f"{a}={_fmt(b)}" for a, b in v.items() if not isinstance(b, dict))
            lines.append(f"  {k}: {_fmt(v)}")
        return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


# --- steps ----------------------------------------------------------------------------------


def step_data(st: FlowState) -> None:
    from .models.data import load_digits_split

    st.split = load_digits_split(image=st.config.model.image)
    st.summary["model"] = st.config.model.name
    st.summary["dataset"] = st.config.model.dataset
    st.summary["data"] = {"train": len(st.split.y_train), "test": len(st.split.y_test)}


def step_train(st: FlowState) -> None:
    from .models.train import TrainConfig, evaluate, train
    from .models.zoo import build

    cfg = st.config
    tc = TrainConfig(epochs=cfg.train.epochs, seed=cfg.train.seed)
    model = train(
        build(cfg.model.name, seed=cfg.train.seed), st.split.x_train, st.split.y_train, tc
    )
    st.float_model = model
    st.summary["float"] = {"accuracy": evaluate(model, st.split.x_test, st.split.y_test)}


def _finetune(st: FlowState):
    from .models.train import TrainConfig

    t = st.config.train
    return TrainConfig(epochs=t.finetune_epochs, seed=t.seed, lr=TrainConfig().lr / 2)


def step_compress(st: FlowState) -> None:
    """Prune (then fine-tune), then quantize (PTQ, or QAT / ternary / binary with training)."""
    import copy

    from .models.train import evaluate, train

    c, split = st.config.compress, st.split
    x, y = split.x_train, split.y_train
    model = copy.deepcopy(st.float_model)
    info: dict = {"quant": c.quant}
    if c.sparsity > 0:
        if st.config.model.name == "mlp" and c.legacy_mlp:
            from .models.quant import prune_and_finetune

            model = prune_and_finetune(model, x, y, c.sparsity, _finetune(st))
        else:
            from .models.prune import prune

            model = prune(model, c.granularity, c.criterion, c.sparsity, data=(x, y))
            if st.config.train.finetune_epochs:
                model = train(model, x, y, _finetune(st))
        info.update(
            granularity=c.granularity,
            criterion=c.criterion,
            sparsity=c.sparsity,
            pruned_accuracy=evaluate(model, split.x_test, split.y_test),
        )
    if st.config.model.name == "mlp" and c.legacy_mlp:
        from .models.quant import quantize_mlp

        q = quantize_mlp(model, x, w_bits=c.weight_bits, a_bits=c.act_bits)
    else:
        q = _quantize(model, c, x, y, st.config.train.seed)
    st.qmodel = q
    if c.quant in ("ptq", "qat"):
        info.update(weight_bits=c.weight_bits, act_bits=c.act_bits, scale=c.scale)
    info["accuracy"] = evaluate(q, split.x_test, split.y_test)
    st.summary["quantized"] = info


def _quantize(model, c, x, y, seed: int):
    from .models.qat import qat
    from .models.qmodules import QuantConfig, quantize_model
    from .models.quantizers import QuantSpec
    from .models.train import TrainConfig

    tc = TrainConfig(epochs=c.qat_epochs, lr=2e-3, weight_decay=0.0, seed=seed)
    if c.quant == "ternary":
        cfg = QuantConfig.wa(2, c.act_bits, c.scale)
        cfg = QuantConfig(weight=QuantSpec.ternary(axis=0), act=cfg.act, input=cfg.input)
    elif c.quant == "binary":
        alpha = "pow2" if c.scale == "pow2" else "float"
        cfg = QuantConfig(weight=QuantSpec.binary(alpha, axis=0), act=QuantSpec.binary())
    else:
        cfg = QuantConfig.wa(c.weight_bits, c.act_bits, c.scale)
    q = quantize_model(model, cfg, x)
    if c.quant != "ptq":
        q = qat(q, x, y, tc)
    return q


def step_lower(st: FlowState) -> None:
    from . import ir
    from .models.lower import lower_with_info, save_model

    low = lower_with_info(st.qmodel, st.split.x_train[:4], name=st.config.model.name)
    st.graph, st.output_scale = low.graph, float(low.output_scale)
    ir.save(st.graph, st.work / "model.ir.json")
    (st.work / "model.ir.txt").write_text(ir.format_graph(st.graph) + "\n")
    save_model(st.work / "model.pt", st.qmodel, st.split.x_train[:4])
    mats = [n for n in st.graph.nodes if getattr(n.op, "weight", None) is not None]
    nnz = sum(n.op.weight.nnz for n in mats)
    total = sum(n.op.weight.data.size for n in mats)
    st.summary["ir"] = {"nodes": len(st.graph.nodes), "weights": total, "nonzero": nnz}


def _torch_reference(st: FlowState, x: np.ndarray) -> np.ndarray | None:
    """The quantized torch model's outputs as integer codes of the graph's output, or None
    when they are not integers (float scales)."""
    import copy

    import torch

    if hasattr(st.qmodel, "forward_int"):
        return np.asarray(st.qmodel.forward_int(x)[-1])
    qd = copy.deepcopy(st.qmodel).double().eval()
    with torch.no_grad():
        ref = qd(torch.as_tensor(x, dtype=torch.float64)).numpy() / st.output_scale
    codes = np.rint(ref)
    return codes.astype(np.int64) if np.array_equal(codes, ref) else None


def step_oracle(st: FlowState) -> None:
    from .kernels import run
    from .models.train import predict

    x, y = st.split.x_test, st.split.y_test
    out = np.asarray(run(st.graph, x))
    pred = out.reshape(len(out), -1).argmax(axis=1)
    codes = _torch_reference(st, x)
    st.summary["oracle"] = {
        "accuracy": float((pred == y).mean()),
        "agreement_float": float((pred == predict(st.float_model, x)).mean()),
        "bit_exact_vs_torch": bool(codes is not None and np.array_equal(codes, out)),
    }


def _design(st: FlowState):
    from .hwgen import Design

    hw = st.config.hardware
    return Design.fitted(st.graph, hw.style, pe=hw.pe, simd=hw.simd, name=hw.top)


def step_generate(st: FlowState) -> None:
    from .hwgen import generate_verilog

    hw = st.config.hardware
    design = _design(st)
    st.design = generate_verilog(design, axis=hw.axis)
    (st.work / f"{hw.top}.v").write_text(st.design.text)
    (st.work / "design.json").write_text(json.dumps(design.describe(), indent=2) + "\n")
    st.summary["rtl"] = {
        "style": hw.style,
        **hw.impl_options(),
        "top": hw.top,
        "axis": hw.axis,
        "verilog_lines": st.design.text.count("\n"),
        "pipeline_latency": st.design.latency,
    }
    if st.design.fifo_depths:  # a residual network: the skip FIFOs, by Add node
        st.summary["rtl"]["fifo_depths"] = dict(st.design.fifo_depths)


def step_verify(st: FlowState) -> None:
    from .sim.graph import verify_graph

    v = st.config.verify
    if not v.enabled:
        st.summary["verify"] = "skipped (verify.enabled = false)"
        return
    x = st.split.x_test[: v.vectors] if v.vectors else st.split.x_test
    res = verify_graph(
        st.design,
        st.graph,
        x,
        sim=v.simulator,
        seed=v.seed,
        stall_prob=v.stall_prob,
        backpressure_prob=v.backpressure_prob,
    )
    st.passed = st.passed and bool(res.passed)
    st.timings["verify_vectors_per_second"] = round(float(res.vectors_per_second), 1)
    st.summary["verify"] = {
        "simulator": v.simulator,
        "vectors": int(res.n_vectors),
        "bit_exact": bool(res.passed),
        "mismatches": int(res.n_mismatches),
        "latency_cycles": res.latency_cycles,
        "ii_cycles": res.ii_cycles,
    }


def step_hls(st: FlowState) -> None:
    from .hwgen.hls import generate_hls

    h = st.config.hls
    if not h.enabled:
        st.summary["hls"] = "skipped (hls.enabled = false)"
        return
    x = st.split.x_test[: h.vectors] if h.vectors else st.split.x_test
    design = _design(st)
    project = generate_hls(design, out_dir=st.work / "hls", top=st.config.hardware.top, x=x)
    info: dict = {"files": len(project.files) if hasattr(project, "files") else None}
    if h.csim:
        from .sim.csim import build_csim, oracle_vectors, run_csim

        a, b = oracle_vectors(st.graph, x)
        binary, cached, seconds = build_csim([project])
        res = run_csim(binary, project, a, b, cached=cached, compile_seconds=seconds)
        st.passed = st.passed and bool(res.passed)
        st.timings["csim_compile_seconds"] = round(float(res.compile_seconds), 2)
        info.update(vectors=len(a), bit_exact=bool(res.passed), mismatches=int(res.mismatches))
    st.summary["hls"] = {k: v for k, v in info.items() if v is not None}


def step_estimate(st: FlowState) -> None:
    from .estimate import EstimateError, device, estimate, synthesize

    e = st.config.estimate
    if not e.enabled:
        st.summary["estimate"] = "skipped (estimate.enabled = false)"
        return
    design = _design(st)
    try:
        est = estimate(design, e.device)
    except EstimateError as err:
        st.summary["estimate"] = f"no estimate: {err}"
        return
    st.estimate = est
    doc = est.to_dict()
    info = {"device": e.device, **est.totals()}
    if e.yosys:
        dev = device(e.device)
        syn = synthesize(st.design.text, st.design.top, dev.family, arch=dev.yosys_arch)
        doc["yosys"] = {k: v for k, v in syn.items() if k not in ("cells", "seconds", "cached")}
        info["yosys"] = doc["yosys"]
    (st.work / "estimate.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    st.summary["estimate"] = info


def step_report(st: FlowState) -> None:
    if not st.config.report.enabled:
        st.summary["report"] = "skipped (report.enabled = false)"
        return
    try:
        from .report import write_flow_report
    except ImportError:
        st.summary["report"] = "skipped (pqflow.report is not available)"
        return
    files = write_flow_report(st)
    st.summary["report"] = {"files": sorted(Path(f).name for f in files)}


def step_summary(st: FlowState) -> None:
    st.summary["config"] = asdict(st.config)
    (st.work / "summary.json").write_text(json.dumps(st.summary, indent=2, sort_keys=False) + "\n")
    (st.work / "summary.md").write_text("```\n" + st.summary_text() + "\n```\n")


@dataclass(frozen=True)
class Step:
    """A named step: ``run`` it, or restore the ``keeps`` state and files of a checkpoint.

    ``sections``: the config sections it reads (its checkpoint key covers them and every
    earlier step's). ``keeps``: the ``FlowState`` fields it sets. A step with
    ``checkpoint=False`` always runs (it is cheap or only writes what others made).
    """

    name: str
    run: Callable[[FlowState], None]
    sections: tuple[str, ...] = ()
    keeps: tuple[str, ...] = ()
    checkpoint: bool = True

    # ``for name, fn in STEPS`` keeps working
    def __iter__(self):
        return iter((self.name, self.run))


STEPS: tuple[Step, ...] = (
    Step("data", step_data, ("model",), checkpoint=False),
    Step("train", step_train, ("train",), ("float_model",)),
    Step("compress", step_compress, ("compress",), ("qmodel",)),
    Step("lower", step_lower, (), ("graph", "output_scale")),
    Step("oracle", step_oracle, ()),
    Step("generate", step_generate, ("hardware",), ("design",)),
    Step("verify", step_verify, ("verify",), ("passed",)),
    Step("hls", step_hls, ("hls",), ("passed",)),
    Step("estimate", step_estimate, ("estimate",), ("estimate",)),
    Step("report", step_report, ("report",), checkpoint=False),
    Step("summary", step_summary, (), checkpoint=False),
)
STEP_NAMES = tuple(s.name for s in STEPS)


# --- checkpoints ----------------------------------------------------------------------------


def _cache_root() -> Path:
    base = os.environ.get("PQFLOW_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "pqflow") / "flow"


@functools.cache
def _source_digest() -> str:
    """A hash of pqflow's source as this process first saw it (it runs that code)."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    kinds = (".py", ".j2", ".json", ".cpp", ".h", ".tcl")
    for p in sorted(root.rglob("*")):
        if p.suffix in kinds and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _keys(config: FlowConfig, steps) -> list[str]:
    src = _source_digest()
    conf = asdict(config)
    keys, prev = [], src
    for s in steps:
        doc = {"step": s.name, "prev": prev, "config": {k: conf[k] for k in s.sections}}
        prev = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]
        keys.append(prev)
    return keys


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file()
    }


def _save_checkpoint(
    ck: Path, st: FlowState, step: Step, before: dict, summary: dict, timings: dict
) -> None:
    import torch

    after = _files(st.work)
    changed = sorted(k for k, v in after.items() if before.get(k) != v)
    tmp = ck.with_name(ck.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "files").mkdir(parents=True)
    for rel in changed:
        dst = tmp / "files" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(st.work / rel, dst)
    new_summary = {k: v for k, v in st.summary.items() if summary.get(k, object()) != v}
    new_timings = {k: v for k, v in st.timings.items() if timings.get(k, object()) != v}
    state = {k: getattr(st, k) for k in step.keeps}
    torch.save({"state": state, "summary": new_summary, "timings": new_timings}, tmp / "state.pt")
    shutil.rmtree(ck, ignore_errors=True)
    tmp.rename(ck)


def _restore_checkpoint(ck: Path, st: FlowState) -> None:
    import torch

    doc = torch.load(ck / "state.pt", weights_only=False)
    for k, v in doc["state"].items():
        setattr(st, k, v)
    st.summary.update(doc["summary"])
    st.timings.update(doc["timings"])
    files = ck / "files"
    for p in sorted(files.rglob("*")):
        if p.is_file():
            dst = st.work / p.relative_to(files)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dst)


# --- driver ---------------------------------------------------------------------------------


def run_flow(
    config: FlowConfig,
    out: Path,
    *,
    force: bool = False,
    progress: bool = True,
    steps=STEPS,
    resume: bool = False,
    from_step: str | None = None,
    checkpoints: bool = True,
) -> FlowState:
    """Run every step; on success the output folder holds all artefacts.

    ``resume``: restore each step that has a checkpoint of this config instead of running
    it. ``from_step``: restore the steps before it (their checkpoints must exist) and run
    it and every later step. ``checkpoints=False`` neither reads nor writes the cache.
    """
    steps = tuple(s if isinstance(s, Step) else Step(*s, checkpoint=False) for s in steps)
    names = [s.name for s in steps]
    if from_step is not None and from_step not in names:
        raise UserError(f"--from-step: no step named '{from_step}' (steps: {', '.join(names)})")
    keys = _keys(config, steps)
    root = _cache_root()
    start = names.index(from_step) if from_step else None
    with staged_out_dir(out, force) as work:
        st = FlowState(config=config, work=work)
        with _progress(progress, len(steps)) as report:
            for i, (s, key) in enumerate(zip(steps, keys, strict=True)):
                ck = root / key
                restore = s.checkpoint and checkpoints and (ck / "state.pt").is_file()
                if start is not None:
                    if i < start and s.checkpoint and not restore:
                        raise UserError(
                            f"--from-step {from_step}: step '{s.name}' of this config has no "
                            "checkpoint; run the flow once without --from-step"
                        )
                    restore = restore and i < start
                else:
                    restore = restore and resume
                report(s.name, "start")
                if restore:
                    _restore_checkpoint(ck, st)
                    st.restored.append(s.name)
                    report(s.name, "restored")
                    continue
                before = _files(work) if s.checkpoint and checkpoints else {}
                summary, timings = dict(st.summary), dict(st.timings)
                t0 = time.perf_counter()
                s.run(st)
                st.timings[f"{s.name}_s"] = round(time.perf_counter() - t0, 2)
                if s.checkpoint and checkpoints:
                    _save_checkpoint(ck, st, s, before, summary, timings)
                report(s.name, "done")
        (work / "timings.json").write_text(json.dumps(st.timings, indent=2) + "\n")
    st.work = Path(out)
    return st


class _progress:
    """A rich progress display of the named steps (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda name, what: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.p = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        )
        self.p.__enter__()
        self.task = self.p.add_task("flow", total=self.total)

        def report(name: str, what: str) -> None:
            if what == "start":
                self.p.update(self.task, description=f"[bold]{name}[/bold]")
            else:
                self.p.advance(self.task)
                self.p.console.log(f"{name} {what}")

        return report

    def __exit__(self, *exc):
        if self.enabled:
            self.p.__exit__(*exc)
        return False
