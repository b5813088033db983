"""Auto-disarm on a real Redis: repeated rate-limit denials put the fleet in reduce-only until re-enabled."""

from __future__ import annotations

import json

import pytest
import redis
from governor_support import NOW_MS, Clock, close_plan, plan, snapshot
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from microservices.governor.governor import Governor
from microservices.governor.settings import Limits
from shared import keys
from shared import snapshot as exchange_snapshot
from shared.schema import Reason

MARKS = {"BTCUSDT": "80000"}
ONE_PER_5MIN = Limits(max_exec_per_5min=1, symbol_cooldown_ms=0)


def publish(r: redis.Redis, clock: Clock) -> None:
    exchange_snapshot.publish(r, snapshot(marks=MARKS, fetched_at_ms=int(clock() * 1000)))


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def rate_limited(r: redis.Redis, clock: Clock, limits: Limits = ONE_PER_5MIN) -> tuple[Governor, list[Reason]]:
    """One allowed open on BTCUSDT, then three more that the 5-minute limit denies."""
    governor = Governor(r, limits, clock=clock)
    publish(r, clock)
    reasons = []
    for n in range(4):
        reasons.append(governor.handle(plan(f"open-{n}")).reason)
        clock.advance(1)
    return governor, reasons


def test_three_rate_limit_denials_disarm_execution(r: redis.Redis, clock: Clock) -> None:
    with capture_logs() as logs:
        governor, reasons = rate_limited(r, clock)

    record = json.loads(r.get(keys.GOVERNOR_DISARMED))
    disarm_lines = [line for line in logs if line["event"] == "AUTO_DISARM"]
    assert reasons == [Reason.OPEN_ALLOWED] + [Reason.RATE_LIMIT_5MIN] * 3
    assert r.get(keys.GOVERNOR_EXECUTION) == "DISABLED"
    assert record["trips"] == 3 and record["threshold"] == 3 and record["window_s"] == 600
    assert record["last_plan_id"] == "open-3" and record["last_reason"] == "rate_limit_5min"
    assert len(disarm_lines) == 1 and disarm_lines[0]["log_level"] == "error" and disarm_lines[0]["trips"] == 3
    assert gauge("quantum_governor_auto_disarmed") == 1 and gauge("quantum_governor_execution_enabled") == 0


def test_after_a_disarm_opens_are_refused_and_closes_still_pass(r: redis.Redis, clock: Clock) -> None:
    governor, _ = rate_limited(r, clock)

    opened = governor.handle(plan("open-next", symbol="BTCUSDT"))
    closed = governor.handle(close_plan("close-next"))

    assert (opened.reason, opened.context["auto_disarmed"]) == (Reason.EXECUTION_DISABLED, True)
    assert closed.reason == Reason.CLOSE_ALLOWED


def test_an_operator_re_enable_clears_the_disarm_and_its_trips(r: redis.Redis, clock: Clock) -> None:
    governor, _ = rate_limited(r, clock)
    r.set(keys.GOVERNOR_EXECUTION, "ENABLED")

    again = governor.handle(plan("open-again"))

    assert again.reason == Reason.RATE_LIMIT_5MIN
    assert r.get(keys.GOVERNOR_EXECUTION) == "ENABLED" and r.get(keys.GOVERNOR_DISARMED) is None
    assert r.zcard(keys.GOVERNOR_RATE_TRIPS) == 1
    assert gauge("quantum_governor_auto_disarmed") == 0


def test_trips_spread_wider_than_the_window_do_not_disarm(r: redis.Redis, clock: Clock) -> None:
    governor = Governor(r, Limits(max_exec_per_hour=1, symbol_cooldown_ms=0), clock=clock)
    publish(r, clock)
    reasons = [governor.handle(plan("first")).reason]
    for n in range(4):
        clock.advance(601)
        publish(r, clock)
        reasons.append(governor.handle(plan(f"later-{n}")).reason)

    assert reasons == [Reason.OPEN_ALLOWED] + [Reason.RATE_LIMIT_HOUR] * 4
    assert r.get(keys.GOVERNOR_EXECUTION) is None and r.get(keys.GOVERNOR_DISARMED) is None


def test_auto_disarm_off_never_disarms(r: redis.Redis, clock: Clock) -> None:
    _, reasons = rate_limited(r, clock, Limits(max_exec_per_5min=1, symbol_cooldown_ms=0, auto_disarm=False))

    assert reasons[1:] == [Reason.RATE_LIMIT_5MIN] * 3
    assert r.get(keys.GOVERNOR_EXECUTION) is None and r.zcard(keys.GOVERNOR_RATE_TRIPS) == 0


def test_a_replayed_denial_is_one_trip(r: redis.Redis, clock: Clock) -> None:
    governor = Governor(r, ONE_PER_5MIN, clock=clock)
    publish(r, clock)
    governor.handle(plan("first"))

    reasons = [governor.handle(plan("same-plan")).reason for _ in range(4)]

    assert reasons == [Reason.RATE_LIMIT_5MIN] * 4
    assert r.zcard(keys.GOVERNOR_RATE_TRIPS) == 1 and r.get(keys.GOVERNOR_EXECUTION) is None


def test_trips_are_counted_across_symbols_within_the_window(r: redis.Redis, clock: Clock) -> None:
    governor = Governor(r, ONE_PER_5MIN, clock=clock)
    exchange_snapshot.publish(r, snapshot(marks={"BTCUSDT": "80000", "ETHUSDT": "1000"}, fetched_at_ms=NOW_MS))
    for symbol in ("BTCUSDT", "ETHUSDT"):
        governor.handle(plan(f"{symbol}-first", symbol=symbol, qty="0.001"))

    for plan_id, symbol in (("b1", "BTCUSDT"), ("e1", "ETHUSDT"), ("b2", "BTCUSDT")):
        governor.handle(plan(plan_id, symbol=symbol, qty="0.001"))

    assert r.get(keys.GOVERNOR_EXECUTION) == "DISABLED"
