"""The ``pqflow`` command line.

Exit codes: 0 success; 1 a check failed (e.g. RTL != oracle); 2 bad input or a missing
tool, reported as one line naming the problem and the fix (never a traceback).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .errors import UserError

EXIT_CHECK_FAILED = 1
EXIT_USER_ERROR = 2


class CheckFailed(Exception):
    """A verification that ran and found a mismatch (exit code 1)."""


def _fail(msg: str, code: int) -> None:
    click.echo(f"pqflow: error: {msg}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pqflow")
def cli() -> None:
    """pqflow: pruned and quantized networks to verified, costed FPGA accelerators."""


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder for the IR, Verilog and summary. Must not exist unless --force.",
)
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@click.option("--quiet", is_flag=True, help="No progress display; print only the summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--resume",
    is_flag=True,
    help="Restore every step that has a checkpoint of this config (from an earlier, failed "
    "or interrupted run) instead of running it again.",
)
@click.option(
    "--from-step",
    type=click.Choice(
        ["train", "compress", "lower", "oracle", "generate", "verify", "hls", "estimate", "report"]
    ),
    default=None,
    help="Restore the steps before this one from their checkpoints and run it and the rest.",
)
def flow(
    config: Path,
    out: Path,
    force: bool,
    quiet: bool,
    as_json: bool,
    resume: bool,
    from_step: str | None,
) -> None:
    """Run the whole flow from a TOML CONFIG.

    Steps: data, train, compress (prune, quantize), lower, oracle (accuracy), generate
    (Verilog), verify (cocotb), hls (C++ and C simulation), estimate, report, summary.
    Everything is written under OUT (built in a temporary folder beside it and moved
    into place only when every step succeeded, so a failure leaves no partial output).
    Each step leaves a checkpoint in the cache ($PQFLOW_CACHE/flow) for --resume and
    --from-step.
    """
    from .config import load_config
    from .flow import run_flow

    cfg = load_config(config)
    result = run_flow(cfg, out, force=force, progress=not quiet, resume=resume, from_step=from_step)
    if as_json:
        click.echo(json.dumps(result.summary, indent=2))
    else:
        click.echo(result.summary_text())
        steps = ", ".join(
            f"{k[:-2]} {v:.1f}s" for k, v in result.timings.items() if k.endswith("_s")
        )
        click.echo(f"  time: {steps}")
        click.echo(f"  artefacts: {out}")
    if not result.passed:
        raise CheckFailed(f"verification failed; see {out / 'summary.md'}")


@cli.command()
@click.argument("ir_file", type=click.Path(dir_okay=False, path_type=Path))
def show(ir_file: Path) -> None:
    """Check an IR JSON file and print it as readable text."""
    from . import ir

    click.echo(ir.format_graph(ir.load(ir_file)))


@cli.command()
@click.argument("ir_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data",
    type=click.Choice(["digits"]),
    default="digits",
    show_default=True,
    help="Data set whose test split is run.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def run(ir_file: Path, data: str, as_json: bool) -> None:
    """Run an IR graph on the oracle over a data set's test split; print its accuracy."""
    import numpy as np

    from . import ir
    from .kernels import run as run_graph
    from .models.data import load_digits_split

    graph = ir.load(ir_file)
    split = load_digits_split()
    want = (1, *graph.inputs[0].type.shape)
    x = split.x_test.reshape(-1, *want[1:]) if split.x_test[0].size == np.prod(want) else None
    if x is None:
        raise UserError(
            f"{ir_file}: input shape {want[1:]} does not take {data} samples of shape "
            f"{split.x_test.shape[1:]}"
        )
    y = np.asarray(run_graph(graph, x))
    pred = y.reshape(len(y), -1).argmax(axis=1)
    acc = float((pred == split.y_test).mean())
    res = {"file": str(ir_file), "data": data, "samples": int(len(pred)), "accuracy": acc}
    click.echo(
        json.dumps(res)
        if as_json
        else f"{data} test split: {len(pred)} samples, accuracy {acc:.2%}"
    )


