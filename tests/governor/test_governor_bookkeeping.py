"""What an open decision plans to write (pure), and the governor's settings."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from governor_support import NOW_MS, plan

from microservices.governor.gates import Denial, Verdict
from microservices.governor.settings import GovernorSettings, Limits
from microservices.governor.state import GovernorState, InFlight
from shared.trading_state import Switches
from microservices.governor.writes import plan_writes
from shared.schema import P32Permit, Reason
from shared.settings import load_settings

ALLOWED = Verdict(True, Reason.OPEN_ALLOWED, {}, Decimal("80"), Decimal("80000"))
RATE_DENIED = Verdict.deny(Denial(Reason.RATE_LIMIT_5MIN))


def permit_for(verdict: Verdict) -> P32Permit:
    return P32Permit(plan_id="p1", allow=verdict.allow, symbol="BTCUSDT", reason=verdict.reason, created_at=NOW_MS / 1000)


def writes_for(verdict: Verdict, state: GovernorState = GovernorState(), limits: Limits = Limits()):
    return plan_writes(plan("p1"), verdict, permit_for(verdict), state, limits, NOW_MS)


def test_an_allowed_open_is_recorded_in_flight_with_its_notional() -> None:
    writes = writes_for(ALLOWED)

    assert writes.inflight == InFlight("p1", "BTCUSDT", Decimal("80"), NOW_MS)
    assert not writes.rate_trip and writes.disarm is None


@pytest.mark.parametrize("trips_before, disarms", [(0, False), (1, False), (2, True), (5, True)])
def test_a_rate_limit_denial_is_a_trip_and_the_third_in_the_window_disarms(trips_before: int, disarms: bool) -> None:
    writes = writes_for(RATE_DENIED, GovernorState(rate_trips=trips_before))

    assert writes.rate_trip and writes.inflight is None
    assert (writes.disarm is not None) is disarms
    if disarms:
        record = json.loads(writes.disarm)
        assert record["trips"] == trips_before + 1 and record["threshold"] == 3 and record["last_reason"] == "rate_limit_5min"


@pytest.mark.parametrize("verdict, limits", [
    (RATE_DENIED, Limits(auto_disarm=False)),
    (Verdict.deny(Denial(Reason.TOTAL_NOTIONAL_EXCEEDED)), Limits()),
    (Verdict.deny(Denial(Reason.SYMBOL_COOLDOWN)), Limits()),
])
def test_only_rate_limit_denials_trip_and_only_when_auto_disarm_is_on(verdict: Verdict, limits: Limits) -> None:
    writes = writes_for(verdict, GovernorState(rate_trips=10), limits)

    assert not writes.rate_trip and writes.disarm is None


@pytest.mark.parametrize("disarmed, enabled, clears", [(True, True, True), (True, False, False), (False, True, False)])
def test_an_operator_re_enable_clears_the_disarm_record(disarmed: bool, enabled: bool, clears: bool) -> None:
    state = GovernorState(switches=Switches(execution_enabled=enabled), auto_disarmed=disarmed)

    assert writes_for(RATE_DENIED, state).clear_disarm is clears


def test_expired_settled_and_corrupt_in_flight_records_are_dropped() -> None:
    state = GovernorState(
        inflight=(InFlight("old", "ETHUSDT", Decimal(1), NOW_MS - 120_000), InFlight("new", "ETHUSDT", Decimal(1), NOW_MS)),
        unreadable_inflight=("garbled",),
    )

    assert writes_for(ALLOWED, state).drop_inflight == ("old", "garbled")


def test_settings_defaults_match_the_fund_caps_report(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GOV_MAX_OPEN_POSITIONS", "GOV_MAX_NOTIONAL_PER_TRADE_USDT", "METRICS_PORT"):
        monkeypatch.delenv(name, raising=False)

    limits = Limits.from_settings(GovernorSettings())

    assert limits == Limits()
    assert GovernorSettings().metrics_port == 8044
    assert limits.inflight_expiry_ms == 120_000


def test_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"GOV_MAX_OPEN_POSITIONS": "4", "GOV_MAX_NOTIONAL_PER_TRADE_USDT": "50.5", "GOV_MAX_TOTAL_NOTIONAL_USDT": "300",
           "GOV_SYMBOL_COOLDOWN_SECONDS": "15", "GOV_AUTO_DISARM": "false", "GOV_PERMIT_TTL_SEC": "30"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    limits = Limits.from_settings(load_settings(GovernorSettings))

    assert (limits.max_open_positions, limits.max_notional_per_trade, limits.max_total_notional) == (4, Decimal("50.5"), 300)
    assert (limits.symbol_cooldown_ms, limits.auto_disarm, limits.inflight_expiry_ms) == (15_000, False, 90_000)


@pytest.mark.parametrize("name, value", [
    ("GOV_MAX_OPEN_POSITIONS", "-1"), ("GOV_MAX_NOTIONAL_PER_TRADE_USDT", "0"), ("GOV_MAX_TOTAL_NOTIONAL_USDT", "lots"),
    ("GOV_AUTO_DISARM", "maybe"), ("GOV_PERMIT_TTL_SEC", "0"), ("GOV_MAX_NOTIONAL_PER_TRADE_USDT", "NaN"),
])
def test_a_bad_setting_exits_2_naming_the_variable(monkeypatch: pytest.MonkeyPatch, capsys, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(SystemExit) as exited:
        load_settings(GovernorSettings)

    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2
    assert len(err.splitlines()) == 1 and name in err
