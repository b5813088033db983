"""The snapshot keeper against the simulator and a real Redis: two requests per refresh, published,
kept on failure, and stale once the threshold passes."""

from __future__ import annotations

import pytest
from conftest import exchange_for
from p33_helpers import D, FakeClock, count_requests, plan, policy
from prometheus_client import REGISTRY

from microservices.exchange_sim.testing import running_simulator
from microservices.position_state_brain.brain import PositionStateBrain
from microservices.position_state_brain.keeper import SnapshotKeeper
from shared import permits
from shared import snapshot as exchange_snapshot
from shared.exchange.filter_cache import FilterCache
from shared.permits import PermitKind
from shared.schema import Reason

OPENS = [("BTCUSDT", "BUY", "0.002"), ("ETHUSDT", "SELL", "0.01"), ("TRXUSDT", "BUY", "100"),
         ("LINKUSDT", "SELL", "1"), ("LTCUSDT", "BUY", "0.1")]


def open_positions(exchange, count: int) -> None:
    for i, (symbol, side, qty) in enumerate(OPENS[:count]):
        exchange.create_market_order(symbol, side, D(qty), False, f"p33-open-{count}-{i}")


def failures() -> float:
    return REGISTRY.get_sample_value("quantum_p33_snapshot_refresh_failures_total") or 0.0


@pytest.mark.parametrize("open_count", [0, 1, 5])
def test_one_refresh_is_two_requests_whatever_the_number_of_symbols(r, exchange, open_count):
    open_positions(exchange, open_count)
    keeper = SnapshotKeeper(exchange, r, poll_s=1.0)
    seen = count_requests(exchange)

    assert keeper.refresh() is True

    assert sorted(seen) == ["GET /fapi/v1/premiumIndex", "GET /fapi/v3/positionRisk"]
    assert len(keeper.snapshot.positions) == open_count


def test_the_snapshot_holds_signed_amounts_and_is_published(r, exchange):
    open_positions(exchange, 2)
    keeper = SnapshotKeeper(exchange, r, poll_s=1.0)

    keeper.refresh()

    published = exchange_snapshot.read(r)
    assert published == keeper.snapshot
    assert published.amount("BTCUSDT") == D("0.002")
    assert published.amount("ETHUSDT") == D("-0.01")
    assert published.mark("BTCUSDT") > 0 and published.mark("AVAXUSDT") > 0


def test_refreshes_follow_the_poll_interval_on_ticks(r, exchange):
    clock = FakeClock(1_769_442_764.0)
    keeper = SnapshotKeeper(exchange, r, poll_s=1.0, clock=clock, monotonic=clock)
    seen = count_requests(exchange)

    ticks = [keeper.maybe_refresh() for _ in range(3)]
    clock.advance(0.999)
    ticks.append(keeper.maybe_refresh())
    clock.advance(0.001)
    ticks.append(keeper.maybe_refresh())

    assert ticks == [True, False, False, False, True]
    assert len(seen) == 4


def test_a_failed_refresh_keeps_the_last_snapshot_until_it_goes_stale(r, monkeypatch):
    clock = FakeClock(1_769_442_764.0)
    with running_simulator() as doomed:
        exchange = exchange_for(doomed, monkeypatch)
        rules = FilterCache(exchange.exchange_info)
        rules.load()
        keeper = SnapshotKeeper(exchange, r, poll_s=1.0, clock=clock, monotonic=clock)
        assert keeper.refresh() is True
    good = keeper.snapshot
    brain = PositionStateBrain(r, keeper, rules, policy(stale_threshold_s=10.0, cooldown_s=0), 60, clock=clock)
    before = failures()

    clock.advance(1.0)
    refreshed = keeper.maybe_refresh()
    clock.advance(9.0)
    fresh_enough = brain.handle(plan(plan_id="within"))
    clock.advance(0.001)
    stale = brain.handle(plan(plan_id="beyond"))

    assert refreshed is False and keeper.snapshot is good
    assert failures() == before + 1
    assert exchange_snapshot.read(r) == good
    assert (fresh_enough.allow, fresh_enough.reason) == (True, Reason.SANITY_CHECKS_PASSED)
    assert (stale.allow, stale.reason) == (False, Reason.STALE_SNAPSHOT)
    assert permits.peek(r, PermitKind.P33, "beyond").reason is Reason.STALE_SNAPSHOT


def test_the_age_gauge_reports_infinity_before_the_first_snapshot(r, exchange):
    clock = FakeClock(1_769_442_764.0)
    keeper = SnapshotKeeper(exchange, r, poll_s=1.0, clock=clock, monotonic=clock)

    before = keeper.age_s()
    keeper.refresh()
    clock.advance(2.5)
    keeper.maybe_refresh()  # 2.5 s later a tick refreshes, and the gauge reads the new age
    after = REGISTRY.get_sample_value("quantum_p33_snapshot_age_seconds")

    assert before == float("inf")
    assert after == 0.0


class Budget:
    """An exchange client stand-in that reports whether its weight budget allows a request."""

    def __init__(self, exchange, affordable: bool):
        self.exchange = exchange
        self.affordable = affordable

    def can_spend(self, weight: int) -> bool:
        return self.affordable

    def positions(self):
        return self.exchange.positions()

    def mark_prices(self):
        return self.exchange.mark_prices()


def test_a_scheduled_refresh_yields_to_orders_when_the_weight_budget_is_low(r, exchange) -> None:
    clock = FakeClock(1_800_000_000.0)
    keeper = SnapshotKeeper(Budget(exchange, affordable=True), r, poll_s=1.0, clock=clock, must_refresh_after_s=5.0,
                            monotonic=clock)
    assert keeper.maybe_refresh()
    keeper.exchange.affordable = False

    clock.advance(1.5)
    skipped = keeper.maybe_refresh()
    clock.advance(4.0)
    forced = keeper.maybe_refresh()

    assert (skipped, forced) == (False, True)


def test_after_the_wall_clock_steps_back_refreshes_stay_on_schedule_and_an_older_view_is_stale(r, exchange):
    """Found in a review: refreshes were scheduled on the wall clock, so after a step back of an hour none was due
    for an hour, and the snapshot's negative age passed every freshness check: a close was allowed against an
    hour-old position."""
    wall, ticking = FakeClock(1_800_000_000.0), FakeClock(50.0)
    keeper = SnapshotKeeper(exchange, r, poll_s=1.0, clock=wall, monotonic=ticking)
    assert keeper.refresh()

    wall.advance(-3600)
    stale_age = keeper.age_s()
    ticking.advance(1.0)
    refreshed = keeper.maybe_refresh()

    assert stale_age == float("inf")  # fetched "in the future": its age is not known
    assert refreshed and keeper.age_s() == 0.0