_STYLES = ("unrolled", "folded", "sparse")


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Quantized model file to write (for `pqflow lower`). Must not exist unless --force.",
)
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the accuracies as JSON.")
def compress(config: Path, out: Path, force: bool, as_json: bool) -> None:
    """Train, prune and quantize the model of a flow CONFIG; save it for `pqflow lower`.

    Runs the flow's data, train and compress steps (the [model], [train] and [compress]
    sections) and writes the quantized torch model with an example batch
    (``pqflow.models.lower.save_model``), atomically.
    """
    import tempfile

    from .config import load_config
    from .flow import FlowState, step_compress, step_data, step_train
    from .models.lower import save_model

    cfg = load_config(config)
    if out.exists() and not force:
        raise UserError(f"{out} exists; pass --force to replace it")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent} is not a folder; create it or choose another path")
    with tempfile.TemporaryDirectory() as tmp:
        st = FlowState(config=cfg, work=Path(tmp))
        for step in (step_data, step_train, step_compress):
            step(st)
    save_model(out, st.qmodel, st.split.x_train[:4])
    doc = {"model": cfg.model.name, "float": st.summary["float"], **st.summary["quantized"]}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(
            f"{out}: {cfg.model.name}, float accuracy {doc['float']['accuracy']:.2%}, "
            f"compressed ({cfg.compress.quant}) accuracy {doc['accuracy']:.2%}"
        )


@cli.command()
@click.argument("model_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="IR JSON file to write. Must not exist unless --force.",
)
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
@click.option("--dequantize", is_flag=True, help="End the graph with a Dequantize (float out).")
@click.option("--json", "as_json", is_flag=True, help="Print nodes, constants and types as JSON.")
def lower(model_file: Path, out: Path, force: bool, dequantize: bool, as_json: bool) -> None:
    """Lower a saved quantized torch model (MODEL_FILE) to the integer IR.

    MODEL_FILE is ``torch.save({"format": "pqflow-model/1", "model": <quantized
    nn.Module>, "example_input": <batch>})``, as written by
    ``pqflow.models.lower.save_model`` (a pickle: open only files you trust). The IR is
    checked and written atomically; nothing is written when lowering fails.
    """
    from . import ir
    from .models.lower import load_model
    from .models.lower import lower as lower_model

    if out.exists() and not force:
        raise UserError(f"{out} exists; pass --force to replace it")
    model, x = load_model(model_file)
    graph = lower_model(model, x, dequantize=dequantize)
    ir.save(graph, out)
    n_w = sum(w.data.size for n in graph for w in n.op.weights().values())
    if as_json:
        types = graph.types()
        doc = {
            "file": str(out),
            "nodes": len(graph),
            "constants": int(n_w),
            "input": str(graph.inputs[0].type),
            "output": str(types[graph.outputs[0]]),
            "ops": [type(n.op).__name__ for n in graph],
        }
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(
        f"{out}: {len(graph)} nodes, {n_w} constants, output {graph.types()[graph.outputs[0]]}"
    )


def _style_options(style: str, pe: int | None, simd: int | None) -> dict:
    """The Impl options the CLI's --pe/--simd give for ``style`` (UserError when misused)."""
    takes = {"unrolled": (), "folded": ("pe", "simd"), "sparse": ("pe",)}[style]
    options = {}
    for flag, value in (("pe", pe), ("simd", simd)):
        if value is None:
            continue
        if flag not in takes:
            users = " and ".join(
                s for s, t in (("folded", ("pe", "simd")), ("sparse", ("pe",))) if flag in t
            )
            raise UserError(f"--{flag} applies to the {users} style, not to {style!r}")
        options[flag] = value
    return options


def _design_for(ir_file: Path, style: str, pe, simd, axis: bool, top: str):
    """(graph, VerilogDesign) of an IR file in one style; bad designs are UserErrors."""
    from . import ir
    from .hwgen import generate_verilog

    graph = ir.load(ir_file)
    options = _style_options(style, pe, simd)
    try:
        return graph, generate_verilog(graph, style, top, axis=axis, **options)
    except UserError:
        raise
    except (ValueError, TypeError) as e:  # a graph the dataflow top cannot take
        raise UserError(f"{ir_file}: {e}") from None


_TARGETS = ("rtl", "hls")


