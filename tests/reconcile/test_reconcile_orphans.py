"""A plan whose apply.plan entry is deleted while its order's outcome is unknown (an operator's XDEL or XTRIM, a
producer's MAXLEN): nobody will ever end it, so its sending mark must not keep reconcile off the symbol for the
marker's 7 days while P3.3 refuses every close on the mismatch (found in a review, with this repro)."""

from __future__ import annotations

import json
from decimal import Decimal as D

import pytest

from microservices.reconcile.reconciler import Reconciler
from microservices.reconcile.settings import ReconcileSettings
from shared import keys, ledger, sending
from tests.intent_executor.test_executor_sim import results_of
from tests.intent_executor.test_unclear_races import run, send_lost_then_landed
from tests.reconcile.test_reconciler_sim import Clock


def age_marker(r, plan_id: str, by_ms: int) -> None:
    """As if the order marker had been written `by_ms` earlier (the exchange's window to accept it is over)."""
    key = keys.plan_order_marker(plan_id)
    head, _, rest = r.get(key).partition("\n")
    words = head.split(" ")
    words[2] = str(int(words[2]) - by_ms)
    r.set(key, " ".join(words) + "\n" + rest, keepttl=True)


def passes(r, access, count: int = 3) -> None:
    clock = Clock()
    reconciler = Reconciler(r, access, ReconcileSettings(reconcile_grace_sec=5), clock=clock)
    for _ in range(count):
        reconciler.run_pass()
        clock.now += 6


def orphan_letters(r) -> list[dict]:
    return [json.loads(f["detail"]) for _, f in r.xrange(keys.Stream.DEAD_LETTER) if f["reason"] == "plan_entry_deleted"]


@pytest.fixture
def stranded(r, access, sim):
    """A BUY filled on the exchange whose outcome the executor never learned, its entry pending."""
    send_lost_then_landed(r, access, "strand-1")
    assert results_of(r, "strand-1") == [] and sending.busy(r, "BTCUSDT")
    [(entry_id, _fields)] = r.xrange(keys.Stream.APPLY_PLAN)
    return entry_id


def test_a_deleted_plan_entry_lets_go_of_its_mark_and_the_symbol_heals_from_the_exchange(r, access, stranded) -> None:
    r.xdel(keys.Stream.APPLY_PLAN, stranded)
    run(r, access)  # the executor meets the deleted entry: acked, with a dead letter of its own
    age_marker(r, "strand-1", by_ms=90_000)

    passes(r, access)

    assert ledger.read(r, "BTCUSDT").amount == D("0.002")  # adopted from the exchange
    assert not sending.busy(r, "BTCUSDT")
    [letter] = orphan_letters(r)
    assert (letter["plan_id"], letter["symbol"]) == ("strand-1", "BTCUSDT") and letter["client_order_id"]
    assert r.exists(keys.plan_order_marker("strand-1"))  # kept: a resend of the plan id is looked up, never sent


def test_a_plan_let_go_is_ended_so_a_resend_of_its_plan_id_counts_no_fill_twice(r, access, sim, stranded) -> None:
    """From a review: the plan was let go but not ended, so the same plan id sent again was resolved as an earlier
    attempt and its fill added to the ledger reconcile had just adopted from the exchange: 0.004 against 0.002."""
    [(_id, fields)] = r.xrange(keys.Stream.APPLY_PLAN)
    r.xdel(keys.Stream.APPLY_PLAN, stranded)
    run(r, access)
    age_marker(r, "strand-1", by_ms=90_000)
    passes(r, access)

    r.xadd(keys.Stream.APPLY_PLAN, fields)  # the same plan again, as a producer's resend
    run(r, access)

    assert ledger.read(r, "BTCUSDT").amount == D("0.002")
    assert results_of(r, "strand-1") == []
    assert not sending.busy(r, "BTCUSDT")  # the duplicate took no sending mark: reconcile is not held off 60 s
    [(_dead_id, refused)] = [e for e in r.xrange(keys.Stream.DEAD_LETTER) if e[1]["reason"] == "duplicate_plan"]
    assert json.loads(refused["fields"])["plan_id"] == "strand-1"


def test_a_plan_still_pending_keeps_its_mark(r, access, stranded) -> None:
    age_marker(r, "strand-1", by_ms=90_000)

    passes(r, access)

    assert sending.busy(r, "BTCUSDT") and ledger.read(r, "BTCUSDT") is None and orphan_letters(r) == []


def test_a_deleted_plan_whose_order_may_still_land_keeps_its_mark(r, access, stranded) -> None:
    r.xdel(keys.Stream.APPLY_PLAN, stranded)
    run(r, access)

    passes(r, access)  # the marker is seconds old: the exchange may still accept its order

    assert sending.busy(r, "BTCUSDT") and orphan_letters(r) == []


def test_a_plan_an_executor_holds_keeps_its_mark(r, access, stranded) -> None:
    r.xdel(keys.Stream.APPLY_PLAN, stranded)
    run(r, access)
    age_marker(r, "strand-1", by_ms=90_000)
    r.set(keys.plan_claim("strand-1"), "another-executor", ex=60)

    passes(r, access)

    assert sending.busy(r, "BTCUSDT") and orphan_letters(r) == []
