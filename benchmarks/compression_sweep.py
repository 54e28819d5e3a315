"""Compression sweep: every pruning and quantization scheme of ``pqflow.models`` on digits.

Trains the zoo's ``mlp`` and ``cnn`` (and ``resnet_tiny`` for layer-wise pruning) on the
fixed digits split, then measures on the digits *test* split (360 images):

1. accuracy vs sparsity per pruning granularity (element, N:M 2:4, kernel, channel,
   filter, layer) and criterion (L1, L2, Taylor, random), one-shot and after fine-tuning;
2. gradual pruning (Zhu & Gupta 2017) vs one-shot at high sparsity, with the same
   number of training epochs, and the MLP 90% recipe (``prune.prune_during_training``);
3. accuracy vs bit width (8, 6, 4, 3, 2) for PTQ (min-max, percentile, MSE, KL
   calibration) and QAT (STE, LSQ, PACT);
4. binary and ternary networks;
5. prune then quantize (Deep Compression order), and QAT of a pruned model that keeps
   its masks;
6. dynamic pruning: skipped multiply-accumulates vs accuracy (threshold activations,
   FBS channel gating);
7. parameter counts before and after ``prune.shrink``.

and writes ``docs/compression.md`` plus its PNG plots under ``docs/img/compression/``.
Everything is seeded and single-threaded; rerunning gives the same numbers on the
same machine and torch build. Run::

    .venv/bin/python benchmarks/compression_sweep.py --out docs/

(``--quick`` runs a much smaller sweep, for checking the script itself, ~1-2 min).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from pqflow.models import (  # noqa: E402
    FINETUNE,
    QuantConfig,
    QuantSpec,
    Split,
    TrainConfig,
    build,
    evaluate,
    gate_convs,
    load_digits_split,
    parameter_count,
    quant_layers,
    quantize_model,
    shrink,
    skipped_work,
    sparsify,
    sparsity_report,
    train,
    train_or_load,
    weight_bits,
)
from pqflow.models import prune as P  # noqa: E402
from pqflow.models.dynamic import SPARSIFY, ThresholdReLU  # noqa: E402
from pqflow.models.qat import qat  # noqa: E402

CRITERIA = ("l1", "l2", "taylor", "random")
CRITERION_NAMES = {"l1": "L1", "l2": "L2", "taylor": "Taylor", "random": "random"}
GRANULARITIES = ("element", "nm", "kernel", "channel", "filter", "layer")
PTQ_METHODS = ("minmax", "percentile", "mse", "kl")
QAT_KINDS = ("STE", "LSQ", "PACT")


@dataclass(frozen=True)
class Settings:
    """How big the sweep is (``full`` for the committed document, ``quick`` to test it)."""

    name: str
    models: tuple[str, ...]
    levels: tuple[float, ...]  # pruning amounts (fraction of groups removed)
    finetune: dict[str, TrainConfig]  # fine-tuning after one-shot pruning, per model
    resnet_train: TrainConfig
    high: tuple[float, ...]  # sparsities of the gradual vs one-shot comparison
    gradual_steps: dict[str, int]
    gradual_epochs: dict[str, int]  # epochs between steps
    bits: tuple[int, ...]
    qat_bits: dict[str, tuple[int, ...]]
    qat: dict[str, TrainConfig]
    binary: dict[str, int]  # QAT epochs for binary/ternary per model
    thresholds: tuple[float, ...]
    l1s: tuple[float, ...]
    keeps: tuple[float, ...]
    gate_finetune: TrainConfig
    recipe_seeds: tuple[int, ...]
    shrink_levels: tuple[float, ...] = field(default=(0.25, 0.5, 0.75))


FULL = Settings(
    name="full",
    models=("mlp", "cnn"),
    levels=(0.5, 0.75, 0.9),
    finetune={"mlp": FINETUNE, "cnn": TrainConfig(epochs=4, lr=5e-3)},
    resnet_train=TrainConfig(epochs=20),
    high=(0.9, 0.95),
    gradual_steps={"mlp": 5, "cnn": 4},
    gradual_epochs={"mlp": 4, "cnn": 2},
    bits=(8, 6, 4, 3, 2),
    qat_bits={"mlp": (8, 6, 4, 3, 2), "cnn": (4, 3, 2)},
    qat={
        "mlp": TrainConfig(epochs=15, lr=2e-3, weight_decay=0.0),
        "cnn": TrainConfig(epochs=4, lr=2e-3, weight_decay=0.0),
    },
    binary={"mlp": 20, "cnn": 5},
    thresholds=(0.0, 0.1, 0.25, 0.5),
    l1s=(0.01, 0.05),
    keeps=(0.25, 0.5, 0.75),
    gate_finetune=TrainConfig(epochs=8, lr=5e-3),
    recipe_seeds=(0, 1, 2, 3, 4, 5),
)

QUICK = Settings(
    name="quick",
    models=("mlp", "cnn"),
    levels=(0.5, 0.9),
    finetune={"mlp": TrainConfig(epochs=5, lr=5e-3), "cnn": TrainConfig(epochs=1, lr=5e-3)},
    resnet_train=TrainConfig(epochs=3),
    high=(0.9,),
    gradual_steps={"mlp": 3, "cnn": 2},
    gradual_epochs={"mlp": 2, "cnn": 1},
    bits=(8, 4, 2),
    qat_bits={"mlp": (4, 2), "cnn": (4,)},
    qat={
        "mlp": TrainConfig(epochs=3, lr=2e-3, weight_decay=0.0),
        "cnn": TrainConfig(epochs=1, lr=2e-3, weight_decay=0.0),
    },
    binary={"mlp": 3, "cnn": 1},
    thresholds=(0.0, 0.25),
    l1s=(0.05,),
    keeps=(0.5,),
    gate_finetune=TrainConfig(epochs=1, lr=5e-3),
    recipe_seeds=(0,),
    shrink_levels=(0.5,),
)


# --- the document -----------------------------------------------------------------------------


@dataclass
class Doc:
    """Markdown lines plus the figures they reference, written at the end."""

    img_dir: Path
    rel: str
    lines: list[str] = field(default_factory=list)

    def add(self, *text: str) -> None:
        self.lines.extend(text)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            self.lines.append("| " + " | ".join(str(c) for c in r) + " |")
        self.lines.append("")

    def figure(self, fig: plt.Figure, name: str, caption: str) -> None:
        path = self.img_dir / f"{name}.png"
        fig.savefig(path, dpi=72, metadata={"Software": None}, bbox_inches="tight")
        plt.close(fig)
        self.lines.append(f"![{caption}]({self.rel}/{name}.png)")
        self.lines.append("")


def pct(a: float) -> str:
    return f"{100 * a:.2f}"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- shared state -----------------------------------------------------------------------------


@dataclass
class Bench:
    """The data and trained float models every section starts from."""

    data: dict[str, Split]
    float_models: dict[str, nn.Module]
    float_acc: dict[str, float]

    def acc(self, name: str, model: nn.Module) -> float:
        d = self.data[name]
        return evaluate(model, d.x_test, d.y_test)

    def fresh(self, name: str) -> nn.Module:
        return copy.deepcopy(self.float_models[name])


def split_for(name: str, flat: Split, image: Split) -> Split:
    return flat if name == "mlp" else image


def setup(settings: Settings, cache: Path | None) -> Bench:
    flat, image = load_digits_split(), load_digits_split(image=True)
    data, models, accs = {}, {}, {}
    for name in (*settings.models, "resnet_tiny"):
        d = split_for(name, flat, image)
        cfg = settings.resnet_train if name == "resnet_tiny" else TrainConfig()
        t = time.perf_counter()
        m = train_or_load(name, d.x_train, d.y_train, cfg, cache_dir=cache)
        data[name], models[name] = d, m
        accs[name] = evaluate(m, d.x_test, d.y_test)
        log(f"float {name}: {pct(accs[name])}% ({time.perf_counter() - t:.1f} s)")
    return Bench(data, models, accs)


# --- 1. static pruning ----------------------------------------------------------------------


@dataclass(frozen=True)
class PruneRun:
    model: str
    granularity: str
    criterion: str
    amount: float
    sparsity: float  # fraction of zero Linear/Conv2d weights after pruning
    oneshot: float
    finetuned: float
    params: int
    params_shrunk: int | None
    shrunk_equal: bool | None


def granularities_of(name: str) -> list[str]:
    if name == "mlp":
        return ["element", "nm", "channel", "filter"]
    return ["element", "nm", "kernel", "channel", "filter"]


def prune_once(
    b: Bench, name: str, granularity: str, criterion: str, amount: float, ft: TrainConfig
) -> PruneRun:
    d = b.data[name]
    m = b.fresh(name)
    kw = {"n": 2, "m": 4} if granularity == "nm" else {"amount": amount}
    P.prune(m, granularity, criterion, data=(d.x_train, d.y_train), seed=0, **kw)
    oneshot = b.acc(name, m)
    train(m, d.x_train, d.y_train, ft)
    acc = b.acc(name, m)
    small = None
    if granularity in ("channel", "filter", "layer"):
        small = shrink(m)
    return PruneRun(
        name,
        granularity,
        criterion,
        amount if granularity != "nm" else 0.5,
        sparsity_report(m).sparsity,
        oneshot,
        acc,
        parameter_count(m),
        None if small is None else parameter_count(small),
        None if small is None else b.acc(name, small) == acc,
    )


def section_static(doc: Doc, b: Bench, s: Settings) -> list[PruneRun]:
    runs: list[PruneRun] = []
    for name in s.models:
        for g in granularities_of(name):
            levels = (0.5,) if g == "nm" else s.levels
            for c in CRITERIA:
                for a in levels:
                    runs.append(prune_once(b, name, g, c, a, s.finetune[name]))
            log(f"static {name} {g}: done")
    for c in CRITERIA:  # layer-wise: resnet_tiny's two residual blocks, one removed
        runs.append(prune_once(b, "resnet_tiny", "layer", c, 0.5, s.finetune["cnn"]))
    log("static resnet_tiny layer: done")

    doc.add(
        "## 1. Static pruning: accuracy vs sparsity",
        "",
        "Each run starts from the trained float model, prunes it once with "
        '`prune(model, granularity, criterion, amount, scope="layer")` (the same fraction '
        "of groups in every layer; Taylor scores on 4 training mini-batches of 64), "
        "measures the test accuracy (*one-shot*), then fine-tunes with the masks fixed "
        f"({describe(s.finetune['mlp'])} for the mlp, {describe(s.finetune['cnn'])} for "
        "the cnn and resnet_tiny) and measures again (*fine-tuned*). `amount` is the "
        "fraction of *groups* removed (elements, kernels, channels, filters, blocks); "
        "the weight sparsity it gives is listed beside it. N:M is 2:4 along the input "
        "dimension (the cnn's first conv, with one input channel, is left dense).",
        "",
        "Not applicable to the `mlp`: kernel-wise pruning (no convolutions) and "
        "layer-wise pruning (no residual block); for a Linear, *channel* removes input "
        "neurons of a hidden layer and *filter* output neurons, which `shrink` turns into "
        "the same smaller layer. Layer-wise pruning is measured on `resnet_tiny` "
        f"(trained {describe(s.resnet_train)}), the only zoo model with residual blocks: "
        "amount 0.5 switches off one of its two blocks.",
        "",
    )
    for name in s.models:
        gs = granularities_of(name)
        fig, axes = plt.subplots(1, len(gs), figsize=(3.0 * len(gs), 2.8), sharey=True)
        for ax, g in zip(axes, gs, strict=True):
            for c, color in zip(CRITERIA, ("C0", "C1", "C2", "C3"), strict=True):
                rs = [r for r in runs if (r.model, r.granularity, r.criterion) == (name, g, c)]
                xs = [r.sparsity for r in rs]
                ax.plot(
                    xs,
                    [100 * r.finetuned for r in rs],
                    "o-",
                    color=color,
                    label=f"{CRITERION_NAMES[c]} fine-tuned",
                    ms=3,
                )
                ax.plot(
                    xs,
                    [100 * r.oneshot for r in rs],
                    "x--",
                    color=color,
                    label=f"{CRITERION_NAMES[c]} one-shot",
                    ms=3,
                    alpha=0.6,
                )
            ax.axhline(100 * b.float_acc[name], color="k", lw=0.8, ls=":")
            ax.set_title(f"{name}: {g}", fontsize=9)
            ax.set_xlabel("weight sparsity", fontsize=8)
            ax.set_ylim(0, 100)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("test accuracy (%)", fontsize=8)
        axes[-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        doc.figure(fig, f"static_{name}", f"{name}: accuracy vs weight sparsity")
        doc.add(
            f"**{name}** (float {pct(b.float_acc[name])}%). Cells: one-shot → fine-tuned "
            "test accuracy (%); the header gives the amount, the row its weight sparsity.",
            "",
        )
        for g in gs:
            levels = (0.5,) if g == "nm" else s.levels
            rows = []
            for c in CRITERIA:
                rs = {
                    r.amount: r
                    for r in runs
                    if (r.model, r.granularity, r.criterion) == (name, g, c)
                }
                rows.append(
                    [g, CRITERION_NAMES[c]]
                    + [
                        f"{pct(rs[a].oneshot)} → **{pct(rs[a].finetuned)}** "
                        f"({100 * rs[a].sparsity:.0f}%)"
                        for a in levels
                    ]
                )
            header = ["granularity", "criterion"] + [
                ("2:4" if g == "nm" else f"amount {a}") for a in levels
            ]
            doc.table(header, rows)
    rs = [r for r in runs if r.model == "resnet_tiny"]
    doc.add(f"**resnet_tiny** (float {pct(b.float_acc['resnet_tiny'])}%), layer-wise:", "")
    doc.table(
        ["criterion", "one-shot", "fine-tuned", "parameters", "after shrink"],
        [
            [
                CRITERION_NAMES[r.criterion],
                pct(r.oneshot),
                pct(r.finetuned),
                r.params,
                r.params_shrunk,
            ]
            for r in rs
        ],
    )
    doc.add(*static_findings(runs, b, s), "")
    return runs


def best_at(runs: list[PruneRun], name: str, g: str, amount: float) -> tuple[PruneRun, PruneRun]:
    rs = [r for r in runs if (r.model, r.granularity, r.amount) == (name, g, amount)]
    return max(rs, key=lambda r: r.finetuned), min(rs, key=lambda r: r.finetuned)


def static_findings(runs: list[PruneRun], b: Bench, s: Settings) -> list[str]:
    """The "what pays off" paragraph, from the measured numbers."""
    hi = max(s.levels)
    out = ["**What pays off.**"]
    for name in s.models:
        f = b.float_acc[name]
        parts = []
        for g in granularities_of(name):
            a = 0.5 if g == "nm" else hi
            best, worst = best_at(runs, name, g, a)
            parts.append(
                f"{g} at {100 * best.sparsity:.0f}% weight sparsity: best "
                f"{CRITERION_NAMES[best.criterion]} {pct(best.finetuned)}% "
                f"({100 * (best.finetuned - f):+.2f} pt), worst "
                f"{CRITERION_NAMES[worst.criterion]} {pct(worst.finetuned)}%"
            )
        ok = sorted(
            {
                r.granularity
                for r in runs
                if r.model == name
                and r.amount == hi
                and r.finetuned >= f - 0.01
                and r.criterion != "random"
            }
        )
        out.append(
            f"`{name}`: "
            + "; ".join(parts)
            + ". "
            + (
                f"Within 1 point of float at amount {hi} after fine-tuning: {', '.join(ok)}."
                if ok
                else f"No granularity stays within 1 point at amount {hi}."
            )
        )
    gains = [r.finetuned - r.oneshot for r in runs if r.amount >= hi and r.granularity != "nm"]
    out.append(
        f"Fine-tuning is what makes high sparsity work: at amount {hi} it recovers "
        f"{100 * float(np.median(gains)):.1f} points (median over all runs, up to "
        f"{100 * max(gains):.1f})."
    )
    rnd = [r for r in runs if r.criterion == "random" and r.amount >= hi]
    mag = {
        (r.model, r.granularity): r.finetuned
        for r in runs
        if r.criterion == "l1" and r.amount >= hi
    }
    diff = [
        mag[(r.model, r.granularity)] - r.finetuned for r in rnd if (r.model, r.granularity) in mag
    ]
    if diff:
        out.append(
            f"Magnitude (L1) beats the random baseline by {100 * float(np.mean(diff)):.1f} "
            f"points on average after fine-tuning at amount {hi}; one-shot the gap is larger."
        )
    return [" ".join(out)]


def describe(cfg: TrainConfig) -> str:
    return f"{cfg.epochs} epochs at peak lr {cfg.lr:g}"


# --- 2. gradual vs one-shot -----------------------------------------------------------------


def section_gradual(doc: Doc, b: Bench, s: Settings) -> None:
    rows, bars = [], []
    for name in s.models:
        d = b.data[name]
        steps, ep = s.gradual_steps[name], s.gradual_epochs[name]
        final = replace(FINETUNE, epochs=steps * ep)
        total = steps * ep + final.epochs
        for sp in s.high:
            m = b.fresh(name)
            P.prune(m, "element", "l1", sp, scope="global")
            oneshot_raw = b.acc(name, m)
            train(m, d.x_train, d.y_train, replace(FINETUNE, epochs=total))
            oneshot = b.acc(name, m)
            g = P.gradual_prune(
                b.fresh(name),
                d.x_train,
                d.y_train,
                sp,
                steps,
                scope="global",
                finetune=TrainConfig(epochs=ep, lr=5e-3),
                final_finetune=final,
            )
            gradual = b.acc(name, g)
            rows.append(
                [
                    name,
                    f"{100 * sp:.0f}%",
                    pct(b.float_acc[name]),
                    pct(oneshot_raw),
                    pct(oneshot),
                    pct(gradual),
                    total,
                ]
            )
            bars.append((f"{name}\n{100 * sp:.0f}%", b.float_acc[name], oneshot, gradual))
        log(f"gradual {name}: done")
    doc.add(
        "## 2. Gradual (Zhu & Gupta) vs one-shot at high sparsity",
        "",
        "Element-wise, L1, one global threshold. *One-shot*: prune to the target at once, "
        "then fine-tune. *Gradual*: `gradual_prune` along the cubic schedule "
        "s_t = s_f (1 - (1 - t/n)^3) in n steps, a short fine-tune after each step and a "
        "final fine-tune as long as all the steps together. Both get the same number of "
        "training epochs (last column), so the comparison is of the schedule alone.",
        "",
    )
    doc.table(
        [
            "model",
            "sparsity",
            "float",
            "one-shot, no fine-tune",
            "one-shot + fine-tune",
            "gradual",
            "epochs",
        ],
        rows,
    )
    fig, ax = plt.subplots(figsize=(5.5, 2.8))
    x = np.arange(len(bars))
    for i, (label, off) in enumerate((("float", -0.27), ("one-shot", 0.0), ("gradual", 0.27))):
        ax.bar(x + off, [100 * r[i + 1] for r in bars], 0.27, label=label)
    ax.set_xticks(x, [r[0] for r in bars], fontsize=8)
    lo = min(min(r[1:]) for r in bars)
    ax.set_ylim(100 * lo - 3, 100)
    ax.set_ylabel("test accuracy (%)", fontsize=8)
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    doc.figure(fig, "gradual", "gradual vs one-shot")
    wins = [(r[0].replace("\n", " at "), 100 * (r[3] - r[2])) for r in bars]
    doc.add(
        "**What pays off.** Gradual minus one-shot, same epochs: "
        + ", ".join(f"{k}: {v:+.2f} pt" for k, v in wins)
        + ". "
        + gradual_verdict(wins),
        "",
    )


def gradual_verdict(wins: list[tuple[str, float]]) -> str:
    big = [k for k, v in wins if v >= 1.0]
    tie = [k for k, v in wins if abs(v) < 1.0]
    lose = [k for k, v in wins if v <= -1.0]
    parts = []
    if big:
        parts.append(f"the schedule pays off by a point or more at {', '.join(big)}")
    if tie:
        parts.append(f"within ±1 pt (3 test images) at {', '.join(tie)}")
    if lose:
        parts.append(f"one-shot is better by a point or more at {', '.join(lose)}")
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "."


# --- 2b. the mlp 90% target -----------------------------------------------------------------


RECIPE_VARIANTS: dict[str, dict] = {
    "no distillation": {"teacher": False},
    "global scope": {"scope": "global"},
    "Taylor criterion": {"criterion": "taylor"},
}
"""Ablations of ``prune_during_training`` (keyword overrides; teacher False = none)."""


def section_recipe(doc: Doc, b: Bench, s: Settings) -> None:
    d = b.data["mlp"]
    rows, per, dense_by_seed = [], [], {}
    for seed in s.recipe_seeds:
        dense = train_or_load("mlp", d.x_train, d.y_train, TrainConfig(seed=seed))
        dense_by_seed[seed] = dense
        f = b.acc("mlp", dense)
        g = P.gradual_prune(
            copy.deepcopy(dense),
            d.x_train,
            d.y_train,
            0.9,
            5,
            scope="global",
            final_finetune=FINETUNE,
        )
        ga = b.acc("mlp", g)
        ra = recipe_acc(b, seed, dense)
        rows.append(
            [seed, pct(f), pct(ga), f"{100 * (ga - f):+.2f}", pct(ra), f"{100 * (ra - f):+.2f}"]
        )
        per.append((f, ga, ra))
        log(f"recipe seed {seed}: float {pct(f)} gradual {pct(ga)} recipe {pct(ra)}")
    per_a = np.array(per)
    ab_seeds = s.recipe_seeds[: max(1, len(s.recipe_seeds) // 2)]
    ablation = []
    for label, kw in RECIPE_VARIANTS.items():
        deltas = []
        for seed in ab_seeds:
            dense = dense_by_seed[seed]
            kw2 = dict(kw)
            teacher = None if kw2.pop("teacher", True) is False else dense
            deltas.append(recipe_acc(b, seed, teacher, **kw2) - b.acc("mlp", dense))
        ablation.append((label, deltas))
        log(f"recipe ablation {label}: done")
    doc.add(
        "## 2b. The mlp at 90% element sparsity (issue 3's target: within 1 point)",
        "",
        "Post-training gradual pruning (`gradual_prune`, 5 steps, global L1, 4 + 20 "
        "fine-tuning epochs) of the dense `mlp` against `prune.prune_during_training`: "
        "the Zhu & Gupta schedule applied *during* one 80-epoch training run from scratch "
        "(pruning at every epoch from 6 to 50, per-layer L1, then 30 epochs of the "
        "one-cycle rate annealing with the final masks), with the dense model of the same "
        "seed as a distillation teacher (half the loss is KL to its outputs softened at "
        "T = 4). Per training seed, each against the dense model of the same seed:",
        "",
    )
    doc.table(["seed", "float", "gradual_prune", "Δ", "prune_during_training", "Δ"], rows)
    fig, ax = plt.subplots(figsize=(5.0, 2.5))
    x = np.arange(len(per))
    ax.bar(x - 0.2, 100 * (per_a[:, 1] - per_a[:, 0]), 0.4, label="gradual_prune")
    ax.bar(x + 0.2, 100 * (per_a[:, 2] - per_a[:, 0]), 0.4, label="prune_during_training")
    ax.axhline(-1, color="k", lw=0.8, ls=":", label="target: -1 pt")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x, [f"seed {r[0]}" for r in rows], fontsize=7)
    ax.set_ylabel("Δ vs dense (pt)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    doc.figure(fig, "mlp90", "mlp at 90% element sparsity, per seed")
    recipe_ab = 100 * (per_a[: len(ab_seeds), 2] - per_a[: len(ab_seeds), 0])
    doc.add(
        f"Ablations (seeds {', '.join(str(x) for x in ab_seeds)}; mean Δ vs dense, pt):",
        "",
    )
    doc.table(
        ["variant", "mean Δ", "per seed"],
        [
            [
                "prune_during_training (as above)",
                f"{recipe_ab.mean():+.2f}",
                " / ".join(f"{v:+.2f}" for v in recipe_ab),
            ]
        ]
        + [
            [label, f"{100 * np.mean(dl):+.2f}", " / ".join(f"{100 * v:+.2f}" for v in dl)]
            for label, dl in ablation
        ],
    )
    md = 100 * (per_a[:, 1] - per_a[:, 0])
    mr = 100 * (per_a[:, 2] - per_a[:, 0])
    best_ab = max(ablation, key=lambda a: np.mean(a[1]))
    doc.add(
        f"**What pays off.** Mean Δ over {len(per)} seeds: gradual_prune {md.mean():+.2f} pt "
        f"(worst {md.min():+.2f}), prune_during_training {mr.mean():+.2f} pt (worst "
        f"{mr.min():+.2f}); within 1 point in {int((md >= -1).sum())} vs "
        f"{int((mr >= -1).sum())} of {len(per)} seeds. For the issue's float model (seed "
        f"{rows[0][0]}, {rows[0][1]}%) the recipe gives {rows[0][4]}% ({rows[0][5]} pt). "
        "One test image is 0.28 pt, so a miss of -1.11 pt is 4 images where 3 were "
        f"allowed. Among the ablations the best is {best_ab[0]} "
        f"({100 * np.mean(best_ab[1]):+.2f} pt mean, against {recipe_ab.mean():+.2f} for "
        "the recipe on the same seeds). Earlier exploration (not rerun here) found "
        "per-layer amounts that keep the first and last layers denser, no label smoothing "
        "and no weight decay all worse than uniform per-layer pruning.",
        "",
    )


def recipe_acc(b: Bench, seed: int, teacher: nn.Module | None, **kw) -> float:
    d = b.data["mlp"]
    m = P.prune_during_training(
        build("mlp", seed=seed),
        d.x_train,
        d.y_train,
        0.9,
        teacher=teacher,
        config=replace(P.PRUNE_DURING_TRAINING, seed=seed),
        **kw,
    )
    assert abs(sparsity_report(m).sparsity - 0.9) < 0.01
    return b.acc("mlp", m)


# --- 3. quantization: bit width ---------------------------------------------------------------


def qat_config(kind: str, bits: int) -> QuantConfig:
    w = QuantSpec(bits=bits, signed=True, narrow=True)
    a = QuantSpec(bits=bits, signed=False)
    inp = QuantSpec(bits=8, signed=False)
    if kind == "LSQ":
        w, a = replace(w, learn="lsq"), replace(a, learn="lsq")
    elif kind == "PACT":
        a = replace(a, learn="pact")
    return QuantConfig(weight=w, act=a, input=inp)


def section_bits(doc: Doc, b: Bench, s: Settings) -> dict:
    ptq: dict[tuple[str, str, int], float] = {}
    qa: dict[tuple[str, str, int], float] = {}
    for name in s.models:
        d = b.data[name]
        for bits in s.bits:
            for method in PTQ_METHODS:
                q = quantize_model(
                    b.float_models[name], QuantConfig.wa(bits, bits), d.x_train, method=method
                )
                ptq[(name, method, bits)] = b.acc(name, q)
        log(f"ptq {name}: done")
        for bits in s.qat_bits[name]:
            for kind in QAT_KINDS:
                q = quantize_model(b.float_models[name], qat_config(kind, bits), d.x_train)
                qat(q, d.x_train, d.y_train, s.qat[name])
                qa[(name, kind, bits)] = b.acc(name, q)
        log(f"qat {name}: done")
    doc.add(
        "## 3. Quantization: accuracy vs bit width",
        "",
        "`wNaN`: N-bit weights (signed, symmetric, narrow range, per tensor) and N-bit "
        "unsigned activations, power-of-two scales (the pure fixed-point `Fixed` types of "
        "the IR), an 8-bit input, 32-bit bias at the accumulator scale, batch norm folded. "
        "PTQ calibrates the activation ranges on the training split by the named method "
        "(weights always take their min-max). QAT starts from the min-max calibrated "
        f"model and fine-tunes ({describe(s.qat['mlp'])} for the mlp, "
        f"{describe(s.qat['cnn'])} for the cnn): *STE* learns the weights through "
        "straight-through rounding with fixed activation ranges, *LSQ* learns the steps of "
        "weights and activations too, *PACT* learns the activation clip.",
        "",
    )
    for name in s.models:
        header = ["method"] + [f"w{k}a{k}" for k in s.bits]
        rows = [[f"PTQ {m}"] + [pct(ptq[(name, m, k)]) for k in s.bits] for m in PTQ_METHODS]
        rows += [
            [f"QAT {k}"]
            + [pct(qa[(name, k, bits)]) if (name, k, bits) in qa else "–" for bits in s.bits]
            for k in QAT_KINDS
        ]
        doc.add(f"**{name}** (float {pct(b.float_acc[name])}%):", "")
        doc.table(header, rows)
    fig, axes = plt.subplots(1, len(s.models), figsize=(4.2 * len(s.models), 2.8), sharey=True)
    for ax, name in zip(np.atleast_1d(axes), s.models, strict=True):
        for m in PTQ_METHODS:
            ax.plot(
                s.bits, [100 * ptq[(name, m, k)] for k in s.bits], "o--", ms=3, label=f"PTQ {m}"
            )
        for k in QAT_KINDS:
            bs = s.qat_bits[name]
            ax.plot(bs, [100 * qa[(name, k, x)] for x in bs], "s-", ms=3, label=f"QAT {k}")
        ax.axhline(100 * b.float_acc[name], color="k", lw=0.8, ls=":")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("bits (weights = activations)", fontsize=8)
        ax.set_xticks(s.bits)
        ax.invert_xaxis()
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("test accuracy (%)", fontsize=8)
    np.atleast_1d(axes)[-1].legend(fontsize=6, loc="lower left")
    doc.figure(fig, "bits", "accuracy vs bit width")
    doc.add(*bits_findings(ptq, qa, b, s), "")
    return {"ptq": ptq, "qat": qa}


def bits_findings(ptq, qa, b: Bench, s: Settings) -> list[str]:
    out = ["**What pays off.**"]
    for name in s.models:
        f = b.float_acc[name]
        lossless = [k for k in s.bits if max(ptq[(name, m, k)] for m in PTQ_METHODS) >= f - 0.005]
        low = min(s.bits)
        best_ptq = max(PTQ_METHODS, key=lambda m: ptq[(name, m, low)])
        qb = [k for k in s.qat_bits[name]]
        within = [k for k in qb if max(qa[(name, q, k)] for q in QAT_KINDS) >= f - 0.015]
        qlow = min(qb)
        best_qat = max(QAT_KINDS, key=lambda q: qa[(name, q, qlow)])
        lowest = [ptq[(name, m, low)] for m in PTQ_METHODS]
        at_low = (
            f"at {low} bits every calibration collapses (≤ {pct(max(lowest))}%)"
            if max(lowest) < 0.2
            else f"at {low} bits the best calibration is {best_ptq} "
            f"({pct(ptq[(name, best_ptq, low)])}%, min-max {pct(ptq[(name, 'minmax', low)])}%)"
        )
        mid = [k for k in s.bits if 2 < k < 8]
        at_mid = (
            "; "
            + ", ".join(
                f"at {k} bits: " + "/".join(pct(ptq[(name, m, k)]) for m in PTQ_METHODS)
                for k in mid
            )
            + " (min-max/percentile/MSE/KL)"
            if mid
            else ""
        )
        out.append(
            f"`{name}`: PTQ stays within 0.5 pt of float down to "
            f"{min(lossless) if lossless else '–'} bits (best method){at_mid}; {at_low}. "
            f"QAT keeps within 1.5 pt down to "
            f"{min(within) if within else '–'} bits; at {qlow} bits {best_qat} is best "
            f"({pct(qa[(name, best_qat, qlow)])}%, vs "
            + ", ".join(f"{q} {pct(qa[(name, q, qlow)])}%" for q in QAT_KINDS if q != best_qat)
            + ")."
        )
    return [" ".join(out)]


# --- 4. binary and ternary --------------------------------------------------------------------


BINARY_ROWS: list[tuple[str, str, Callable[[], QuantConfig], float]] = [
    (
        "ternary weights (TWN, per-channel α), a8",
        "2-bit {-α,0,α}",
        lambda: QuantConfig(weight=QuantSpec.ternary(axis=0)),
        3e-3,
    ),
    (
        "ternary weights, power-of-two α, a8",
        "2-bit",
        lambda: QuantConfig(weight=QuantSpec.ternary("pow2", axis=0)),
        3e-3,
    ),
    (
        "binary weights (XNOR-Net α per channel), a8",
        "1-bit",
        lambda: QuantConfig(weight=QuantSpec.binary("float", axis=0)),
        1e-2,
    ),
    (
        "binary weights (BinaryConnect, ±1), a8",
        "1-bit",
        lambda: QuantConfig(weight=QuantSpec.binary("unit")),
        1e-2,
    ),
    (
        "fully binary: XNOR weights, sign activations, 8-bit input",
        "1-bit w, 1-bit a",
        lambda: QuantConfig(weight=QuantSpec.binary("float", axis=0), act=QuantSpec.binary()),
        1e-2,
    ),
]


def section_binary(doc: Doc, b: Bench, s: Settings) -> None:
    rows = []
    for name in s.models:
        d = b.data[name]
        for label, width, make, lr in BINARY_ROWS:
            q = quantize_model(b.float_models[name], make(), d.x_train)
            before = b.acc(name, q)
            qat(
                q, d.x_train, d.y_train, TrainConfig(epochs=s.binary[name], lr=lr, weight_decay=0.0)
            )
            codes = sorted(
                {int(v) for _, m in quant_layers(q) for v in m.weight_codes().unique().tolist()}
            )
            acc = b.acc(name, q)
            rows.append(
                [
                    name,
                    label,
                    width,
                    pct(before),
                    pct(acc),
                    f"{100 * (acc - b.float_acc[name]):+.2f}",
                    weight_bits(q),
                    codes,
                ]
            )
        log(f"binary {name}: done")
    doc.add(
        "## 4. Binary and ternary",
        "",
        "Weights quantized to 2 or 1 bits (first and last layer included), activations "
        "8-bit unless stated, then QAT "
        f"({s.binary['mlp']} epochs for the mlp, {s.binary['cnn']} for the cnn; lr 3e-3 "
        "ternary, 1e-2 binary, no weight decay). *Before QAT* is the accuracy right after "
        "quantization. *Weight bits* is the storage of all weight codes.",
        "",
    )
    doc.table(
        [
            "model",
            "scheme",
            "weights",
            "before QAT",
            "after QAT",
            "Δ vs float",
            "weight bits",
            "codes",
        ],
        rows,
    )
    by = {(r[0], r[1]): float(r[4]) for r in rows}
    f = {n: 100 * b.float_acc[n] for n in s.models}
    lines = []
    for name in s.models:
        tw = by[(name, BINARY_ROWS[0][0])]
        xn = by[(name, BINARY_ROWS[2][0])]
        bc = by[(name, BINARY_ROWS[3][0])]
        fb = by[(name, BINARY_ROWS[4][0])]
        lines.append(
            f"`{name}`: ternary {tw:.2f}% ({tw - f[name]:+.2f} pt) at 1/16 of the float "
            f"weight storage; XNOR-scaled binary {xn:.2f}% vs unscaled ±1 {bc:.2f}% "
            f"(the per-channel α is worth {xn - bc:+.2f} pt); binarising the activations "
            f"too costs {xn - fb:.2f} pt more ({fb:.2f}%)."
        )
    doc.add("**What pays off.** " + " ".join(lines), "")


# --- 5. combined ------------------------------------------------------------------------------


def nonzero_bits(q: nn.Module) -> int:
    return sum(
        int((m.weight_codes() != 0).sum()) * m.weight_quant.spec.bits for _, m in quant_layers(q)
    )


def section_combined(doc: Doc, b: Bench, s: Settings) -> None:
    rows = []
    sp = 0.8
    for name in s.models:
        d = b.data[name]
        pruned = b.fresh(name)
        P.prune(pruned, "element", "l1", sp, scope="global")
        train(pruned, d.x_train, d.y_train, s.finetune[name])
        pa = b.acc(name, pruned)
        rows.append(
            [
                name,
                f"float, pruned {100 * sp:.0f}% + fine-tune",
                pct(pa),
                f"{100 * sparsity_report(pruned).sparsity:.1f}",
                "–",
                "–",
            ]
        )
        for bits in (8, 4):
            q = quantize_model(pruned, QuantConfig.wa(bits, bits), d.x_train)
            rows.append(combined_row(name, f"prune → PTQ w{bits}a{bits}", q, b))
        q = quantize_model(pruned, QuantConfig.wa(4, 4), d.x_train)
        qat(q, d.x_train, d.y_train, s.qat[name])
        rows.append(combined_row(name, "prune → QAT w4a4 (masks kept)", q, b))
        dense = quantize_model(b.float_models[name], QuantConfig.wa(4, 4), d.x_train)
        qat(dense, d.x_train, d.y_train, s.qat[name])
        rows.append(combined_row(name, "dense → QAT w4a4 (reference)", dense, b))
        log(f"combined {name}: done")
    doc.add(
        "## 5. Combined: prune, then quantize",
        "",
        f"Deep Compression's order: element-wise L1 pruning to {100 * sp:.0f}% (global "
        "threshold) and fine-tuning, then quantization of the pruned model. "
        "`quantize_model` carries the `weight_mask` buffers into the quantized layers, and "
        "QAT re-applies them after every step, so pruned weights stay exactly zero codes "
        "(the *zero codes* column counts them over all weights). *Nonzero weight bits* is "
        "the storage of the nonzero codes alone (indices not counted).",
        "",
    )
    doc.table(
        [
            "model",
            "pipeline",
            "accuracy",
            "zero codes (%)",
            "nonzero weight bits",
            "all weight bits",
        ],
        rows,
    )
    acc = {(r[0], r[1]): float(r[2]) for r in rows}
    lines = []
    for name in s.models:
        p = acc[(name, f"float, pruned {100 * sp:.0f}% + fine-tune")]
        lines.append(
            f"`{name}`: PTQ of the pruned model changes its accuracy by "
            f"{acc[(name, 'prune → PTQ w8a8')] - p:+.2f} pt at w8a8 and "
            f"{acc[(name, 'prune → PTQ w4a4')] - p:+.2f} pt at w4a4; "
            f"QAT with the masks kept brings "
            f"w4a4 to {acc[(name, 'prune → QAT w4a4 (masks kept)')]:.2f}% against "
            f"{acc[(name, 'dense → QAT w4a4 (reference)')]:.2f}% dense, with "
            f"{100 * sp:.0f}% fewer weights to store."
        )
    doc.add("**What pays off.** " + " ".join(lines), "")


def combined_row(name: str, label: str, q: nn.Module, b: Bench) -> list:
    total = sum(m.weight.numel() for _, m in quant_layers(q))
    zeros = sum(int((m.weight_codes() == 0).sum()) for _, m in quant_layers(q))
    return [
        name,
        label,
        pct(b.acc(name, q)),
        f"{100 * zeros / total:.1f}",
        nonzero_bits(q),
        weight_bits(q),
    ]


# --- 6. dynamic pruning -----------------------------------------------------------------------


def section_dynamic(doc: Doc, b: Bench, s: Settings) -> None:
    pts: list[tuple[str, str, float, float]] = []  # model, label, skipped, acc
    for name in s.models:
        d = b.data[name]
        pts.append(
            (
                name,
                "float (ReLU zeros)",
                skipped_work(b.float_models[name], d.x_test).mean,
                b.float_acc[name],
            )
        )
        for t in s.thresholds:
            m = sparsify(b.fresh(name), d.x_train, d.y_train, threshold=t)
            pts.append((name, f"threshold {t:g}", skipped_work(m, d.x_test).mean, b.acc(name, m)))
        for l1 in s.l1s:
            m = sparsify(b.fresh(name), d.x_train, d.y_train, threshold=0.05, learnable=True, l1=l1)
            ts = [
                float(r.threshold.detach().clamp(min=0))
                for r in m.modules()
                if isinstance(r, ThresholdReLU)
            ]
            pts.append(
                (
                    name,
                    f"learned threshold, l1 {l1:g} (t = " + "/".join(f"{t:.2f}" for t in ts) + ")",
                    skipped_work(m, d.x_test).mean,
                    b.acc(name, m),
                )
            )
        log(f"sparsify {name}: done")
    dc = b.data["cnn"]
    for keep in s.keeps:
        g = gate_convs(b.float_models["cnn"], keep=keep)
        train(g, dc.x_train, dc.y_train, s.gate_finetune)
        pts.append(
            ("cnn", f"FBS gating, keep {keep:g}", skipped_work(g, dc.x_test).mean, b.acc("cnn", g))
        )
    log("gating: done")
    doc.add(
        "## 6. Dynamic pruning: skipped work vs accuracy",
        "",
        "*Skipped work* is `skipped_work(model, x_test).mean`: the fraction of all "
        "multiply-accumulates of the Linear/Conv2d layers, on the real test inputs, whose "
        "activation is exactly zero or whose output channel is gated off (zero weights "
        "not counted: the models here are dense). *threshold t*: every ReLU becomes a "
        f"`ThresholdReLU(t)` and the model is fine-tuned ({describe(SPARSIFY)}); "
        "*learned threshold*: t starts at 0.05 and is learned "
        "with an L1 penalty on the activations. *FBS gating*: `gate_convs` on the trained "
        "cnn (a saliency predictor per conv block keeps the top `keep` fraction of "
        f"channels per input), fine-tuned {describe(s.gate_finetune)}. The gate "
        "predictors' own work (a pooled Linear per block) is not counted.",
        "",
    )
    doc.table(
        ["model", "scheme", "skipped MACs (%)", "accuracy", "Δ vs float"],
        [
            [n, label, f"{100 * sk:.1f}", pct(a), f"{100 * (a - b.float_acc[n]):+.2f}"]
            for n, label, sk, a in pts
        ],
    )
    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    for name, marker in zip(s.models, ("o", "s"), strict=False):
        for kind, color in (("float", "k"), ("threshold", "C0"), ("learned", "C1"), ("FBS", "C2")):
            sel = [p for p in pts if p[0] == name and p[1].startswith(kind)]
            if sel:
                ax.plot(
                    [100 * p[2] for p in sel],
                    [100 * p[3] for p in sel],
                    marker,
                    color=color,
                    ls="-" if len(sel) > 1 else "",
                    ms=4,
                    label=f"{name}: {kind}",
                )
    ax.set_xlabel("skipped MACs (%)", fontsize=8)
    ax.set_ylabel("test accuracy (%)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    doc.figure(fig, "dynamic", "skipped work vs accuracy")
    lines = []
    for name in s.models:
        mine = [p for p in pts if p[0] == name]
        base = mine[0]
        ok = [p for p in mine if p[3] >= b.float_acc[name] - 0.01]
        best = max(ok, key=lambda p: p[2])
        lines.append(
            f"`{name}`: plain ReLU already skips {100 * base[2]:.1f}% of the MACs; the most "
            f"within 1 pt of float is {100 * best[2]:.1f}% ({best[1]}, {pct(best[3])}%)."
        )
    gates = [p for p in pts if p[1].startswith("FBS")]
    if gates:
        lines.append(
            "FBS gating (`gate_convs` on the trained cnn, short fine-tune): "
            + ", ".join(
                f"{p[1].split(', ')[1]} skips {100 * p[2]:.1f}% at {pct(p[3])}%" for p in gates
            )
            + (
                " — accuracy falls monotonically as fewer channels run."
                if all(a[3] >= c[3] for a, c in zip(gates[1:], gates[:-1], strict=False))
                else " — not monotonic in keep: after only "
                f"{s.gate_finetune.epochs} fine-tuning epochs the gates are not converged "
                "(the zoo's `gated_cnn` trained from scratch at keep 0.5 stays within 2 pt, "
                "tests/models/test_dynamic.py)."
            )
        )
    doc.add("**What pays off.** " + " ".join(lines), "")


# --- 7. shrink ----------------------------------------------------------------------------------


def section_shrink(doc: Doc, b: Bench, s: Settings, runs: list[PruneRun]) -> None:
    rows = []
    for r in runs:
        if r.params_shrunk is None or r.criterion != "l1":
            continue
        rows.append(
            [
                r.model,
                r.granularity,
                r.amount,
                r.params,
                r.params_shrunk,
                f"{r.params / r.params_shrunk:.2f}×",
                pct(r.finetuned),
                "yes" if r.shrunk_equal else "NO",
            ]
        )
    doc.add(
        "## 7. Structured pruning made physical: parameters before and after `shrink`",
        "",
        'L1 runs of section 1 (`scope="layer"`, fine-tuned). *Parameters* counts every '
        "weight, bias and batch-norm scale and shift of the masked model (pruned weights "
        "still stored); *after shrink* those of `shrink(model)`, which removes the pruned "
        "filters and channels physically, with the next layer's input columns and "
        "batch-norm entries (resnet_tiny: the switched-off residual path). *Same accuracy* "
        "checks the smaller model classifies the test split exactly as the masked one.",
        "",
    )
    doc.table(
        [
            "model",
            "granularity",
            "amount",
            "parameters",
            "after shrink",
            "ratio",
            "accuracy",
            "same accuracy",
        ],
        rows,
    )
    cnn_f = [r for r in runs if (r.model, r.granularity, r.criterion) == ("cnn", "filter", "l1")]
    if cnn_f:
        half = min(cnn_f, key=lambda r: abs(r.amount - 0.5))
        doc.add(
            f"**What pays off.** Filter pruning shrinks quadratically inside the network (a "
            f"removed filter also removes the next layer's input channel): half the cnn's "
            f"filters leave {half.params_shrunk} of {half.params} parameters "
            f"({half.params / half.params_shrunk:.1f}× smaller) at {pct(half.finetuned)}% "
            f"({100 * (half.finetuned - b.float_acc['cnn']):+.2f} pt).",
            "",
        )


# --- main -------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs (shared), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, torch {torch.__version__}"
        f", run single-threaded"
    )


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small sweep (checks the script)")
    ap.add_argument("--out", default="docs/", help="directory of compression.md (docs/)")
    ap.add_argument(
        "--cache",
        default=None,
        help="cache trained float models here (default: train them every run)",
    )
    args = ap.parse_args(argv)
    s = QUICK if args.quick else FULL
    out = Path(args.out)
    img = out / "img" / "compression"
    img.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    doc = Doc(img, "img/compression")
    b = setup(s, None if args.cache is None else Path(args.cache))
    body = Doc(img, "img/compression")
    runs = section_static(body, b, s)
    section_gradual(body, b, s)
    section_recipe(body, b, s)
    section_bits(body, b, s)
    section_binary(body, b, s)
    section_combined(body, b, s)
    section_dynamic(body, b, s)
    section_shrink(body, b, s, runs)
    minutes = (time.perf_counter() - t0) / 60
    cmd = " ".join(["python", "benchmarks/compression_sweep.py", *(argv or sys.argv[1:])])
    doc.add(
        "# Compression on the digits data set",
        "",
        "<!-- generated by benchmarks/compression_sweep.py; edit the script, not this file -->",
        "",
        f"Generated by `{cmd}` ({s.name} sweep) on {datetime.date.today().isoformat()}, "
        f"in {minutes:.1f} minutes, on: {machine()}.",
        "",
        "All numbers are top-1 accuracy (%) on the digits **test** split (360 images; one "
        "image is 0.28 points), from real training runs: seeded, single-threaded, "
        "deterministic. Float baselines (default `TrainConfig`, 40 epochs; resnet_tiny "
        f"{s.resnet_train.epochs}): "
        + ", ".join(f"`{n}` {pct(a)}%" for n, a in b.float_acc.items())
        + ".",
        "",
        "Contents: 1. static pruning · 2. gradual vs one-shot · 2b. the mlp at 90% · "
        "3. bit width · 4. binary and ternary · 5. combined · 6. dynamic pruning · "
        "7. shrink.",
        "",
    )
    doc.lines += body.lines
    (out / "compression.md").write_text("\n".join(doc.lines).rstrip() + "\n")
    log(f"wrote {out / 'compression.md'} in {minutes:.1f} min")


if __name__ == "__main__":
    main()
