"""Exit decisions for one position: pure functions of (position, ledger, mark, peak R, settings, clock).

R multiple
    direction = +1 long, -1 short; risk = |entry - stop_loss|
    R = (mark - entry) / risk * direction
    entry and stop come from the ledger when it holds a stop for a position on the same side;
    otherwise entry is the exchange's and stop = entry * (1 - direction * HARVEST_DEFAULT_RISK_PCT).

kill_score (0..1, rounded to 4 places)
    L = clamp(-R, 0, 1)                                   loss: 0 at breakeven, 1 at the stop
    G = clamp((peak_R - R) / max(peak_R, 1), 0, 1)         giveback, only when peak_R > 0, else 0
    kill_score = clamp(HARVEST_LOSS_WEIGHT * L + HARVEST_GIVEBACK_WEIGHT * G, 0, 1)   (0.8, 0.4)
    peak_R is the highest R seen in the position's lifecycle, including the current one.

Actions, one per position per cycle, full close first
    FULL_CLOSE_PROPOSED  stop hit (long: mark <= stop, short: mark >= stop)   reason stop_loss_hit
                         or kill_score >= HARVEST_KILL_SCORE_CRITICAL          reason kill_score_critical
    ladder rung action   R >= rung level, rung not yet done                    reason tp_ladder_<level>R
    Only the highest newly crossed rung is proposed; it covers every crossed rung.
    A full close is proposed again (attempt + 1) only after HARVEST_REPROPOSE_SEC.

A rung's proposal stays pending until its fate is known (shared.proposals; judge_rung), and no other rung is
proposed meanwhile (its fraction is of the position it saw: two in flight would close more than the ladder says):
    executed, or ended in a way that does not say (it may have filled)        its rungs are done
    planned and no result yet; or not yet planned, younger than the interval    wait
    ended unexecuted or skipped for a reason that can clear (a stale snapshot, P3.3's mismatch, the exchange,
      APPLY_KILL_SWITCH), once HARVEST_REPROPOSE_SEC after its proposal       its rungs may be proposed again
      (attempt + 1, a new id), if R still crosses them
    ended for a reason retrying cannot change in this position (dry run, below the minimum, no position)
                                                                              its rungs are done (given up)
    would be proposed again, but the position is smaller than its proposal saw   its rungs are done
    not planned HARVEST_REPROPOSE_SEC after its proposal (dead-lettered, held upstream): superseded, so it can never
      become a plan, then as a clearable refusal
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum

from microservices.harvest_proposal.settings import HarvestSettings, Rung
from shared.ledger import LedgerPosition
from shared.proposals import Fate, Stage
from shared.schema import Action, Reason, format_decimal
from shared.snapshot import PositionState

ZERO = Decimal(0)
ONE = Decimal(1)
PLACES = Decimal("0.0001")
MAX_R = Decimal(10**6)  # past a million R nothing is decided differently
FULL_CLOSE_KEY = "full_close"
RUNG_KEY_PREFIX = "rung:"
# Why a rung's plan ended unexecuted, or the apply layer skipped it, that proposing it again in the same position
# would not change: the rung is given up (its rungs are done). Any other reason can clear.
FINAL_REASONS = frozenset({
    Reason.DRY_RUN.value,  # the fleet runs dry: the rung was taken, on paper
    Reason.BELOW_MIN_QTY.value, Reason.BELOW_MIN_NOTIONAL.value, "fraction_below_one_step",  # too small a part
    Reason.NO_POSITION.value, Reason.SIDE_MISMATCH.value,  # the position is gone or flipped: a new lifecycle
    Reason.UNKNOWN_SYMBOL.value, Reason.DUPLICATE_PLAN.value,
})


class HarvestReason(str, Enum):
    STOP_LOSS_HIT = "stop_loss_hit"
    KILL_SCORE_CRITICAL = "kill_score_critical"
    TP_LADDER = "tp_ladder"


@dataclass(frozen=True)
class RiskFrame:
    entry: Decimal
    stop_loss: Decimal
    from_ledger: bool


@dataclass(frozen=True)
class Assessment:
    r_multiple: Decimal
    peak_r: Decimal
    kill_score: Decimal
    full_close: HarvestReason | None
    crossed: tuple[Rung, ...]


@dataclass(frozen=True)
class Choice:
    """What to propose now: the action, why, the identity key, and (a rung) the rungs done once it executes."""

    action: Action
    reason: str
    key: str
    attempt: int = 1
    covers: frozenset[str] = frozenset()
    rung: str | None = None


class RungVerdict(str, Enum):
    WAIT = "wait"  # its proposal may still become a partial close: propose no other rung
    SETTLED = "settled"  # executed (or may have): its rungs are done
    GIVEN_UP = "given_up"  # ended for a reason that stays in this position: its rungs are done
    RETRY = "retry"  # ended unexecuted for a reason that can clear: its rungs may be proposed again
    SUPERSEDE = "supersede"  # never planned: retire it (then RETRY), or wait if it was planned meanwhile


def clamp(value: Decimal, low: Decimal = ZERO, high: Decimal = ONE) -> Decimal:
    return max(low, min(high, value))


def direction(position: PositionState) -> Decimal:
    return ONE if position.amount > 0 else -ONE


def fingerprint(position: PositionState) -> str:
    """symbol + side + entry: a partial close keeps it, a new or scaled position changes it."""
    side = "LONG" if position.amount > 0 else "SHORT"
    return f"{position.symbol}:{side}:{format_decimal(position.entry_price)}"


def risk_frame(position: PositionState, ledger: LedgerPosition | None, settings: HarvestSettings) -> RiskFrame:
    from_ledger = _ledger_frame(position, ledger)
    if from_ledger is not None:
        return from_ledger
    entry = position.entry_price
    return RiskFrame(entry, entry * (ONE - direction(position) * settings.harvest_default_risk_pct), False)


def _ledger_frame(position: PositionState, ledger: LedgerPosition | None) -> RiskFrame | None:
    """The ledger's entry and stop, when it holds a usable stop for a position on the same side."""
    if ledger is None or ledger.stop_loss is None or ledger.stop_loss <= 0 or ledger.entry_price <= 0:
        return None
    if ledger.amount * direction(position) <= 0:
        return None
    # A stop must lie on the losing side of the entry: one on the winning side (or at it) would be "hit" at once
    # and close a sound position (found in a review). Such a stop is not the plan's risk: the default is.
    if (ledger.entry_price - ledger.stop_loss) * direction(position) <= 0:
        return None
    return RiskFrame(ledger.entry_price, ledger.stop_loss, True)


