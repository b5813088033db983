"""Reconcile on the real Redis and the simulator, with an injected clock."""

from __future__ import annotations

from decimal import Decimal as D

import redis

from microservices.reconcile.reconciler import Reconciler
from microservices.reconcile.settings import ReconcileSettings
from shared import keys, ledger, results
from shared.schema import PlanResult, Side


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def reconciler(r: redis.Redis, access, clock: Clock) -> Reconciler:
    return Reconciler(r, access, ReconcileSettings(reconcile_grace_sec=5), clock=clock)


def passes_apart(heal: Reconciler, clock: Clock, seconds: float) -> None:
    """A pass, then another `seconds` later (past the grace: a mismatch the first recorded heals in the second)."""
    heal.run_pass()
    clock.now += seconds
    heal.run_pass()


def buy(access, symbol: str, qty: str, client_order_id: str) -> None:
    access.client.create_market_order(symbol, "BUY", D(qty), False, client_order_id)


def test_the_seed_mismatch_heals_after_the_grace_period_and_only_on_that_symbol(r, access, sim) -> None:
    clock = Clock()
    buy(access, "BTCUSDT", "0.062", "manual-btc")
    buy(access, "ETHUSDT", "0.05", "manual-eth")
    r.hset(keys.position_ledger("BTCUSDT"), mapping={"position_amt": "0.002", "entry_price": "88000", "stop_loss": "87000"})
    r.hset(keys.position_ledger("ETHUSDT"), mapping={"position_amt": "0.05", "entry_price": "2920"})
    heal = reconciler(r, access, clock)

    heal.run_pass()
    assert ledger.read(r, "BTCUSDT").amount == D("0.002")
    assert r.hget(keys.reconcile_mismatch("BTCUSDT"), "exchange_amt") == "0.062"
    clock.now += 5
    heal.run_pass()

    healed = ledger.read(r, "BTCUSDT")
    assert (healed.amount, healed.stop_loss, healed.source) == (D("0.062"), D("87000"), "reconcile")
    assert ledger.read(r, "ETHUSDT").source == ""
    (_, event), = r.xrange(keys.Stream.RECONCILE_EVENT)
    assert (event["symbol"], event["exchange_amt"], event["ledger_amt"], event["kind"]) == ("BTCUSDT", "0.062", "0.002", "qty_mismatch")
    # when it was first seen, not when it healed (found in review: it said the heal's time)
    assert event["first_seen_ms"] == str(int((clock.now - 5) * 1000))
    assert not r.exists(keys.reconcile_mismatch("BTCUSDT"))


def test_a_position_opened_outside_the_fleet_is_adopted(r, access, sim) -> None:
    clock = Clock()
    buy(access, "TRXUSDT", "700", "manual-trx")
    heal = reconciler(r, access, clock)

    passes_apart(heal, clock, 6)

    assert ledger.read(r, "TRXUSDT").amount == D("700")


def test_a_position_closed_outside_the_fleet_clears_the_ledger(r, access, sim) -> None:
    clock = Clock()
    r.hset(keys.position_ledger("LINKUSDT"), mapping={"position_amt": "20", "entry_price": "11.9"})
    heal = reconciler(r, access, clock)

    passes_apart(heal, clock, 6)

    assert ledger.read(r, "LINKUSDT") is None


def test_a_plan_in_flight_holds_the_heal(r, access, sim) -> None:
    clock = Clock()
    buy(access, "BTCUSDT", "0.002", "manual-btc-2")
    r.hset(keys.executor_sending("BTCUSDT"), "plan-x", str(10**15))  # being sent, for a long while yet
    heal = reconciler(r, access, clock)

    passes_apart(heal, clock, 60)

    assert ledger.read(r, "BTCUSDT") is None
    r.delete(keys.executor_sending("BTCUSDT"))
    heal.run_pass()
    assert ledger.read(r, "BTCUSDT").amount == D("0.002")


def test_a_fill_recorded_after_the_exchange_was_looked_at_is_not_healed_away(r, access, sim, monkeypatch) -> None:
    # Found in a review: the heal's compare-and-set covered the ledger as read, not whether the exchange view
    # predates it; a fill recorded between the look and the heal was overwritten by the older view.
    clock = Clock()
    buy(access, "BTCUSDT", "0.062", "manual-btc")
    r.hset(keys.position_ledger("BTCUSDT"), mapping={"position_amt": "0.002", "entry_price": "88000"})
    heal = reconciler(r, access, clock)
    heal.run_pass()  # the mismatch is recorded
    clock.now += 6
    look = heal._exchange_positions

    def a_fill_lands_after_the_look():
        seen = look()
        r.hset(keys.position_ledger("BTCUSDT"), mapping={"position_amt": "0.012",
                                                         "updated_at_ms": str(int(clock.now * 1000) + 1)})
        return seen

    monkeypatch.setattr(heal, "_exchange_positions", a_fill_lands_after_the_look)
    heal.run_pass()

    assert ledger.read(r, "BTCUSDT").amount == D("0.012")  # looked at again on a later pass, not overwritten
    assert r.xlen(keys.Stream.RECONCILE_EVENT) == 0


