"""The pure gates: each denial with its own code, their order, closes bypassing caps, trading state."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from governor_support import NOW_MS, close_plan, plan, positions_worth, snapshot

from microservices.governor import gates
from microservices.governor.gates import evaluate
from microservices.governor.settings import Limits
from microservices.governor.state import GovernorState, InFlight
from shared.trading_state import Switches, parse_execution, parse_kill, read_switches
from shared.schema import Reason
from shared.snapshot import SURELY_SHOWN_MS

LIMITS = Limits()
MARKS = {"BTCUSDT": "80000"}  # 0.001 BTC is 80 USDT


def fresh(positions: dict[str, str] | None = None, marks: dict[str, str] | None = None, age_ms: int = 0):
    return snapshot(positions, {**MARKS, **(marks or {})}, fetched_at_ms=NOW_MS - age_ms)


def healthy(**overrides) -> GovernorState:
    """A state every open passes."""
    return replace(GovernorState(snapshot=fresh()), **overrides)


def inflight(plan_id: str, symbol: str, notional: str = "10", age_ms: int = 1000) -> InFlight:
    return InFlight(plan_id, symbol, Decimal(notional), NOW_MS - age_ms)


def reason_of(state: GovernorState, the_plan=None, limits: Limits = LIMITS) -> Reason:
    return evaluate(the_plan or plan(), state, limits, NOW_MS).reason


ten_positions, ten_marks = positions_worth(10)
DENIALS = [
    ("cooldown", healthy(last_exec_ms=NOW_MS - 12_300), Reason.SYMBOL_COOLDOWN),
    ("no snapshot", healthy(snapshot=None), Reason.STALE_SNAPSHOT),
    ("old snapshot", healthy(snapshot=fresh(age_ms=10_001)), Reason.STALE_SNAPSHOT),
    ("ten positions", healthy(snapshot=fresh(ten_positions, ten_marks)), Reason.MAX_OPEN_POSITIONS),
    ("nine plus one in flight", healthy(snapshot=fresh(*positions_worth(9)), inflight=(inflight("a", "ETHUSDT"),)),
     Reason.MAX_OPEN_POSITIONS),
    ("no mark", healthy(snapshot=snapshot({}, {})), Reason.NO_MARK_PRICE),
    ("per trade", healthy(snapshot=fresh(marks={"BTCUSDT": "200001"})), Reason.MAX_NOTIONAL_PER_TRADE),
    ("total", healthy(snapshot=fresh(*positions_worth(2, "961"))), Reason.TOTAL_NOTIONAL_EXCEEDED),
    ("total with in flight", healthy(snapshot=fresh(*positions_worth(1, "1900")), inflight=(inflight("a", "ETHUSDT", "30"),)),
     Reason.TOTAL_NOTIONAL_EXCEEDED),
    ("hour", healthy(opens_last_hour=3), Reason.RATE_LIMIT_HOUR),
    ("five minutes", healthy(opens_last_hour=2, opens_last_5min=2), Reason.RATE_LIMIT_5MIN),
    ("kill", healthy(switches=Switches(kill=True)), Reason.KILL_SWITCH),
    ("execution disabled", healthy(switches=Switches(execution_enabled=False)), Reason.EXECUTION_DISABLED),
]


@pytest.mark.parametrize("state, expected", [case[1:] for case in DENIALS], ids=[case[0] for case in DENIALS])
def test_each_gate_denies_an_open_with_its_own_reason(state: GovernorState, expected: Reason) -> None:
    verdict = evaluate(plan(), state, LIMITS, NOW_MS)

    assert (verdict.allow, verdict.reason) == (False, expected)


def test_a_healthy_state_allows_the_open_with_its_notional_mark_and_cap() -> None:
    verdict = evaluate(plan(), healthy(), LIMITS, NOW_MS)

    assert (verdict.allow, verdict.reason) == (True, Reason.OPEN_ALLOWED)
    assert verdict.notional == Decimal("80") and verdict.mark == Decimal("80000")
    assert verdict.context["computed_notional"] == "80" and verdict.context["mark"] == "80000"
    assert verdict.context["max_notional_per_trade"] == "200"


def test_gates_run_in_order_and_the_first_denial_decides() -> None:
    # Everything wrong at once; fixing one thing at a time reveals the next gate.
    positions, marks = positions_worth(10, "300")
    nine, nine_marks = positions_worth(9, "300")
    state = GovernorState(snapshot=fresh(positions, {**marks, "BTCUSDT": "300000"}, age_ms=60_000),
                          last_exec_ms=NOW_MS - 1000, opens_last_hour=3, opens_last_5min=2)
    fixes = [
        (Reason.SYMBOL_COOLDOWN, lambda s: replace(s, last_exec_ms=None)),
        (Reason.STALE_SNAPSHOT, lambda s: replace(s, snapshot=replace(s.snapshot, fetched_at_ms=NOW_MS))),
        (Reason.MAX_OPEN_POSITIONS, lambda s: replace(s, snapshot=fresh(nine, {**nine_marks, "BTCUSDT": "300000"}))),
        (Reason.MAX_NOTIONAL_PER_TRADE, lambda s: replace(s, snapshot=fresh(nine, nine_marks))),
        (Reason.TOTAL_NOTIONAL_EXCEEDED, lambda s: replace(s, snapshot=fresh(*positions_worth(9, "10")))),
        (Reason.RATE_LIMIT_HOUR, lambda s: replace(s, opens_last_hour=2)),
        (Reason.RATE_LIMIT_5MIN, lambda s: replace(s, opens_last_5min=1)),
        (Reason.OPEN_ALLOWED, None),
    ]
    seen = []
    for expected, fix in fixes:
        seen.append(reason_of(state))
        state = fix(state) if fix else state

    assert seen == [expected for expected, _ in fixes]
    assert [gate.__name__ for gate in gates.OPEN_GATES] == [
        "symbol_cooldown", "snapshot_fresh", "max_open_positions", "max_notional_per_trade", "total_notional",
        "rate_limit_hour", "rate_limit_5min",
    ]


@pytest.mark.parametrize("state", [case[1] for case in DENIALS if case[2] not in (Reason.KILL_SWITCH, Reason.EXECUTION_DISABLED)],
                         ids=[case[0] for case in DENIALS if case[2] not in (Reason.KILL_SWITCH, Reason.EXECUTION_DISABLED)])
@pytest.mark.parametrize("the_close", [close_plan(), close_plan(action="PARTIAL_75"), close_plan(action="FULL_CLOSE_PROPOSED")],
                         ids=["reduceOnly", "PARTIAL_75", "FULL_CLOSE_PROPOSED"])
def test_closes_bypass_caps_cooldown_and_rate_limits(state: GovernorState, the_close) -> None:
    verdict = evaluate(the_close, state, LIMITS, NOW_MS)

    assert (verdict.allow, verdict.reason) == (True, Reason.CLOSE_ALLOWED)


@pytest.mark.parametrize("switches, open_reason, close_reason", [
    (Switches(), Reason.OPEN_ALLOWED, Reason.CLOSE_ALLOWED),
    (Switches(execution_enabled=False), Reason.EXECUTION_DISABLED, Reason.CLOSE_ALLOWED),
    (Switches(kill=True), Reason.KILL_SWITCH, Reason.KILL_SWITCH),
    (Switches(kill=True, execution_enabled=False), Reason.KILL_SWITCH, Reason.KILL_SWITCH),
], ids=["active", "reduce-only", "halted", "halted and disabled"])
def test_the_kill_switch_stops_closes_too_and_disabled_execution_stops_opens_only(switches, open_reason, close_reason) -> None:
    state = healthy(switches=switches)

    assert (reason_of(state), reason_of(state, close_plan())) == (open_reason, close_reason)


@pytest.mark.parametrize("raw, on, readable", [
    (None, False, True), ("0", False, True), ("false", False, True), ("no", False, True), ("FALSE", False, True),
    ("1", True, True), ("true", True, True), ("yes", True, True), (" 1 ", True, True),
    ("2", True, False), ("", True, False), ("maybe", True, False), ("off", True, False),
])
def test_the_kill_value_is_parsed_strictly_and_garbage_means_on(raw, on, readable) -> None:
    assert parse_kill(raw) == (on, readable)


@pytest.mark.parametrize("raw, enabled, readable", [
    (None, True, True), ("ENABLED", True, True), ("enabled", True, True),
    ("DISABLED", False, True), ("disabled", False, True),
    ("PAUSED", False, False), ("", False, False), ("1", False, False),
])
def test_the_execution_value_treats_anything_unknown_as_disabled(raw, enabled, readable) -> None:
    assert parse_execution(raw) == (enabled, readable)


def test_garbage_switch_values_fail_safe_and_are_reported() -> None:
    switches = read_switches("banana", "SOMETIMES")
    state = healthy(switches=switches)

    assert switches.invalid == {"kill": "banana", "execution": "SOMETIMES"}
    assert (reason_of(state), reason_of(state, close_plan())) == (Reason.KILL_SWITCH, Reason.KILL_SWITCH)


def test_cooldown_reports_the_remaining_seconds_and_lifts_after_it() -> None:
    denial = gates.symbol_cooldown(plan(), healthy(last_exec_ms=NOW_MS - 47_300), LIMITS, NOW_MS)
    passed = gates.symbol_cooldown(plan(), healthy(last_exec_ms=NOW_MS - 60_000), LIMITS, NOW_MS)

    assert denial.context["remaining_s"] == 12.7
    assert passed is None


def test_an_open_on_a_symbol_already_held_adds_no_position() -> None:
    positions, marks = positions_worth(10)
    state = healthy(snapshot=fresh(positions, marks))

    assert reason_of(state, plan(symbol="POS3USDT", qty="1")) == Reason.OPEN_ALLOWED
    assert reason_of(state, plan(symbol="BTCUSDT")) == Reason.MAX_OPEN_POSITIONS


@pytest.mark.parametrize("entries, expected", [
    ((inflight("a", "ETHUSDT"),), Reason.MAX_OPEN_POSITIONS),
    ((inflight("a", "POS0USDT"),), Reason.OPEN_ALLOWED),  # in flight on a held symbol adds no position
    ((inflight("a", "BTCUSDT"),), Reason.OPEN_ALLOWED),  # same symbol as this open: one position between them
    ((inflight("a", "ETHUSDT", age_ms=120_000),), Reason.OPEN_ALLOWED),  # expired: permit TTL + 60 s
    ((inflight("test_open_005", "ETHUSDT"),), Reason.OPEN_ALLOWED),  # the plan itself, replayed
], ids=["new symbol", "held symbol", "same symbol", "expired", "own replay"])
def test_in_flight_opens_count_as_positions_once_per_new_symbol(entries, expected) -> None:
    state = healthy(snapshot=fresh(*positions_worth(9)), inflight=entries)

    assert reason_of(state, limits=Limits(symbol_cooldown_ms=0)) == expected  # counting alone, no cooldown


@pytest.mark.parametrize("entries, cooldown_ms, expected", [
    ((inflight("a", "BTCUSDT"),), 60_000, Reason.SYMBOL_COOLDOWN),  # it starts the cooldown when it fills
    ((inflight("a", "BTCUSDT"),), 0, Reason.OPEN_ALLOWED),
    ((inflight("a", "ETHUSDT"),), 60_000, Reason.OPEN_ALLOWED),
    ((inflight("test_open_005", "BTCUSDT"),), 60_000, Reason.OPEN_ALLOWED),  # the plan itself, replayed
    ((inflight("a", "BTCUSDT", age_ms=120_000),), 60_000, Reason.OPEN_ALLOWED),  # expired
], ids=["same symbol", "no cooldown", "other symbol", "own replay", "expired"])
def test_an_open_in_flight_on_the_symbol_holds_the_next_open_as_a_cooldown(entries, cooldown_ms, expected) -> None:
    state = healthy(inflight=entries)

    assert reason_of(state, limits=Limits(symbol_cooldown_ms=cooldown_ms)) == expected


def test_an_in_flight_open_stops_counting_once_a_snapshot_newer_than_its_result_shows_it() -> None:
    # 900 held + 1000 filled in flight + 80 now fits 2000 only when the fill is counted once.
    filled = {"POS0USDT": "900", "ETHUSDT": "1000"}
    marks = {"POS0USDT": "1", "ETHUSDT": "1"}
    entry = inflight("a", "ETHUSDT", notional="1000")
    no_result = healthy(snapshot=fresh(filled, marks, age_ms=1000), inflight=(entry,), result_ms={})
    snapshot_before_result = replace(no_result, result_ms={"a": NOW_MS - 500})
    snapshot_too_soon_after = replace(no_result, snapshot=fresh(filled, marks), result_ms={"a": NOW_MS - SURELY_SHOWN_MS})
    snapshot_after_result = replace(snapshot_too_soon_after, result_ms={"a": NOW_MS - SURELY_SHOWN_MS - 1})

    assert reason_of(no_result) == Reason.TOTAL_NOTIONAL_EXCEEDED
    assert reason_of(snapshot_before_result) == Reason.TOTAL_NOTIONAL_EXCEEDED
    # Found in review: a snapshot started just after the result may not show the fill yet (the exchange's position
    # view lags): the open counted nowhere, and another took its room under the cap.
    assert reason_of(snapshot_too_soon_after) == Reason.TOTAL_NOTIONAL_EXCEEDED
    assert reason_of(snapshot_after_result) == Reason.OPEN_ALLOWED
    assert snapshot_after_result.stale_inflight(NOW_MS, LIMITS.inflight_expiry_ms) == ["a"]


@pytest.mark.parametrize("mark, allowed", [("200000", True), ("200001", False)])
def test_the_per_trade_cap_allows_exactly_the_cap(mark: str, allowed: bool) -> None:
    assert evaluate(plan(), healthy(snapshot=fresh(marks={"BTCUSDT": mark})), LIMITS, NOW_MS).allow is allowed


@pytest.mark.parametrize("held, allowed", [("1920", True), ("1920.01", False)])
def test_the_total_cap_includes_this_trade(held: str, allowed: bool) -> None:
    assert evaluate(plan(), healthy(snapshot=fresh(*positions_worth(1, held))), LIMITS, NOW_MS).allow is allowed


@pytest.mark.parametrize("limits, state, expected", [
    (Limits(max_exec_per_hour=0), healthy(), Reason.RATE_LIMIT_HOUR),
    (Limits(max_exec_per_5min=5, max_exec_per_hour=5), healthy(opens_last_hour=4, opens_last_5min=4), Reason.OPEN_ALLOWED),
    (Limits(max_open_positions=0), healthy(), Reason.MAX_OPEN_POSITIONS),
    (Limits(symbol_cooldown_ms=0), healthy(last_exec_ms=NOW_MS), Reason.OPEN_ALLOWED),
    (Limits(snapshot_max_age_s=1), healthy(snapshot=fresh(age_ms=1500)), Reason.STALE_SNAPSHOT),
])
def test_limits_come_from_settings_not_constants(limits: Limits, state: GovernorState, expected: Reason) -> None:
    assert reason_of(state, limits=limits) == expected