def r_multiple(frame: RiskFrame, mark: Decimal, side: Decimal) -> Decimal:
    """The move from entry in units of the risk, bounded to ±MAX_R: a stop a hair from its entry made R too
    large to quantize (InvalidOperation), and the position got no exit proposal at all, not even its stop's."""
    risk = abs(frame.entry - frame.stop_loss)
    return clamp((mark - frame.entry) / risk * side, -MAX_R, MAX_R).quantize(PLACES)


def kill_score(r: Decimal, peak_r: Decimal, settings: HarvestSettings) -> Decimal:
    loss = clamp(-r)
    giveback = clamp((peak_r - r) / max(peak_r, ONE)) if peak_r > 0 else ZERO
    score = settings.harvest_loss_weight * loss + settings.harvest_giveback_weight * giveback
    return clamp(score).quantize(PLACES)


def stop_hit(frame: RiskFrame, mark: Decimal, side: Decimal) -> bool:
    return mark <= frame.stop_loss if side > 0 else mark >= frame.stop_loss


def assess(position: PositionState, ledger: LedgerPosition | None, mark: Decimal, peak_r: Decimal | None,
           settings: HarvestSettings) -> Assessment:
    side = direction(position)
    frame = risk_frame(position, ledger, settings)
    r = r_multiple(frame, mark, side)
    peak = r if peak_r is None else max(peak_r, r)
    score = kill_score(r, peak, settings)
    crossed = tuple(rung for rung in settings.ladder if r >= rung.level)
    return Assessment(r, peak, score, _full_close_reason(frame, mark, side, score, settings), crossed)


