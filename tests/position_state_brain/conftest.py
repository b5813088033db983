"""Fixtures for the P3.3 tests: a local exchange simulator and an ExchangeClient aimed at it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from p33_helpers import sim_env

from microservices.exchange_sim.testing import SimHandle, running_simulator
from shared.exchange.client import ExchangeClient
from shared.exchange.target import load_exchange_settings

QUIET = dict(unknown_after_execute=0.0, unavailable_no_execute=0.0, drop_connection=0.0, rate_limited=0.0)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    with running_simulator() as handle:
        yield handle


def exchange_for(handle: SimHandle, monkeypatch: pytest.MonkeyPatch) -> ExchangeClient:
    for name in list(os.environ):
        if name.upper().startswith(("EXCHANGE_", "BINANCE_")):
            monkeypatch.delenv(name)
    for name, value in sim_env(handle).items():
        monkeypatch.setenv(name, value)
    client = ExchangeClient(load_exchange_settings())
    client.sync_clock()
    return client


@pytest.fixture
def exchange(sim: SimHandle, monkeypatch: pytest.MonkeyPatch) -> ExchangeClient:
    sim.reset()
    sim.set_faults(**QUIET)
    return exchange_for(sim, monkeypatch)
