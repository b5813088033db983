"""The daemons on one Redis trade on one exchange (shared.runtime.exchange.refuse_a_mixed_fleet): found in a review of
the units, where a partial restart after EXCHANGE_TARGET was changed (a crash, a watchdog kill) brought the executor
up on the new target while P3.3 and the governor still judged plans on the old one's positions and prices."""

from __future__ import annotations

import pytest
import structlog

from shared import keys
from shared.runtime.daemon import DaemonContext
from shared.runtime.exchange import other_exchanges, refuse_a_mixed_fleet
from shared.runtime.liveness import Liveness
from shared.settings import CommonSettings

SIM = "simulator http://127.0.0.1:8090"
MAINNET = "mainnet https://fapi.binance.com"


def context(r, name: str = "intent-executor") -> DaemonContext:
    return DaemonContext(name=name, settings=CommonSettings(), redis=r, log=structlog.get_logger())


def beating(r, daemon: str, consumer: str, exchange: str | None) -> Liveness:
    liveness = Liveness(r, daemon, consumer, {"exchange": exchange} if exchange else None)
    liveness.beat(force=True)
    return liveness


def test_a_daemon_configured_for_another_exchange_than_the_running_ones_exits_naming_them(r, capsys) -> None:
    beating(r, "position-state-brain", "position-state-brain@h#0", SIM)
    waits: list[float] = []

    with pytest.raises(SystemExit) as exited:
        refuse_a_mixed_fleet(context(r), MAINNET, patience_s=0.05, wait=waits.append)

    assert exited.value.code == 1 and waits  # it waited for them first
    line = capsys.readouterr().err
    assert f"position-state-brain@h#0 ({SIM})" in line and f"configured for {MAINNET}" in line


def test_the_same_exchange_a_heartbeat_without_one_and_its_own_old_heartbeat_are_no_conflict(r) -> None:
    ctx = context(r)
    beating(r, "position-state-brain", "position-state-brain@h#0", SIM)
    beating(r, "governor", "governor@h#0", None)  # no exchange access
    beating(r, "intent-executor", ctx.settings.consumer_name(ctx.name), MAINNET)  # its crashed predecessor's

    refuse_a_mixed_fleet(ctx, SIM, patience_s=0.05, wait=lambda _s: pytest.fail("no wait"))

    r.set(keys.heartbeat("garbled@h#0"), "x")  # not a hash: no daemon
    assert other_exchanges(r, SIM, ctx.settings.consumer_name(ctx.name)) == []


def test_a_fleet_that_stops_meanwhile_lets_the_new_target_start(r) -> None:
    old = beating(r, "position-state-brain", "position-state-brain@h#0", SIM)

    refuse_a_mixed_fleet(context(r), MAINNET, patience_s=30, wait=lambda _s: old.stopping())

    assert r.exists(keys.heartbeat("position-state-brain@h#0")) == 0
