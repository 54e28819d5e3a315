"""Shared test support: simulator markers and fixtures.

A test marked ``@pytest.mark.verilator`` or ``@pytest.mark.icarus`` (markers registered
in pyproject.toml) runs only when that simulator is found by
:func:`pqflow.sim.find_simulator`; otherwise it is skipped with a reason naming the tool
and the fix ("verilator not found: run scripts/setup.sh ..."). Under CI (``CI`` set),
where scripts/setup.sh installs both simulators, a missing simulator fails the test
instead: CI must never pass by skipping the hardware checks.

Fixtures: ``verilator_path`` and ``icarus_path`` (the executables), and ``sim``, which
parametrizes a test over both simulators with the matching markers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SIMULATOR_MARKERS = ("verilator", "icarus")


def require_simulator(name: str) -> Path:
    """Return simulator ``name``'s executable, or skip (fail under CI) when it is absent."""
    from pqflow.sim.tools import SimulatorNotFound, find_simulator

    try:
        return find_simulator(name)
    except SimulatorNotFound as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{exc} (CI installs the simulators, so CI must run these tests)")
        pytest.skip(str(exc))


def pytest_runtest_setup(item: pytest.Item) -> None:
    for name in SIMULATOR_MARKERS:
        if item.get_closest_marker(name) is not None:
            require_simulator(name)


@pytest.fixture
def verilator_path() -> Path:
    return require_simulator("verilator")


@pytest.fixture
def icarus_path() -> Path:
    return require_simulator("icarus")


@pytest.fixture(
    params=[
        pytest.param("verilator", marks=pytest.mark.verilator),
        pytest.param("icarus", marks=pytest.mark.icarus),
    ]
)
def sim(request: pytest.FixtureRequest) -> str:
    """A simulator name, once per simulator; absent ones skip via their marker."""
    return request.param


@pytest.fixture
def rtl_check(sim: str):
    """One line per design: ``rtl_check(design_or_graph, x)`` generates its Verilog,
    simulates it (on each simulator, via the ``sim`` fixture) with random stalls and
    back-pressure, asserts every output word equals the oracle's, and returns the
    ``SimResult`` (latency, II, throughput)."""
    from pqflow.hwgen import generate_verilog
    from pqflow.sim.graph import verify_graph

    def check(source, x, **options):
        graph = getattr(source, "graph", source)
        res = verify_graph(generate_verilog(source), graph, x, sim=sim, **options)
        assert res.passed and res.n_mismatches == 0, res.summary()
        assert res.n_vectors == len(x)
        return res

    return check
