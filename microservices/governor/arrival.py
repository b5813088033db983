"""The governor's arrival read (shared.runtime.arrival): the decision lock and a round read, taken by Redis
the moment plans are delivered, and what a read at the decision's own time would have given from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from microservices.governor import lua
from microservices.governor.store import LOCK_TTL_MS, ROUND_KEYS, GovernorStore, RoundRead, round_read
from shared import keys
from shared.runtime.arrival import ArrivalCall

# An arrival read is asked before the plans come, so its windows start where they stood when the wait began;
# it also returns what lies within this slack after each start, and the decision corrects the counts to its
# own time. A wait longer than this (the consumer blocks STREAM_BLOCK_MS, 2 s by default) reads again.
SLACK_MS = 5_000
KEY_PREFIXES = (keys.cooldown_last_exec(""), keys.plan_result_marker(""), keys.governor_opens(""))


@dataclass(frozen=True)
class ArrivalRead:
    """The round read the consumer's wait made when plans arrived (shared.runtime.arrival), windows as of asked_ms."""

    token: str
    asked_ms: int
    index: dict[tuple[str, str], int]  # (plan id, symbol) -> its place among the plans read
    read: int  # how many plans were read (a plan delivered twice is read twice)
    values: list | None  # read_round's reply; None when another governor held the lock
    stale: bool = False  # the batch did other work since (closes): only its lock is of use

    @property
    def locked(self) -> bool:
        return self.values is not None


def call(store: GovernorStore, token: str, asked_ms: int) -> ArrivalCall:
    """The round read for whatever plans the consumer's next wait delivers, taken as they arrive."""
    return ArrivalCall(lua.ARRIVAL_READ_OPENS, list(ROUND_KEYS),
                       [token, LOCK_TTL_MS, *store.window_starts(asked_ms), SLACK_MS, *KEY_PREFIXES])


def parse(token: str, asked_ms: int, reply: list) -> ArrivalRead | None:
    """The arrival script's reply as an ArrivalRead; None when no plan arrived."""
    if not reply:
        return None
    read_for, values = reply
    index = {(plan_id, symbol): i for i, (_entry_id, plan_id, symbol) in enumerate(read_for)}
    return ArrivalRead(token, asked_ms, index, len(read_for), values)


def as_round(store: GovernorStore, arrived: ArrivalRead, plans: list[tuple[str, str]], now_ms: int) -> RoundRead | None:
    """What a read at now_ms would have given, from the arrival read: each window count less what left the
    window since the read's time. None when that cannot be told (then read again, under the same lock):
    not locked, stale, a plan not read, a wait longer than the slack, a full slice, an in-flight record expired
    since."""
    elapsed = now_ms - arrived.asked_ms
    if arrived.values is None or arrived.stale or not 0 <= elapsed <= SLACK_MS:
        return None
    hour, five_min, trips_since, expired = store.window_starts(now_ms)
    trips_slice, first_inflight, *slices = arrived.values[7 + 7 * arrived.read:]
    if first_inflight and float(first_inflight[1]) <= expired:
        return None
    values = list(arrived.values[:7])
    values[4] = _still_within(values[4], trips_slice, trips_since)
    for plan in plans:
        i = arrived.index.get(plan)
        if i is None:
            return None
        own = list(arrived.values[7 + 7 * i:14 + 7 * i])
        own[3] = _still_within(own[3], slices[2 * i], hour)
        own[4] = _still_within(own[4], slices[2 * i + 1], five_min)
        values += own
    if None in (values[4], *values[10::7], *values[11::7]):
        return None
    return round_read(values, arrived.token, now_ms, trips_since)


def _still_within(count: int, window_start: list[str], since_ms: int) -> int | None:
    """A window's count less the members its start has passed since (window_start: the read's slice of
    member, score pairs just after its old start); None when the slice was full and all passed."""
    scores = [float(score) for score in window_start[1::2]]
    passed = sum(1 for score in scores if score <= since_ms)
    if passed == len(scores) == lua.ARRIVAL_SLICE:
        return None
    return int(count) - passed
