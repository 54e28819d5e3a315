"""The end-to-end flow: a readable list of named steps over one shared state.

    data -> train -> quantize -> lower -> oracle -> generate -> verify -> summary

Each step reads what earlier steps put in the ``FlowState`` and adds its own results.
Every artefact but ``timings.json`` (step times, simulator throughput) is deterministic:
the same config gives the same bytes. Artefacts are written into a temporary folder
beside the output folder, which replaces the output folder only when every step
succeeded: a failed or interrupted run leaves the user's files as they were.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .config import FlowConfig
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
    design: object = None
    summary: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    passed: bool = True

    def summary_text(self) -> str:
        s = self.summary
        lines = [f"pqflow flow: {s.get('model', '?')} on {s.get('dataset', '?')}"]
        for k, v in s.items():
            if k in ("model", "dataset", "config"):
                continue
            if isinstance(v, dict):
                v = ", ".join(f"{a}={_fmt(b)}" for a, b in v.items())
            lines.append(f"  {k}: {_fmt(v)}")
        return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


# --- steps ----------------------------------------------------------------------------------


def step_data(st: FlowState) -> None:
    from .models.data import load_digits_split

    st.split = load_digits_split()
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
    acc = evaluate(model, st.split.x_test, st.split.y_test)
    sp = cfg.compress.sparsity
    if sp > 0:
        from .models.quant import prune_and_finetune

        ft = TrainConfig(epochs=cfg.train.finetune_epochs, seed=cfg.train.seed, lr=tc.lr / 2)
        model = prune_and_finetune(model, st.split.x_train, st.split.y_train, sp, ft)
    st.float_model = model
    st.summary["float"] = {
        "accuracy_dense": acc,
        "accuracy": evaluate(model, st.split.x_test, st.split.y_test),
    }


def step_quantize(st: FlowState) -> None:
    from .models.quant import quantize_mlp
    from .models.train import evaluate

    c = st.config.compress
    st.qmodel = quantize_mlp(
        st.float_model, st.split.x_train, w_bits=c.weight_bits, a_bits=c.act_bits
    )
    st.summary["quantized"] = {
        "weight_bits": c.weight_bits,
        "act_bits": c.act_bits,
        "accuracy": evaluate(st.qmodel, st.split.x_test, st.split.y_test),
    }


def step_lower(st: FlowState) -> None:
    from . import ir
    from .models.lower import lower_mlp

    st.graph = lower_mlp(st.qmodel)
    ir.save(st.graph, st.work / "model.ir.json")
    (st.work / "model.ir.txt").write_text(ir.format_graph(st.graph) + "\n")
    dense = [n for n in st.graph.nodes if isinstance(n.op, ir.Dense)]
    nnz = sum(n.op.weight.nnz for n in dense)
    total = sum(n.op.weight.data.size for n in dense)
    st.summary["ir"] = {"nodes": len(st.graph.nodes), "weights": total, "nonzero": nnz}


def step_oracle(st: FlowState) -> None:
    from .kernels import run
    from .models.train import predict

    x, y = st.split.x_test, st.split.y_test
    out = np.asarray(run(st.graph, x))
    pred = out.reshape(len(out), -1).argmax(axis=1)
    codes = st.qmodel.forward_int(x)[-1] if hasattr(st.qmodel, "forward_int") else None
    st.summary["oracle"] = {
        "accuracy": float((pred == y).mean()),
        "agreement_float": float((pred == predict(st.float_model, x)).mean()),
        "bit_exact_vs_torch": bool(codes is not None and np.array_equal(np.asarray(codes), out)),
    }


def step_generate(st: FlowState) -> None:
    from .hwgen import Design, generate_verilog

    hw = st.config.hardware
    design = Design.uniform(st.graph, hw.style, name=hw.top, **hw.impl_options())
    st.design = generate_verilog(design)
    (st.work / f"{hw.top}.v").write_text(st.design.text)
    (st.work / "design.json").write_text(json.dumps(design.describe(), indent=2) + "\n")
    st.summary["rtl"] = {
        "style": hw.style,
        **hw.impl_options(),
        "top": hw.top,
        "verilog_lines": st.design.text.count("\n"),
        "pipeline_latency": st.design.latency,
    }


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
    st.passed = bool(res.passed)
    st.timings["verify_vectors_per_second"] = round(float(res.vectors_per_second), 1)
    st.summary["verify"] = {
        "simulator": v.simulator,
        "vectors": int(res.n_vectors),
        "bit_exact": bool(res.passed),
        "mismatches": int(res.n_mismatches),
        "latency_cycles": res.latency_cycles,
        "ii_cycles": res.ii_cycles,
    }


def step_summary(st: FlowState) -> None:
    st.summary["config"] = asdict(st.config)
    (st.work / "summary.json").write_text(json.dumps(st.summary, indent=2, sort_keys=False) + "\n")
    (st.work / "summary.md").write_text("```\n" + st.summary_text() + "\n```\n")


STEPS: tuple[tuple[str, Callable[[FlowState], None]], ...] = (
    ("data", step_data),
    ("train", step_train),
    ("quantize", step_quantize),
    ("lower", step_lower),
    ("oracle", step_oracle),
    ("generate", step_generate),
    ("verify", step_verify),
    ("summary", step_summary),
)


# --- driver ---------------------------------------------------------------------------------


def run_flow(
    config: FlowConfig, out: Path, *, force: bool = False, progress: bool = True, steps=STEPS
) -> FlowState:
    """Run every step; on success the output folder holds all artefacts."""
    with staged_out_dir(out, force) as work:
        st = FlowState(config=config, work=work)
        with _progress(progress) as report:
            for name, fn in steps:
                t0 = time.perf_counter()
                report(name, "start")
                fn(st)
                st.timings[f"{name}_s"] = round(time.perf_counter() - t0, 2)
                report(name, "done")
        (work / "timings.json").write_text(json.dumps(st.timings, indent=2) + "\n")
    st.work = Path(out)
    return st


class _progress:
    """A rich progress display of the named steps (a no-op when disabled)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self):
        if not self.enabled:
            return lambda name, what: None
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.p = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=False
        )
        self.p.__enter__()
        self.task = self.p.add_task("flow", total=len(STEPS))

        def report(name: str, what: str) -> None:
            if what == "start":
                self.p.update(self.task, description=f"[bold]{name}[/bold]")
            else:
                self.p.advance(self.task)
                self.p.console.log(f"{name} done")

        return report

    def __exit__(self, *exc):
        if self.enabled:
            self.p.__exit__(*exc)
        return False