def _hardware_options(f):
    f = click.option(
        "--target",
        type=click.Choice(_TARGETS),
        default="rtl",
        show_default=True,
        help="rtl: Verilog; hls: Vitis HLS C++ (C-simulated with g++).",
    )(f)
    f = click.option(
        "--top",
        default="pqflow_top",
        show_default=True,
        help="Verilog module / HLS top function name.",
    )(f)
    f = click.option("--axis", is_flag=True, help="AXI-Stream top ports (s_axis_*/m_axis_*).")(f)
    f = click.option("--simd", type=int, default=None, help="Inputs per cycle (folded).")(f)
    f = click.option("--pe", type=int, default=None, help="Processing elements (folded, sparse).")(
        f
    )
    f = click.option(
        "--style",
        type=click.Choice(_STYLES),
        default="unrolled",
        show_default=True,
        help="Implementation of every Dense/BinaryDense node.",
    )(f)
    return f


@cli.command()
@click.argument("ir_file", type=click.Path(dir_okay=False, path_type=Path))
@_hardware_options
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder for <top>.v and design.json. Must not exist unless --force.",
)
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print design.json's content as JSON.")
def gen(ir_file: Path, style, pe, simd, axis, top, target, out: Path, force: bool, as_json) -> None:
    """Generate hardware for an IR graph.

    --target rtl (default): OUT/<top>.v and OUT/design.json (per-node style).
    --target hls: a Vitis HLS project, OUT/firmware/, OUT/tb/ and OUT/run_hls.tcl (with the
    oracle's vectors for the first 100 digits test images when the graph takes digits samples).
    """
    from .outdir import check_out_dir, staged_out_dir

    check_out_dir(out, force)
    if target == "hls":
        _gen_hls(ir_file, style, pe, simd, axis, top, out, force, as_json)
        return
    _, d = _design_for(ir_file, style, pe, simd, axis, top)
    with staged_out_dir(out, force) as work:
        _write_rtl(d, ir_file, work)
    if as_json:
        click.echo((out / "design.json").read_text().rstrip())
        return
    click.echo(
        f"{out / (d.top + '.v')}: {style}, {d.text.count(chr(10))} lines, "
        f"latency {d.latency}, cycles per vector {d.cycles_per_vector}"
    )
    if d.fifo_depths:
        depths = ", ".join(f"{add} {depth}" for add, depth in d.fifo_depths)
        click.echo(f"  skip FIFO depths (beats, by Add node): {depths}")


def _write_rtl(d, ir_file: Path, out: Path) -> None:
    (out / f"{d.top}.v").write_text(d.text)
    info = {
        **d.design.describe(),
        "source": str(ir_file),
        "axis": d.axis,
        "ports": d.port_names or "amaranth (clk, rst, i__*, o__*)",
        "input": {
            "count": d.in_count,
            "width": d.in_width,
            "signed": d.in_signed,
            "beats": d.in_beats,  # per sample: H * W one-pixel beats for an image
        },
        "output": {
            "count": d.out_count,
            "width": d.out_width,
            "signed": d.out_signed,
            "beats": d.out_beats,
        },
        "latency_cycles": d.latency,
        "cycles_per_vector": d.cycles_per_vector,
        "fifo_depths": dict(d.fifo_depths),
        "sha256": d.digest,
    }
    (out / "design.json").write_text(json.dumps(info, indent=2) + "\n")


