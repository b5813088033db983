"""The governor's Redis effects: one pipelined read per decision, one transaction for its writes.

Open decisions hold keys.GOVERNOR_LOCK from the read to the write, so two governors cannot
both let opens through that only fit one at a time. The lock is taken in the read's own
round trip and released inside the write's transaction.
"""

from __future__ import annotations

import secrets
import threading
from functools import lru_cache
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis

from microservices.governor.gates import FIVE_MIN_MS, HOUR_MS
from microservices.governor.settings import Limits
from microservices.governor.state import GovernorState, InFlight
from shared.trading_state import DISABLED, Switches, read_switches
from microservices.governor.writes import Writes
from shared import keys, permits
from shared import snapshot as exchange_snapshot
from shared.schema import P32Permit
from shared.snapshot import ExchangeSnapshot

LOCK_TTL_MS = 2_000  # a decision holds it for well under a millisecond; a crashed holder frees it by expiry
LOCK_WAIT_BUDGET_S = 2 * LOCK_TTL_MS / 1000  # outlasts a crashed holder's lock
FIRST_BACKOFF_S = 0.0002
MAX_BACKOFF_S = 0.02
# EVAL, not EVALSHA: a registered script costs an extra SCRIPT EXISTS round trip per transaction.
RELEASE_LOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class LockBusy(RuntimeError):
    """Another governor held the decision lock too long; the entry stays pending and is retried."""


@dataclass(frozen=True)
class OpenRead:
    state: GovernorState
    has_result: bool
    token: str
    now_ms: int


