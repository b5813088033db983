"""When reconcile heals: a real difference, past the grace period, with nothing in flight."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from microservices.reconcile.decide import HealKind, Observation, Verdict, decide

SEED_MISMATCH = Observation("BTCUSDT", D("0.062"), D("0.002"), D("0.001"))
UNREADABLE = Observation("BTCUSDT", D("0.062"), None, D("0.001"), ledger_unreadable=True)
UNREADABLE_FLAT = Observation("BTCUSDT", D("0"), None, D("1"), ledger_unreadable=True)


@pytest.mark.parametrize(
    ("observation", "first_seen", "in_flight", "now", "verdict"),
    [
        (Observation("BTCUSDT", D("0.002"), D("0.002"), D("0.001")), None, False, 0, Verdict.AGREE),
        (Observation("BTCUSDT", D("0.003"), D("0.002"), D("0.001")), None, False, 0, Verdict.AGREE),
        (SEED_MISMATCH, None, False, 0, Verdict.NEW_MISMATCH),
        (SEED_MISMATCH, 0, False, 4_999, Verdict.WAITING),
        (SEED_MISMATCH, 0, True, 60_000, Verdict.WAITING),
        (SEED_MISMATCH, 0, False, 5_000, Verdict.HEAL),
        (UNREADABLE, None, False, 0, Verdict.NEW_MISMATCH),
        (UNREADABLE, 0, False, 4_999, Verdict.WAITING),
        (UNREADABLE, 0, True, 60_000, Verdict.WAITING),
        (UNREADABLE, 0, False, 5_000, Verdict.HEAL),
        (UNREADABLE_FLAT, None, False, 0, Verdict.NEW_MISMATCH),  # never agreement, whatever the tolerance
    ],
)
def test_a_mismatch_heals_only_after_the_grace_period_with_nothing_in_flight(observation, first_seen, in_flight, now, verdict) -> None:
    assert decide(observation, first_seen, in_flight, now, grace_ms=5_000) is verdict


@pytest.mark.parametrize(
    ("observation", "kind"),
    [
        (SEED_MISMATCH, HealKind.QTY_MISMATCH),
        (Observation("ETHUSDT", D("0.5"), None, D("0.001")), HealKind.EXTERNAL_POSITION),
        (Observation("ETHUSDT", D("0"), D("0.5"), D("0.001")), HealKind.EXTERNAL_CLOSE),
        (UNREADABLE, HealKind.LEDGER_UNREADABLE),
        (UNREADABLE_FLAT, HealKind.LEDGER_UNREADABLE),
    ],
)
def test_each_heal_says_what_kind_it_is(observation, kind) -> None:
    assert observation.kind is kind
