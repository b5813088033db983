"""An unreadable ledger is a mismatch reconcile heals (grace and in-flight rules as usual), and a
symbol whose reconcile fails is logged while every other symbol of the pass is still reconciled."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
import redis
from structlog.testing import capture_logs

from microservices.position_state_brain.brain import PositionStateBrain
from microservices.position_state_brain.gates import GatePolicy
from microservices.position_state_brain.keeper import SnapshotKeeper
from microservices.reconcile.reconciler import Reconciler
from microservices.reconcile.settings import ReconcileSettings
from shared import keys, ledger
from shared.schema import Plan

GARBLED = [
    ("comma decimal", {"position_amt": "0,062", "entry_price": "88000"}),
    ("not a number", {"position_amt": "NaN", "entry_price": "88000"}),
    ("bad timestamp", {"position_amt": "0.062", "entry_price": "88000", "updated_at_ms": "yesterday"}),
    ("SET instead of HSET", "0.062"),
]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def garble(r: redis.Redis, symbol: str, stored: dict | str) -> None:
    if isinstance(stored, dict):
        r.hset(keys.position_ledger(symbol), mapping=stored)
    else:
        r.set(keys.position_ledger(symbol), stored)


def reconciler(r: redis.Redis, access, clock: Clock, grace_sec: float = 5) -> Reconciler:
    return Reconciler(r, access, ReconcileSettings(reconcile_grace_sec=grace_sec), clock=clock)


def buy(access, symbol: str, qty: str) -> None:
    access.client.create_market_order(symbol, "BUY", D(qty), False, f"manual-{symbol.lower()}")


def events(r: redis.Redis) -> list[dict]:
    return [fields for _, fields in r.xrange(keys.Stream.RECONCILE_EVENT)]


@pytest.mark.parametrize(("case", "stored"), GARBLED, ids=[c[0] for c in GARBLED])
def test_an_unreadable_ledger_is_adopted_from_the_exchange_after_the_grace_period(r, access, sim, case, stored) -> None:
    clock = Clock()
    buy(access, "BTCUSDT", "0.062")
    garble(r, "BTCUSDT", stored)
    heal = reconciler(r, access, clock)

    heal.run_pass()
    recorded = r.hgetall(keys.reconcile_mismatch("BTCUSDT"))
    clock.now += 5
    heal.run_pass()

    assert (recorded["ledger_amt"], recorded["kind"]) == ("unreadable", "ledger_unreadable")
    healed = ledger.read(r, "BTCUSDT")
    assert (healed.amount, healed.source) == (D("0.062"), "reconcile")
    [event] = events(r)
    assert (event["kind"], event["ledger_amt"], event["exchange_amt"], event["action"]) == (
        "ledger_unreadable", "unreadable", "0.062", "adopted_exchange")
    assert event["diff"] == "unknown" and event["ledger_error"]


def test_an_unreadable_ledger_of_a_flat_symbol_is_cleared(r, access, sim) -> None:
    clock = Clock()
    garble(r, "LINKUSDT", {"position_amt": "20,5"})
    heal = reconciler(r, access, clock)

    heal.run_pass()
    clock.now += 5
    heal.run_pass()

    assert not r.exists(keys.position_ledger("LINKUSDT"))
    assert [e["kind"] for e in events(r)] == ["ledger_unreadable"]


def test_a_plan_in_flight_holds_the_heal_of_an_unreadable_ledger(r, access, sim) -> None:
    clock = Clock()
    buy(access, "BTCUSDT", "0.062")
    garble(r, "BTCUSDT", {"position_amt": "0,062"})
    r.hset(keys.executor_sending("BTCUSDT"), "plan-x", str(10**15))  # being sent, for a long while yet
    heal = reconciler(r, access, clock)

    heal.run_pass()
    clock.now += 60
    heal.run_pass()
    held = r.hget(keys.position_ledger("BTCUSDT"), "position_amt")
    r.delete(keys.executor_sending("BTCUSDT"))
    heal.run_pass()

    assert held == "0,062"
    assert ledger.read(r, "BTCUSDT").amount == D("0.062")


def test_the_seed_typo_heals_and_the_symbols_after_it_are_still_reconciled(r, access, sim) -> None:
    clock = Clock()
    buy(access, "BTCUSDT", "0.062")
    garble(r, "BTCUSDT", {"position_amt": "0,062", "entry_price": "88000"})
    r.hset(keys.position_ledger("LINKUSDT"), mapping={"position_amt": "20", "entry_price": "11.9"})

    reconciler(r, access, clock, grace_sec=0).run_pass()

    assert ledger.read(r, "BTCUSDT").amount == D("0.062")
    assert ledger.read(r, "LINKUSDT") is None


def test_a_symbol_that_fails_is_logged_and_the_others_are_reconciled(r, access, sim, monkeypatch) -> None:
    clock = Clock()
    buy(access, "BTCUSDT", "0.062")
    r.hset(keys.position_ledger("BTCUSDT"), mapping={"position_amt": "0.002", "entry_price": "88000"})
    r.hset(keys.position_ledger("LINKUSDT"), mapping={"position_amt": "20", "entry_price": "11.9"})
    heal = reconciler(r, access, clock, grace_sec=0)
    tolerance = heal._tolerance

    def fails_on_btc(symbol: str):
        if symbol == "BTCUSDT":
            raise redis.ResponseError("ERR something unforeseen")
        return tolerance(symbol)

    monkeypatch.setattr(heal, "_tolerance", fails_on_btc)
    with capture_logs() as logs:
        heal.run_pass()

    failed = [line for line in logs if line["event"] == "reconcile_symbol_failed"]
    assert [(line["symbol"], line["error"]) for line in failed] == [("BTCUSDT", "ResponseError")]
    assert ledger.read(r, "LINKUSDT") is None


def test_a_mismatch_record_of_another_type_is_replaced_and_the_symbol_heals(r, access, sim) -> None:
    # Found in a review: its HGET failed with WRONGTYPE on every pass, so the symbol never healed.
    clock = Clock()
    buy(access, "BTCUSDT", "0.062")
    r.hset(keys.position_ledger("BTCUSDT"), mapping={"position_amt": "0.002", "entry_price": "88000"})
    r.set(keys.reconcile_mismatch("BTCUSDT"), "not a hash")
    heal = reconciler(r, access, clock, grace_sec=5)

    heal.run_pass()
    assert r.hget(keys.reconcile_mismatch("BTCUSDT"), "exchange_amt") == "0.062"  # recorded afresh
    clock.now += 5
    heal.run_pass()

    assert ledger.read(r, "BTCUSDT").amount == D("0.062")


def test_p33_holds_the_symbol_only_until_reconcile_heals_the_unreadable_ledger(r, access, sim) -> None:
    clock = Clock()
    buy(access, "BTCUSDT", "0.062")
    garble(r, "BTCUSDT", {"position_amt": "0,062", "entry_price": "88000"})
    keeper = SnapshotKeeper(access.client, r, 1.0)
    assert keeper.refresh()
    brain = PositionStateBrain(r, keeper, access.filters, GatePolicy(frozenset({"BTCUSDT"}), 10.0, 1, 15.0), 60)

    def close(plan_id: str) -> Plan:
        return Plan.from_fields({"plan_id": plan_id, "decision": "EXECUTE", "symbol": "BTCUSDT", "side": "SELL",
                                 "qty": "0.062", "reduceOnly": "true"})

    before = brain.handle(close("c1"))
    reconciler(r, access, clock, grace_sec=0).run_pass()
    after = brain.handle(close("c2"))

    assert (before.allow, before.reason.value) == (False, "reconcile_required_qty_mismatch")
    assert (after.allow, after.safe_qty) == (True, D("0.062"))
