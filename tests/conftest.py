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
