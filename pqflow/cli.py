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
def flow(config: Path, out: Path, force: bool, quiet: bool, as_json: bool) -> None:
    """Run the whole flow from a TOML CONFIG: train, quantize, lower, oracle, RTL, verify.

    Everything is written under OUT (built in a temporary folder beside it and moved
    into place only when every step succeeded, so a failure leaves no partial output).
    """
    from .config import load_config
    from .flow import run_flow

    cfg = load_config(config)
    result = run_flow(cfg, out, force=force, progress=not quiet)
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