def test_a_close_recorded_after_the_exchange_was_looked_at_does_not_bring_the_position_back(r, access, sim,
                                                                                           monkeypatch) -> None:
    # Found in a review: a closing fill deletes the ledger hash, so the ledger's own time could not tell that
    # it postdates the view; the pass adopted the pre-close position and P3.3 then held the symbol.
    clock = Clock()
    buy(access, "BTCUSDT", "0.002", "qt-open-1")
    r.hset(keys.position_ledger("BTCUSDT"), mapping={"position_amt": "0.002", "entry_price": "88000",
                                                     "updated_at_ms": "1"})
    r.hset(keys.reconcile_mismatch("BTCUSDT"), "first_seen_ms", "1")  # an old record: the grace is long over
    heal = reconciler(r, access, clock)
    look = heal._exchange_positions

    def a_close_lands_after_the_look():
        seen = look()
        access.client.create_market_order("BTCUSDT", "SELL", D("0.002"), True, "qt-close-1")
        closed = PlanResult(plan_id="close-1", executed=True, symbol="BTCUSDT", side=Side.SELL, qty=D("0.002"),
                            reduce_only=True, source="test", order_id="2", client_order_id="qt-close-1",
                            filled_qty=D("0.002"), avg_price=D("88000"), order_status="FILLED")
        fill = ledger.Fill("BTCUSDT", Side.SELL, D("0.002"), D("88000"), "close-1")
        assert results.finish_plan(r, closed, results.Effects(fill=fill, cooldown_symbol="BTCUSDT"),
                                   now_ms=int(clock.now * 1000))
        return seen

    monkeypatch.setattr(heal, "_exchange_positions", a_close_lands_after_the_look)
    heal.run_pass()

    assert ledger.read(r, "BTCUSDT") is None and r.xlen(keys.Stream.RECONCILE_EVENT) == 0
    monkeypatch.undo()
    clock.now += 1
    heal.run_pass()  # a view taken after the close agrees
    assert ledger.read(r, "BTCUSDT") is None and not r.exists(keys.reconcile_mismatch("BTCUSDT"))


def test_a_mismatch_record_goes_once_the_symbol_is_flat_on_both_sides(r, access, sim) -> None:
    # Found in a review: only symbols with a position or a ledger were visited, so the record of a position
    # opened and closed outside the fleet stayed (quantum status showed the symbol held for good).
    clock = Clock()
    buy(access, "ETHUSDT", "0.05", "manual-eth")
    heal = reconciler(r, access, clock)
    heal.run_pass()
    assert r.exists(keys.reconcile_mismatch("ETHUSDT"))

    access.client.create_market_order("ETHUSDT", "SELL", D("0.05"), True, "manual-eth-close")
    heal.run_pass()

    assert not r.exists(keys.reconcile_mismatch("ETHUSDT")) and ledger.read(r, "ETHUSDT") is None


def test_a_last_execution_key_of_another_type_does_not_stop_the_heal(r, access, sim) -> None:
    clock = Clock()
    buy(access, "TRXUSDT", "700", "manual-trx-2")
    r.hset(keys.cooldown_last_exec("TRXUSDT"), "ts", "1")  # an operator's HSET where FINISH SETs
    heal = reconciler(r, access, clock)

    passes_apart(heal, clock, 6)

    assert ledger.read(r, "TRXUSDT").amount == D("700")


def test_a_time_far_in_the_future_does_not_hold_off_every_heal(r, access, sim) -> None:
    """From a review: the seed's hand fix with its time typed in µs (or a last execution written before the clock
    was stepped back) read as "a fill after the exchange was looked at" on every pass: the symbol never healed and
    P3.3 refused its closes. Such a time is not a fill of just now; the heal goes ahead."""
    clock = Clock()
    buy(access, "BTCUSDT", "0.062", "manual-btc-future")
    now_us = int(clock.now * 1_000_000)
    r.hset(keys.position_ledger("BTCUSDT"), mapping={"position_amt": "0.002", "entry_price": "88000",
                                                     "updated_at_ms": str(now_us)})
    r.set(keys.cooldown_last_exec("BTCUSDT"), str(int(clock.now * 1000) + 3_600_000))  # an hour ahead
    heal = reconciler(r, access, clock)

    passes_apart(heal, clock, 6)

    assert ledger.read(r, "BTCUSDT").amount == D("0.062")


def test_a_fill_just_recorded_still_defers_the_heal_and_says_so(r, access, sim) -> None:
    from structlog.testing import capture_logs

    clock = Clock()
    buy(access, "BTCUSDT", "0.062", "manual-btc-now")
    r.hset(keys.position_ledger("BTCUSDT"), mapping={"position_amt": "0.002", "entry_price": "88000"})
    heal = reconciler(r, access, clock)
    heal.run_pass()
    clock.now += 6
    r.set(keys.cooldown_last_exec("BTCUSDT"), str(int(clock.now * 1000) + 500))  # a fill a moment after the look

    with capture_logs() as logs:
        heal.run_pass()

    assert ledger.read(r, "BTCUSDT").amount == D("0.002")
    assert [line["reason"] for line in logs if line["event"] == "heal_deferred"] == ["executed_after_observation"]