class GovernorStore:
    def __init__(self, client: redis.Redis, limits: Limits, wait: Callable[[float], object] = threading.Event().wait):
        self.r = client
        self.limits = limits
        self.wait = wait

    def read_close(self, plan_id: str) -> tuple[GovernorState, bool]:
        """A close needs the switches only (and whether the plan already ended)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(keys.KILL).get(keys.GOVERNOR_EXECUTION).exists(keys.plan_result_marker(plan_id))
        pipe.exists(keys.GOVERNOR_DISARMED)
        kill, execution, has_result, disarmed = pipe.execute()
        return GovernorState(switches=read_switches(kill, execution), auto_disarmed=bool(disarmed)), bool(has_result)

    def issue(self, permit: P32Permit) -> None:
        permits.issue(self.r, permit, self.limits.permit_ttl_s)

    def lock_and_read_open(self, plan_id: str, symbol: str, now_ms: Callable[[], int]) -> OpenRead:
        """Take the decision lock and read the open's state in the same round trip, waiting out contention."""
        token = secrets.token_hex(8)
        waited, delay = 0.0, FIRST_BACKOFF_S
        while True:
            started_ms = now_ms()
            read = self._try_read_open(plan_id, symbol, started_ms, token)
            if read is not None:
                return OpenRead(*read, token=token, now_ms=started_ms)
            if waited >= LOCK_WAIT_BUDGET_S:
                raise LockBusy(f"governor decision lock busy for {waited:.1f}s")
            self.wait(delay)
            waited, delay = waited + delay, min(delay * 2, MAX_BACKOFF_S)

    def _try_read_open(self, plan_id: str, symbol: str, now_ms: int, token: str) -> tuple[GovernorState, bool] | None:
        opens, trips = keys.governor_opens(symbol), keys.GOVERNOR_RATE_TRIPS
        trips_since = now_ms - self.limits.auto_disarm_window_ms
        pipe = self.r.pipeline(transaction=False)
        pipe.set(keys.GOVERNOR_LOCK, token, nx=True, px=LOCK_TTL_MS)
        pipe.get(keys.KILL).get(keys.GOVERNOR_EXECUTION).get(keys.cooldown_last_exec(symbol))
        pipe.get(keys.EXCHANGE_POSITIONS).exists(keys.plan_result_marker(plan_id)).hgetall(keys.GOVERNOR_INFLIGHT)
        pipe.zcount(opens, f"({now_ms - HOUR_MS}", "+inf").zcount(opens, f"({now_ms - FIVE_MIN_MS}", "+inf")
        pipe.zscore(opens, plan_id).zcount(trips, f"({trips_since}", "+inf").zscore(trips, plan_id)
        pipe.exists(keys.GOVERNOR_DISARMED)
        locked, *values = pipe.execute()
        return _open_state(values, now_ms, trips_since) if locked else None

    def read_results(self, plan_ids: Iterable[str]) -> dict[str, int]:
        """When each of these plans got its result (ms), for those that have one."""
        plan_ids = list(plan_ids)
        if not plan_ids:
            return {}
        found = self.r.mget([keys.plan_result_marker(plan_id) for plan_id in plan_ids])
        return {plan_id: _int_or(raw, 0) for plan_id, raw in zip(plan_ids, found) if raw is not None}

    def commit(self, writes: Writes, token: str) -> None:
        """Permit and bookkeeping in one transaction, which also releases the decision lock."""
        pipe = self.r.pipeline(transaction=True)
        permits.queue_issue(pipe, writes.permit, self.limits.permit_ttl_s)
        if writes.drop_inflight:
            pipe.hdel(keys.GOVERNOR_INFLIGHT, *writes.drop_inflight)
        if writes.inflight is not None:
            self._queue_inflight(pipe, writes.inflight)
        if writes.rate_trip:
            self._queue_trip(pipe, writes.permit.plan_id, writes.now_ms)
        if writes.clear_disarm:
            pipe.delete(keys.GOVERNOR_DISARMED)
        if writes.disarm is not None:
            pipe.set(keys.GOVERNOR_EXECUTION, DISABLED).set(keys.GOVERNOR_DISARMED, writes.disarm)
            pipe.delete(keys.GOVERNOR_RATE_TRIPS)  # the trips that disarmed are spent; re-arming starts afresh
        pipe.eval(RELEASE_LOCK, 1, keys.GOVERNOR_LOCK, token)
        pipe.execute()

    def _queue_inflight(self, pipe: redis.client.Pipeline, entry: InFlight) -> None:
        opens = keys.governor_opens(entry.symbol)
        pipe.hset(keys.GOVERNOR_INFLIGHT, entry.plan_id, entry.to_json())
        pipe.zadd(opens, {entry.plan_id: entry.allowed_at_ms}, nx=True)  # a replay keeps its first time
        pipe.zremrangebyscore(opens, "-inf", entry.allowed_at_ms - HOUR_MS)
        pipe.pexpire(opens, HOUR_MS)

    def _queue_trip(self, pipe: redis.client.Pipeline, plan_id: str, now_ms: int) -> None:
        window_ms = self.limits.auto_disarm_window_ms
        pipe.zadd(keys.GOVERNOR_RATE_TRIPS, {plan_id: now_ms}, nx=True)
        pipe.zremrangebyscore(keys.GOVERNOR_RATE_TRIPS, "-inf", now_ms - window_ms)
        pipe.pexpire(keys.GOVERNOR_RATE_TRIPS, window_ms)

    def release(self, token: str) -> None:
        self.r.eval(RELEASE_LOCK, 1, keys.GOVERNOR_LOCK, token)

    def prune_settled(self) -> list[str]:
        """Drop in-flight opens the snapshot already shows; settled ones never return, so no lock is needed."""
        pipe = self.r.pipeline(transaction=False)
        inflight_raw, snapshot_raw = pipe.hgetall(keys.GOVERNOR_INFLIGHT).get(keys.EXCHANGE_POSITIONS).execute()
        inflight, _ = _inflight(inflight_raw)
        snapshot, _ = _snapshot(snapshot_raw)
        if not inflight or snapshot is None:
            return []
        results = self.read_results(entry.plan_id for entry in inflight)
        settled = GovernorState(snapshot=snapshot, inflight=inflight, result_ms=results).settled_inflight()
        if settled:
            self.r.hdel(keys.GOVERNOR_INFLIGHT, *settled)
        return settled

    def read_gauges(self) -> tuple[Switches, bool, int]:
        """(switches, auto-disarmed, in-flight records) for the idle-time gauge refresh."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(keys.KILL).get(keys.GOVERNOR_EXECUTION).exists(keys.GOVERNOR_DISARMED).hlen(keys.GOVERNOR_INFLIGHT)
        kill, execution, disarmed, inflight = pipe.execute()
        return read_switches(kill, execution), bool(disarmed), int(inflight)


def _open_state(values: list[Any], now_ms: int, trips_since: int) -> tuple[GovernorState, bool]:
    """(state, whether the plan already has a result) from the read pipeline's replies."""
    kill, execution, cooldown, snapshot_raw, has_result, inflight_raw, *counts = values
    hour, five_min, own_open, trips, own_trip, disarmed = counts
    snapshot, snapshot_problem = _snapshot(snapshot_raw)
    last_exec_ms = _int_or(cooldown, None)
    inflight, corrupt = _inflight(inflight_raw)
    unreadable = {"snapshot": snapshot_problem, "inflight": ",".join(corrupt) or None,
                  "cooldown": cooldown if last_exec_ms is None else None}
    state = GovernorState(
        switches=read_switches(kill, execution),
        last_exec_ms=last_exec_ms,
        snapshot=snapshot,
        inflight=inflight,
        unreadable_inflight=corrupt,
        opens_last_hour=int(hour) - _within(own_open, now_ms - HOUR_MS),
        opens_last_5min=int(five_min) - _within(own_open, now_ms - FIVE_MIN_MS),
        rate_trips=int(trips) - _within(own_trip, trips_since),
        auto_disarmed=bool(disarmed),
        unreadable={name: value for name, value in unreadable.items() if value is not None},
    )
    return state, bool(has_result)


def _within(score: float | None, since_ms: int) -> int:
    """1 when the plan's own member is inside the window (a replay), so it is not counted twice."""
    return 1 if score is not None and score > since_ms else 0


def _snapshot(raw: str | None) -> tuple[ExchangeSnapshot | None, str | None]:
    if raw is None:
        return None, None
    try:
        return exchange_snapshot.decode(raw), None
    except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
        return None, f"unreadable ({exc.__class__.__name__})"


def _inflight(raw: dict[str, str]) -> tuple[tuple[InFlight, ...], tuple[str, ...]]:
    entries, corrupt = [], []
    for plan_id, value in raw.items():
        try:
            entries.append(_decode_inflight(plan_id, value))
        except (ValueError, KeyError, TypeError, ArithmeticError):
            corrupt.append(plan_id)
    return tuple(entries), tuple(corrupt)


@lru_cache(maxsize=4096)
def _decode_inflight(plan_id: str, value: str) -> InFlight:
    """Each record is decoded once, not on every open decision that reads the whole set."""
    return InFlight.from_json(plan_id, value)


def _int_or(raw: str | None, default: int | None) -> int | None:
    try:
        return int(float(raw)) if raw is not None else default
    except (ValueError, OverflowError):
        return default