def _full_close_reason(frame: RiskFrame, mark: Decimal, side: Decimal, score: Decimal,
                       settings: HarvestSettings) -> HarvestReason | None:
    if stop_hit(frame, mark, side):
        return HarvestReason.STOP_LOSS_HIT
    if score >= settings.harvest_kill_score_critical:
        return HarvestReason.KILL_SCORE_CRITICAL
    return None


def next_rung(crossed: tuple[Rung, ...], done: frozenset[str]) -> Rung | None:
    fresh = [rung for rung in crossed if rung.label not in done]
    return fresh[-1] if fresh else None


def next_full_close_attempt(last_attempt: int, last_ms: int | None, now_ms: int, repropose_ms: int) -> int | None:
    """1 the first time; afterwards the next attempt only once the previous one is repropose_ms old."""
    if last_attempt == 0 or last_ms is None:
        return 1
    return last_attempt + 1 if now_ms - last_ms >= repropose_ms else None


def judge_rung(fate: Fate, proposed_ms: int, now_ms: int, repropose_ms: int, position_reduced: bool = False
               ) -> RungVerdict:
    """What a pending rung's proposal came to, and so what harvest may do about its rungs now. A position smaller
    than the proposal saw settles a rung that would be proposed again: something closed part of it, perhaps this
    very proposal with its markers lost (a Redis restarted from an older file), and a second partial would
    close more than the ladder says."""
    verdict = _judge_rung(fate, now_ms - proposed_ms >= repropose_ms)
    if position_reduced and verdict in (RungVerdict.RETRY, RungVerdict.SUPERSEDE):
        return RungVerdict.SETTLED
    return verdict


def _judge_rung(fate: Fate, due: bool) -> RungVerdict:
    if fate.stage in (Stage.EXECUTED, Stage.UNKNOWN):
        return RungVerdict.SETTLED
    if fate.stage in (Stage.REFUSED, Stage.SKIPPED):
        if fate.reason in FINAL_REASONS:
            return RungVerdict.GIVEN_UP
        return RungVerdict.RETRY if due else RungVerdict.WAIT
    if fate.stage is Stage.SUPERSEDED:
        return RungVerdict.RETRY
    if fate.stage is Stage.UNDECIDED and due:
        return RungVerdict.SUPERSEDE
    return RungVerdict.WAIT  # in flight, or not planned yet


def rung_key(label: str) -> str:
    return RUNG_KEY_PREFIX + label


def choose(assessment: Assessment, done: frozenset[str], last_attempt: int, last_full_ms: int | None,
           now_ms: int, settings: HarvestSettings, rung_attempts: dict[str, int] | None = None,
           rung_pending: bool = False) -> Choice | None:
    """`rung_attempts`: proposals made so far per rung label; `rung_pending`: a rung's proposal is unresolved."""
    if assessment.full_close is not None:
        attempt = next_full_close_attempt(last_attempt, last_full_ms, now_ms, settings.repropose_ms)
        if attempt is None:
            return None
        return Choice(Action.FULL_CLOSE_PROPOSED, assessment.full_close.value, FULL_CLOSE_KEY, attempt)
    rung = None if rung_pending else next_rung(assessment.crossed, done)
    if rung is None:
        return None
    reason = f"{HarvestReason.TP_LADDER.value}_{rung.label}R"
    attempt = (rung_attempts or {}).get(rung.label, 0) + 1
    return Choice(rung.action, reason, rung_key(rung.label), attempt, frozenset(r.label for r in assessment.crossed),
                  rung.label)


def proposal_id(fingerprint_text: str, opened_ms: int, key: str, attempt: int) -> str:
    """The same situation (position lifecycle, action key, attempt) always yields the same id."""
    canonical = f"{fingerprint_text}|{opened_ms}|{key}|{attempt}"
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]