def test_a_mismatch_first_seen_in_the_future_is_recorded_again_and_heals_after_the_grace(r, access, sim) -> None:
    """Found in review: a first_seen_ms ahead of the clock (a clock since stepped back, a hand-typed value) kept
    the verdict waiting until the clock caught up, and P3.3 refused the symbol's closes meanwhile."""
    clock = Clock()
    buy(access, "BTCUSDT", "0.062", "manual-btc-future")
    r.hset(keys.position_ledger("BTCUSDT"), mapping={"position_amt": "0.002", "entry_price": "88000"})
    r.hset(keys.reconcile_mismatch("BTCUSDT"), mapping={"first_seen_ms": str(int((clock.now + 3600) * 1000))})
    heal = reconciler(r, access, clock)

    passes_apart(heal, clock, 5)

    assert ledger.read(r, "BTCUSDT").amount == D("0.062")


def test_passes_keep_their_interval_when_the_wall_clock_steps_back(r, access, sim) -> None:
    """Found in review: the next pass was due on the wall clock; stepped back an hour, none ran for an hour."""
    wall, ticks, passes = Clock(), iter(range(0, 1000, 3)), []
    heal = Reconciler(r, access, ReconcileSettings(reconcile_interval_sec=2), clock=wall, monotonic=lambda: next(ticks))
    heal.run_pass = lambda: passes.append(wall.now)

    heal.tick()
    wall.now -= 3600
    heal.tick()
    heal.tick()

    assert len(passes) == 3


def test_a_refused_result_leaves_the_fleets_snapshot_good_for_the_next_pass(r, access, sim, monkeypatch) -> None:
    """Found in review: every result, refusals included, made reconcile fetch the positions itself (weight 5) until
    the fleet's snapshot postdated it: ~150 weight a minute while plans were denied every few seconds."""
    from shared import snapshot as exchange_snapshot
    from shared.runtime.consumer import Entry
    from shared.snapshot import ExchangeSnapshot

    clock = Clock()
    heal = reconciler(r, access, clock)
    exchange_snapshot.publish(r, ExchangeSnapshot(int(clock.now * 1000) - 500, {}, {}))
    fetched: list = []
    monkeypatch.setattr(access.client, "positions", lambda: fetched.append(1) or [])
    refused = PlanResult(plan_id="denied-1", executed=False, symbol="BTCUSDT", side=Side.BUY, qty=D("0.002"),
                         reduce_only=False, source="test", reason="reconcile_required_qty_mismatch")
    heal.on_result(refused, Entry(keys.Stream.APPLY_RESULT, f"{int(clock.now * 1000)}-0", {}, 1))

    heal.run_pass()

    assert fetched == []


def test_the_keyspace_is_scanned_once_a_minute_not_every_pass(r, access, sim, monkeypatch) -> None:
    """Found in review: each pass SCANned the whole keyspace twice, which holds every plan's markers for days: Redis
    work grew with the plans ever made. A result's symbol is looked at from the next pass; a ledger written by hand
    on another symbol at the next scan."""
    from shared.runtime.consumer import Entry

    clock, ticks = Clock(), [0.0]
    heal = Reconciler(r, access, ReconcileSettings(reconcile_grace_sec=5), clock=clock, monotonic=lambda: ticks[0])
    scans: list[str] = []
    real_scan = r.scan_iter
    monkeypatch.setattr(r, "scan_iter", lambda pattern, **kw: scans.append(pattern) or real_scan(pattern, **kw))
    r.hset(keys.position_ledger("LINKUSDT"), mapping={"position_amt": "20", "entry_price": "11.9"})

    heal.run_pass()
    r.hset(keys.position_ledger("LTCUSDT"), mapping={"position_amt": "1", "entry_price": "80"})  # by hand, unseen
    done = PlanResult(plan_id="filled-1", executed=True, symbol="SOLUSDT", side=Side.BUY, qty=D("1"),
                      reduce_only=False, source="test", order_id="1", filled_qty=D("1"), avg_price=D("100"))
    r.hset(keys.position_ledger("SOLUSDT"), mapping={"position_amt": "1", "entry_price": "100"})
    heal.on_result(done, Entry(keys.Stream.APPLY_RESULT, f"{int(clock.now * 1000) - 10_000}-0", {}, 1))
    for _ in range(5):
        clock.now += 2
        ticks[0] += 2
        heal.run_pass()
    # The result's symbol was looked at (its ledger, for a position the exchange does not hold, healed to flat); the
    # hand-written one waits for the scan.
    before_the_scan = (ledger.read(r, "SOLUSDT"), r.exists(keys.reconcile_mismatch("LTCUSDT")))
    ticks[0] += 60
    heal.run_pass()

    assert len(scans) == 4  # the first pass and the one a minute later, two patterns each
    assert before_the_scan == (None, 0)
    assert r.exists(keys.reconcile_mismatch("LTCUSDT"))
