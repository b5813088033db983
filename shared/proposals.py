"""What became of an exit proposal: its plan id, and one read of the two markers that tell its fate.

An exit proposal (harvest → heat gate → apply layer) becomes at most one plan. Two keys say how far it got:
- `quantum:apply:proposal:<id>`, written once (SET NX or under WATCH), decides the proposal:
  PLANNED ("1") when the apply layer published its plan; `skipped <reason>` when the apply layer planned nothing
  (APPLY_KILL_SWITCH, a fraction below one step, no position); SUPERSEDED when harvest retired the proposal,
  unplanned, before proposing its rung again. Whichever writes first decides: a proposal harvest has superseded can
  never become a plan afterwards, so a retried take-profit rung can never be a second partial close.
- the plan's result marker (shared.results), which says whether the plan executed or why not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

import redis

from shared import keys, results
from shared.once import MARKER_TTL_S

PLANNED = "1"
SUPERSEDED = "superseded"
SKIPPED = "skipped"


class Stage(str, Enum):
    UNDECIDED = "undecided"  # not planned yet: still on its way, or dead-lettered by the apply layer
    SKIPPED = "skipped"  # the apply layer planned nothing (reason)
    SUPERSEDED = "superseded"  # harvest retired it unplanned
    IN_FLIGHT = "in_flight"  # planned, no result yet
    EXECUTED = "executed"  # its plan's order executed
    REFUSED = "refused"  # its plan ended without executing (reason)
    UNKNOWN = "unknown"  # its plan ended, and may have executed (the marker does not say, or the executor gave up)


@dataclass(frozen=True)
class Fate:
    stage: Stage
    reason: str | None = None


def plan_id_for(proposal_id: str) -> str:
    """The one plan a proposal can become: read from either stream, any number of times, it is this plan."""
    return "ap-" + hashlib.sha256(proposal_id.encode()).hexdigest()[:20]


def fate_of(decided: str | None, result_marker: str | None) -> Fate:
    if decided is None:
        return Fate(Stage.UNDECIDED)
    if decided == SUPERSEDED:
        return Fate(Stage.SUPERSEDED)
    if decided.startswith(SKIPPED + " "):
        return Fate(Stage.SKIPPED, decided.removeprefix(SKIPPED + " "))
    if result_marker is None:
        return Fate(Stage.IN_FLIGHT)
    outcome = results.marker_outcome(result_marker)
    if outcome == results.EXECUTED:
        return Fate(Stage.EXECUTED)
    if results.ended_unexecuted(result_marker):
        return Fate(Stage.REFUSED, outcome)
    return Fate(Stage.UNKNOWN, outcome)  # a marker that does not say, or UNKNOWN (a give-up): it may have filled


def read_fate(client: redis.Redis, proposal_id: str) -> Fate:
    decided, result_marker = client.mget(keys.apply_proposal(proposal_id),
                                         keys.plan_result_marker(plan_id_for(proposal_id)))
    return fate_of(decided, result_marker)


def decided(client: redis.Redis, proposal_id: str) -> str | None:
    """The apply-layer marker's value: None while the proposal is undecided."""
    return client.get(keys.apply_proposal(proposal_id))


def decide(client: redis.Redis, proposal_id: str, value: str) -> bool:
    """Decide an undecided proposal (SKIPPED <reason> or SUPERSEDED); False when it was decided already."""
    return bool(client.set(keys.apply_proposal(proposal_id), value, nx=True, ex=MARKER_TTL_S))


def skipped(reason: str) -> str:
    return f"{SKIPPED} {reason}"
