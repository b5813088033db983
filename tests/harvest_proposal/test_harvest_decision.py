"""Pure exit decisions: R, kill_score, stop hits, the take-profit ladder, re-proposal timing, a pending rung's fate."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from microservices.harvest_proposal.decision import (
    FULL_CLOSE_KEY,
    HarvestReason,
    RungVerdict,
    assess,
    choose,
    fingerprint,
    judge_rung,
    kill_score,
    next_full_close_attempt,
    next_rung,
    proposal_id,
    r_multiple,
    risk_frame,
)
from microservices.harvest_proposal.settings import HarvestSettings, parse_ladder
from shared.ledger import LedgerPosition
from shared.proposals import Fate, Stage, fate_of
from shared.schema import Action
from shared.snapshot import PositionState

SETTINGS = HarvestSettings()
LONG = PositionState("BTCUSDT", D("0.01"), D("88000"))
SHORT = PositionState("BTCUSDT", D("-0.01"), D("88000"))


def ledger_with(stop: str | None, amount: str = "0.01", entry: str = "88000") -> LedgerPosition:
    return LedgerPosition("BTCUSDT", D(amount), D(entry), stop_loss=D(stop) if stop else None)


@pytest.mark.parametrize(
    ("position", "ledger", "mark", "expected"),
    [
        (LONG, ledger_with("87120"), "88880", D("1")),  # risk 880: +880 is 1R
        (LONG, ledger_with("87120"), "87560", D("-0.5")),
        (SHORT, ledger_with("88880", amount="-0.01"), "87120", D("1")),
        (SHORT, ledger_with("88880", amount="-0.01"), "88440", D("-0.5")),
        (LONG, None, "89760", D("2")),  # default risk 1% of entry = 880
        (SHORT, None, "86240", D("2")),
        (LONG, ledger_with("87120", amount="-0.01"), "89760", D("2")),  # ledger on the other side is ignored
        (LONG, ledger_with("88000"), "88880", D("1")),  # a stop at entry has no risk: default risk
        (LONG, ledger_with("90000"), "88880", D("1")),  # a long's stop above its entry: default risk (review)
        (SHORT, ledger_with("86000", amount="-0.01"), "87120", D("1")),  # a short's below: the same
        (LONG, ledger_with("87999.99999999999999999999999999"), "80000", D("-1000000")),  # bounded (review)
    ],
)
def test_r_multiple(position, ledger, mark, expected) -> None:
    frame = risk_frame(position, ledger, SETTINGS)

    assert r_multiple(frame, D(mark), D(1) if position.amount > 0 else D(-1)) == expected


@pytest.mark.parametrize(
    ("r", "peak", "expected"),
    [
        ("0", "0", "0"),
        ("-0.5", "-0.5", "0.4"),  # 0.8 * 0.5
        ("-1", "0", "0.8"),
        ("-2", "0", "0.8"),  # loss saturates at the stop
        ("1", "3", "0.2667"),  # 0.4 * (3 - 1) / 3
        ("0.5", "0.8", "0.12"),  # peak under 1R: giveback measured against 1R
        ("-0.5", "2", "0.8"),  # 0.8 * 0.5 + 0.4 * 1
        ("-1", "3", "1"),  # clamped
        ("3", "3", "0"),
    ],
)
def test_kill_score_formula(r, peak, expected) -> None:
    assert kill_score(D(r), D(peak), SETTINGS) == D(expected)


def test_kill_score_weights_are_settings() -> None:
    settings = HarvestSettings(harvest_loss_weight=D("1"), harvest_giveback_weight=D("0"))

    assert kill_score(D("-0.5"), D("2"), settings) == D("0.5")


@pytest.mark.parametrize(
    ("position", "stop", "mark", "hit"),
    [
        (LONG, "87120", "87120", True),
        (LONG, "87120", "87000", True),
        (LONG, "87120", "87121", False),
        (SHORT, "88880", "88880", True),
        (SHORT, "88880", "89000", True),
        (SHORT, "88880", "88879", False),
    ],
)
def test_stop_hit_long_and_short(position, stop, mark, hit) -> None:
    amount = "0.01" if position.amount > 0 else "-0.01"

    assessment = assess(position, ledger_with(stop, amount=amount), D(mark), None, SETTINGS)

    assert (assessment.full_close is HarvestReason.STOP_LOSS_HIT) is hit


def test_a_critical_kill_score_proposes_a_full_close() -> None:
    assessment = assess(LONG, ledger_with("87120"), D("87560"), D("2"), SETTINGS)  # R -0.5 after a 2R peak

    choice = choose(assessment, frozenset(), 0, None, 0, SETTINGS)

    assert assessment.kill_score == D("0.8")
    assert (choice.action, choice.reason, choice.key) == (Action.FULL_CLOSE_PROPOSED, "kill_score_critical", FULL_CLOSE_KEY)


@pytest.mark.parametrize(
    ("mark", "done", "expected_action", "expected_done"),
    [
        ("88000", set(), None, None),
        ("88879", set(), None, None),
        ("88880", set(), Action.PARTIAL_25, {"1.0"}),
        ("89760", {"1.0"}, Action.PARTIAL_50, {"1.0", "2.0"}),
        ("89760", {"1.0", "2.0"}, None, None),
        ("90200", set(), Action.PARTIAL_50, {"1.0", "2.0"}),  # 2.5R at once: the highest new rung only
        ("91000", {"1.0"}, Action.PARTIAL_75, {"1.0", "2.0", "3.0"}),
    ],
)
def test_ladder_proposes_the_highest_newly_crossed_rung(mark, done, expected_action, expected_done) -> None:
    assessment = assess(LONG, ledger_with("87120"), D(mark), None, SETTINGS)

    choice = choose(assessment, frozenset(done), 0, None, 0, SETTINGS)

    assert (choice.action if choice else None) is expected_action
    if choice:
        assert choice.covers == expected_done
        assert choice.reason == f"tp_ladder_{max(expected_done - done, key=D)}R"


def test_a_stop_hit_outranks_the_ladder() -> None:
    assessment = assess(LONG, ledger_with("87120"), D("87000"), D("3"), SETTINGS)

    choice = choose(assessment, frozenset(), 0, None, 0, SETTINGS)

    assert (choice.action, choice.reason) == (Action.FULL_CLOSE_PROPOSED, "stop_loss_hit")


@pytest.mark.parametrize(
    ("last_attempt", "last_ms", "now_ms", "expected"),
    [(0, None, 5_000, 1), (1, 0, 1_000, None), (1, 0, 29_999, None), (1, 0, 30_000, 2), (2, 30_000, 59_999, None)],
)
def test_a_full_close_is_proposed_again_only_after_the_repropose_interval(last_attempt, last_ms, now_ms, expected) -> None:
    assert next_full_close_attempt(last_attempt, last_ms, now_ms, 30_000) == expected


def test_next_rung_ignores_done_rungs() -> None:
    ladder = parse_ladder("1:PARTIAL_25,2:PARTIAL_50")

    assert next_rung(ladder, frozenset({"1", "2"})) is None
    assert next_rung(ladder[:1], frozenset()) == ladder[0]


def test_fingerprint_keeps_through_a_partial_close_and_changes_for_a_new_position() -> None:
    partly_closed = PositionState("BTCUSDT", D("0.0075"), D("88000"))

    assert fingerprint(LONG) == fingerprint(partly_closed) == "BTCUSDT:LONG:88000"
    assert fingerprint(SHORT) != fingerprint(LONG)
    assert fingerprint(PositionState("BTCUSDT", D("0.02"), D("88100"))) != fingerprint(LONG)


def test_proposal_ids_are_deterministic_per_situation() -> None:
    same = proposal_id("BTCUSDT:LONG:88000", 1, "rung:1.0", 1)

    assert same == proposal_id("BTCUSDT:LONG:88000", 1, "rung:1.0", 1)
    others = {proposal_id("BTCUSDT:LONG:88000", 2, "rung:1.0", 1), proposal_id("BTCUSDT:LONG:88000", 1, "rung:2.0", 1),
              proposal_id("BTCUSDT:LONG:88000", 1, "rung:1.0", 2), proposal_id("BTCUSDT:SHORT:88000", 1, "rung:1.0", 1)}
    assert same not in others and len(others) == 4


@pytest.mark.parametrize(
    "ladder", ["", "1.0", "x:PARTIAL_25", "1.0:OPEN", "-1:PARTIAL_25", "1:PARTIAL_25,1.0:PARTIAL_50", "1:PARTIAL_99"]
)
def test_a_malformed_ladder_is_refused(ladder) -> None:
    with pytest.raises(ValueError):
        parse_ladder(ladder)


def test_the_default_ladder() -> None:
    rungs = HarvestSettings().ladder

    assert [(r.label, r.level, r.action) for r in rungs] == [
        ("1.0", D("1.0"), Action.PARTIAL_25), ("2.0", D("2.0"), Action.PARTIAL_50), ("3.0", D("3.0"), Action.PARTIAL_75),
    ]


def test_a_stop_a_hair_below_entry_is_still_proposed_when_hit() -> None:
    # Found in a review: R did not fit the decimal context, assess raised, and no exit was ever proposed.
    ledger = ledger_with("87999.99999999999999999999999999")
    assessment = assess(LONG, ledger, D("80000"), None, SETTINGS)

    choice = choose(assessment, frozenset(), 0, None, 0, SETTINGS)
    assert (choice.action, choice.reason) == (Action.FULL_CLOSE_PROPOSED, "stop_loss_hit")


@pytest.mark.parametrize(("fate", "age_ms", "verdict"), [
    (Fate(Stage.EXECUTED), 0, RungVerdict.SETTLED),
    (Fate(Stage.UNKNOWN), 0, RungVerdict.SETTLED),  # may have filled: never a second partial
    (Fate(Stage.IN_FLIGHT), 10**9, RungVerdict.WAIT),  # planned: its result will come
    (Fate(Stage.REFUSED, "stale_snapshot"), 29_999, RungVerdict.WAIT),
    (Fate(Stage.REFUSED, "stale_snapshot"), 30_000, RungVerdict.RETRY),
    (Fate(Stage.SKIPPED, "apply_kill_switch"), 30_000, RungVerdict.RETRY),
    (Fate(Stage.REFUSED, "dry_run"), 0, RungVerdict.GIVEN_UP),
    (Fate(Stage.SKIPPED, "fraction_below_one_step"), 0, RungVerdict.GIVEN_UP),
    (Fate(Stage.UNDECIDED), 29_999, RungVerdict.WAIT),
    (Fate(Stage.UNDECIDED), 30_000, RungVerdict.SUPERSEDE),
    (Fate(Stage.SUPERSEDED), 0, RungVerdict.RETRY),
])
def test_a_pending_rung_is_judged_by_its_proposal_fate(fate, age_ms, verdict) -> None:
    assert judge_rung(fate, 1_000, 1_000 + age_ms, 30_000) is verdict


@pytest.mark.parametrize(("fate", "age_ms", "verdict"), [
    (Fate(Stage.REFUSED, "stale_snapshot"), 30_000, RungVerdict.SETTLED),
    (Fate(Stage.UNDECIDED), 30_000, RungVerdict.SETTLED),  # not superseded either: if it comes, it is the one
    (Fate(Stage.IN_FLIGHT), 30_000, RungVerdict.WAIT),
    (Fate(Stage.REFUSED, "stale_snapshot"), 1_000, RungVerdict.WAIT),
])
def test_a_rung_is_never_proposed_again_once_the_position_is_smaller_than_its_proposal_saw(fate, age_ms,
                                                                                            verdict) -> None:
    assert judge_rung(fate, 1_000, 1_000 + age_ms, 30_000, position_reduced=True) is verdict


@pytest.mark.parametrize(("decided", "marker", "fate"), [
    (None, None, Fate(Stage.UNDECIDED)),
    ("1", None, Fate(Stage.IN_FLIGHT)),
    ("1", "1769000000000 0a1b2c3d4e5f6a7b executed", Fate(Stage.EXECUTED)),
    ("1", "1769000000000 0a1b2c3d4e5f6a7b stale_snapshot", Fate(Stage.REFUSED, "stale_snapshot")),
    ("1", "1769000000000 0a1b2c3d4e5f6a7b", Fate(Stage.UNKNOWN)),  # written before markers said
    ("1", "1769000000000 plan_entry_deleted", Fate(Stage.UNKNOWN)),  # an orphan: it may have filled
    # Found in review: the executor gives up on a plan whose order's fate it could not learn; retried, a filled
    # partial would be closed twice.
    ("1", "1769000000000 0a1b2c3d4e5f6a7b -", Fate(Stage.UNKNOWN, "-")),
    # given up with no order out: nothing was sent, the rung may be proposed again
    ("1", "1769000000000 0a1b2c3d4e5f6a7b gave_up_after_retries", Fate(Stage.REFUSED, "gave_up_after_retries")),
    ("skipped apply_kill_switch", None, Fate(Stage.SKIPPED, "apply_kill_switch")),
    ("superseded", None, Fate(Stage.SUPERSEDED)),
])
def test_the_fate_of_a_proposal_is_read_from_its_two_markers(decided, marker, fate) -> None:
    assert fate_of(decided, marker) == fate
