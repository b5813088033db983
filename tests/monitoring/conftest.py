"""Fixtures for the monitoring tests: promtool, and the e2e harness's fleet (started with metrics=True)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import make_fleet  # noqa: F401
from tests.monitoring.monitoring import PROMTOOL_MISSING, promtool_path


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool's path; the test is skipped, with the reason in the summary, when it is not installed."""
    path = promtool_path()
    if path is None:
        pytest.skip(PROMTOOL_MISSING)
    return path