@cli.command()
@click.argument("ir_file", type=click.Path(dir_okay=False, path_type=Path))
@_hardware_options
@click.option(
    "--sim",
    type=click.Choice(["verilator", "icarus"]),
    default="verilator",
    show_default=True,
    help="Simulator.",
)
@click.option(
    "-n",
    "count",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Number of digits test images (the first N).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Stall pattern seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(ir_file: Path, style, pe, simd, axis, top, target, sim, count, seed, as_json) -> None:
    """Simulate the hardware of an IR graph on the first N digits test images against the oracle.

    --target rtl (default): input stalls and output back-pressure are random; every output
    word is compared. --target hls: the generated C++ is compiled with g++ (-Wall -Werror,
    cached per design) and its C simulation compared raw for raw. Exit 1 on a mismatch.
    """
    from .sim import StreamPorts, verify_stream
    from .sim.graph import deadlock_timeout, hardware_vectors

    if target == "hls":
        for flag in ("sim", "seed"):
            if _given(flag):
                raise UserError(f"--{flag} applies to the rtl target, not to --target hls")
        _verify_hls(ir_file, style, pe, simd, axis, top, count, as_json)
        return
    graph, d = _design_for(ir_file, style, pe, simd, axis, top)
    x = _digits_for(ir_file, graph, count)
    ins, expected = hardware_vectors(graph, x)
    res = verify_stream(
        d.text,
        d.top,
        **d.bench_args(ins, expected),
        ports=StreamPorts(**d.port_names),
        sim=sim,
        seed=seed,
        timeout_cycles=deadlock_timeout(d),  # a deadlock fails in thousands of cycles
    )
    summary = {
        "file": str(ir_file),
        "style": style,
        "design": d.design.describe()["nodes"],
        "sim": sim,
        "vectors": res.n_vectors,
        "bit_exact": res.passed,
        "mismatches": res.n_mismatches,
        "error": res.error,
        "latency_cycles": res.latency_cycles,
        "latency_model": d.latency,
        "ii_cycles": res.ii_cycles,
        "cycles_per_vector": d.cycles_per_vector,
        "build_seconds": round(res.build.build_seconds, 2),
        "build_cached": res.build.cached,
        "vectors_per_second": round(res.vectors_per_second, 1),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(
            f"{ir_file} ({style}) on {sim}: bit-exact {'yes' if res.passed else 'no'}, "
            f"{res.n_vectors} vectors, {res.n_mismatches} mismatches"
        )
        click.echo(
            f"  latency {res.latency_cycles} cycles (model {d.latency}), II {res.ii_cycles} "
            f"cycles, cycles per vector {d.cycles_per_vector or 'data-dependent'}"
        )
        click.echo(
            f"  build {res.build.build_seconds:.1f}s{' (cached)' if res.build.cached else ''}, "
            f"{res.vectors_per_second:.0f} vectors/s"
        )
        for mm in res.mismatches[:3]:
            click.echo(f"  {mm}")
        if res.error:
            click.echo(f"  {res.error}")
    if not res.passed:
        raise CheckFailed(f"RTL != oracle: {res.n_mismatches} mismatching vectors")


def _given(param: str) -> bool:
    """Whether option ``param`` of the current command was given on the command line."""
    from click.core import ParameterSource

    source = click.get_current_context().get_parameter_source(param)
    return source not in (None, ParameterSource.DEFAULT)


def _digits_for(ir_file: Path, graph, count: int | None, strict: bool = True):
    """The first ``count`` digits test images shaped as the graph's input.

    Flat (64) or channels-last images (8, 8, 1), whichever the input takes; a UserError
    (``strict``) or None when the input takes neither.
    """
    import numpy as np

    from .models.data import load_digits_split

    shape = tuple(graph.inputs[0].type.shape)
    split = load_digits_split()
    if split.x_test[0].size != int(np.prod(shape)):
        if not strict:
            return None
        raise UserError(
            f"{ir_file}: input shape {shape} does not take digits samples of shape "
            f"{split.x_test.shape[1:]}"
        )
    if len(shape) == 3:  # images: the channels-last (H, W, C) layout
        split = load_digits_split(image=True)
    x = split.x_test if count is None else split.x_test[:count]
    return np.ascontiguousarray(x).reshape(-1, *shape)


def _hls_design(ir_file: Path, style: str, pe, simd, axis: bool):
    """(graph, Design) for the HLS target; misuse of rtl-only options is a UserError."""
    from . import ir
    from .hwgen import Design

    if axis:
        raise UserError("--axis applies to the rtl target (HLS tops take arrays or hls::stream)")
    graph = ir.load(ir_file)
    options = _style_options(style, pe, simd)
    try:
        return graph, Design.uniform(graph, style, **options)
    except UserError:
        raise
    except (ValueError, TypeError) as e:
        raise UserError(f"{ir_file}: {e}") from None


def _gen_hls(ir_file: Path, style, pe, simd, axis, top, out: Path, force: bool, as_json) -> None:
    from .hwgen.hls import generate_hls
    from .outdir import staged_out_dir

    graph, design = _hls_design(ir_file, style, pe, simd, axis)
    x = _digits_for(ir_file, graph, 100, strict=False)
    project = generate_hls(design, top=top, x=x)  # render fully before touching OUT
    info = {
        **design.describe(),
        "source": str(ir_file),
        "target": "hls",
        "top": project.top,
        "mode": project.mode,
        "files": sorted(project.files),
        "vectors": 0 if x is None else int(x.shape[0]),
        "sha256": project.digest,
    }
    with staged_out_dir(out, force) as work:
        project.write(work)
        (work / "design.json").write_text(json.dumps(info, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    lines = sum(project.files[f].count("\n") for f in project.sources)
    vec = "no vectors" if x is None else f"vectors for {x.shape[0]} digits test images"
    click.echo(
        f"{out}: HLS project {project.top} ({style}, {project.mode}), {len(project.files)} files, "
        f"{lines} lines of C++, {vec}; run: vitis_hls -f {out / 'run_hls.tcl'}"
    )


def _verify_hls(ir_file: Path, style, pe, simd, axis, top, count: int, as_json: bool) -> None:
    from .sim.csim import csim

    graph, design = _hls_design(ir_file, style, pe, simd, axis)
    x = _digits_for(ir_file, graph, count)
    res = csim(design, x, top=top)
    summary = {
        "file": str(ir_file),
        "target": "hls",
        "style": style,
        "design": design.describe()["nodes"],
        "sim": "g++ csim",
        "vectors": int(res.outputs.shape[0]),
        "bit_exact": res.passed,
        "mismatches": res.mismatches,
        "compile_seconds": round(res.compile_seconds, 2),
        "compile_cached": res.cached,
        "run_seconds": round(res.run_seconds, 3),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(
            f"{ir_file} ({style}) HLS C simulation: bit-exact {'yes' if res.passed else 'no'}, "
            f"{summary['vectors']} vectors, {res.mismatches} mismatches"
        )
        click.echo(
            f"  compile {res.compile_seconds:.1f}s{' (cached)' if res.cached else ''}, "
            f"run {res.run_seconds:.2f}s"
        )
    if not res.passed:
        raise CheckFailed(f"HLS C simulation != oracle: {res.mismatches} mismatching samples")


_DEVICE_HELP = "Device profile the estimate is read against (see pqflow.estimate.DEVICES)."


def _device_names() -> list[str]:
    from .estimate.device import DEVICES

    return sorted(DEVICES)


@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder for report.html, report.md, report.json and figures/. "
    "Must not exist unless --force.",
)
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@click.option(
    "--style",
    type=click.Choice(_STYLES),
    default="unrolled",
    show_default=True,
    help="Implementation of every Dense/BinaryDense node (IR file only).",
)
@click.option("--pe", type=int, default=None, help="Processing elements (folded, sparse; IR file).")
@click.option("--simd", type=int, default=None, help="Inputs per cycle (folded; IR file).")
@click.option(
    "--device",
    "device_name",
    type=click.Choice(_device_names()),
    default="xc7z020",
    show_default=True,
    help=_DEVICE_HELP,
)
@click.option(
    "--no-accuracy",
    is_flag=True,
    help="Do not run the oracle on the digits test split (no accuracy section).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report's JSON document.")
def report(
    source: Path, out: Path, force: bool, style, pe, simd, device_name, no_accuracy, as_json
) -> None:
    """Write an HTML, Markdown and JSON report of a design: per-layer table (op, shapes,
    types, sparsity, LUT/FF/DSP/BRAM, cycles), resource and latency plots, and the oracle's
    accuracy on the digits test split.

    SOURCE is an IR JSON file (built in --style) or a `pqflow flow` output folder (its
    model.ir.json and design.json; the simulated cycles of its summary.json are shown
    beside the estimate). Layers the estimator has no model for are marked "no estimate"
    with the reason, never counted as zero.
    """
    from .outdir import check_out_dir, staged_out_dir
    from .report import build_report, digits_test_for, report_source, write_report

    check_out_dir(out, force)
    options = {} if source.is_dir() else _style_options(style, pe, simd)
    if source.is_dir() and (pe is not None or simd is not None):
        options = {"pe": pe, "simd": simd}  # rejected by report_source with a sentence
    design, measured, title = report_source(source, style, **options)
    x, y = (None, None) if no_accuracy else digits_test_for(design.graph)
    rep = build_report(design, device_name, x=x, y=y, title=title, measured=measured)
    with staged_out_dir(out, force) as work:
        write_report(rep, work)
    if as_json:
        click.echo(json.dumps(rep.data, indent=2))
        return
    est = rep.data["estimate"]
    t = est["totals"]
    acc = rep.data["accuracy"]
    click.echo(
        f"{out / 'report.html'}: {len(rep.layers)} layers on {est['device']}: "
        f"{t['lut']:,} LUT, {t['ff']:,} FF, {t['dsp']} DSP, {t['bram']} BRAM18, "
        f"latency {t['latency']} cycles, II {t['ii']}"
        + (f", oracle accuracy {acc['accuracy']:.2%}" if acc["status"] == "run" else "")
    )
    if not est["complete"]:
        click.echo(
            f"  no estimate for {len(est['missing'])} layer(s): {', '.join(est['missing'])} "
            "(totals cover the estimated layers only)"
        )


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder: pareto.json, pareto.png, points.json and the per-point cache "
    "(points/, graphs/). Must not exist unless --resume or --force.",
)
@click.option("--force", is_flag=True, help="Replace the output folder and its cache: start over.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an earlier sweep in OUT: points already cached there are not computed again.",
)
@click.option(
    "--scheduler",
    metavar="tcp://HOST:PORT",
    default=None,
    help="Run on the Dask cluster of this scheduler (default: a local cluster of processes).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Worker processes of the local cluster (ignored with --scheduler).",
)
@click.option(
    "--yosys",
    is_flag=True,
    help="Also synthesize every point with yosys (slow; overrides [score] yosys = false).",
)
@click.option("--quiet", is_flag=True, help="No progress bar; print only the result.")
@click.option("--json", "as_json", is_flag=True, help="Print the Pareto front as JSON.")
def explore(config: Path, out: Path, force, resume, scheduler, workers, yosys, quiet, as_json):
    """Sweep bit widths x sparsity x style x folding of the digits MLP from a TOML CONFIG.

    Each point is scored on the oracle's accuracy on the digits test split and the
    estimator's resources and latency (and yosys's counts with --yosys); the points no
    other point beats on every objective form the Pareto front (OUT/pareto.json, plot in
    OUT/pareto.png). Points are cached in OUT as they finish, so an interrupted sweep
    continues with --resume. See examples/explore_digits_mlp.toml.
    """
    import dataclasses

    from .explore import load_explore_config, run_sweep

    if scheduler is not None and not scheduler.startswith(("tcp://", "tls://", "inproc://")):
        raise UserError(f"--scheduler {scheduler!r}: give an address like tcp://127.0.0.1:8786")
    if force and resume:
        raise UserError("--force starts over and --resume continues: give one of them")
    cfg = load_explore_config(config)
    if yosys:
        cfg = dataclasses.replace(cfg, score=dataclasses.replace(cfg.score, yosys=True))
    try:
        res = run_sweep(
            cfg,
            out,
            force=force,
            resume=resume,
            scheduler=scheduler,
            workers=workers,
            progress=not quiet,
        )
    except KeyboardInterrupt:
        done = len(list((out / "points").glob("*.json"))) if (out / "points").is_dir() else 0
        _fail(f"interrupted; {done} points are cached in {out}: add --resume to continue", 130)
    if as_json:
        click.echo(json.dumps(res.summary(), indent=2))
        return
    click.echo(
        f"{out}: {len(res.results)} points ({res.computed} computed, {res.cached} cached), "
        f"{len(res.front)} on the Pareto front of {', '.join(res.objectives)}"
    )
    for r in res.front:
        click.echo(
            f"  {r['label']:<30} accuracy {r['accuracy']:.2%}  {r['lut']:>7,} LUT "
            f"{r['dsp']:>4} DSP {r['bram']:>3} BRAM  latency {r['latency']:>5}  II {r['ii']}"
        )
    click.echo(f"  plot: {out / 'pareto.png'}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning known errors into one line and an exit code."""
    try:
        cli.main(args=argv, prog_name="pqflow", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as e:
        _fail(e.format_message(), EXIT_USER_ERROR)
    except UserError as e:
        _fail(str(e), EXIT_USER_ERROR)
    except FileExistsError as e:
        _fail(str(e), EXIT_USER_ERROR)
    except CheckFailed as e:
        _fail(str(e), EXIT_CHECK_FAILED)
    except KeyboardInterrupt:
        _fail("interrupted", 130)


if __name__ == "__main__":
    main()
