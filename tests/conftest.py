"""Shared fixtures: one real redis-server per test session (or REDIS_URL), a clean database per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from shared.redis_conn import connect
from shared.redis_server import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL when set (its database is flushed by the tests), else an embedded server."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = connect(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def simulator():
    from microservices.exchange_sim.testing import running_simulator

    with running_simulator() as handle:
        yield handle


@pytest.fixture
def sim(simulator):
    """The session's simulator, reset to a fresh account with BTCUSDT held at 88,000."""
    from decimal import Decimal

    simulator.reset()
    simulator.set_price("BTCUSDT", Decimal("88000"))
    yield simulator


@pytest.fixture
def exchange_env(sim, monkeypatch) -> dict[str, str]:
    """Environment that points the fleet's exchange settings at the simulator."""
    env = {
        "EXCHANGE_TARGET": "simulator",
        "EXCHANGE_SIM_URL": sim.base_url,
        "EXCHANGE_SIM_API_KEY": sim.api_key,
        "EXCHANGE_SIM_API_SECRET": sim.api_secret,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def access(exchange_env, r):
    """What a daemon gets from open_exchange_or_exit: settings, client and filter cache on the simulator."""
    from shared.exchange.client import ExchangeClient
    from shared.exchange.filter_cache import FilterCache
    from shared.exchange.target import load_exchange_settings
    from shared.runtime.exchange import ExchangeAccess

    settings = load_exchange_settings()
    client = ExchangeClient(settings)
    filters = FilterCache(client.exchange_info, redis=r)
    filters.load()
    return ExchangeAccess(settings, client, filters)
