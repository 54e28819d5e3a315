"""Skip a test whose external tool is absent, naming it; under CI fail instead.

CI (``CI`` set) runs scripts/setup.sh, which installs every tool the tests use, so a
missing tool there is a set-up bug, never a reason to pass by skipping.
"""

from __future__ import annotations

import os

import pytest


def tool_absent(message: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI installs it, so CI must run this test)")
    pytest.skip(message)
