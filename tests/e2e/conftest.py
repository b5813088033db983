from __future__ import annotations

import pytest

from tests.e2e.fleet import Fleet


@pytest.fixture
def make_fleet(redis_url, r, exchange_env, tmp_path):
    """Start daemons with fleet.start(...); every one must stop cleanly (exit 0) at the end."""
    started: list[Fleet] = []

    def make(**overrides: str) -> Fleet:
        started.append(Fleet(redis_url, exchange_env, tmp_path, **overrides))
        return started[-1]

    yield make
    for one in started:
        codes = one.stop()
        assert all(code == 0 for code in codes.values()), codes
