"""The governor's Redis effects: one script call reads an open decision, one script call commits it.

Open decisions hold keys.GOVERNOR_LOCK from the read to the write, so two governors cannot
both let opens through that only fit one at a time. The read script takes the lock; the
commit script writes only while the lock is still ours, and releases it.
"""

from __future__ import annotations

import secrets
import threading
from functools import lru_cache
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis

from microservices.governor import lua
from microservices.governor.gates import FIVE_MIN_MS, HOUR_MS
from microservices.governor.settings import Limits
from microservices.governor.state import GovernorState, InFlight, Pending
from shared.trading_state import DISABLED, Switches, read_switches
from microservices.governor.writes import Writes
from shared import keys
from shared import snapshot as exchange_snapshot
from shared import permits
from shared.permits import PermitKind
from shared.schema import P32Permit
from shared.snapshot import ExchangeSnapshot

LOCK_TTL_MS = 2_000  # a decision holds it for well under a millisecond; a crashed holder frees it by expiry
LOCK_WAIT_BUDGET_S = 2 * LOCK_TTL_MS / 1000  # outlasts a crashed holder's lock
FIRST_BACKOFF_S = 0.0002
MAX_BACKOFF_S = 0.02
INFLIGHT_KEYS = (keys.GOVERNOR_INFLIGHT, keys.GOVERNOR_INFLIGHT_TOTALS, keys.GOVERNOR_INFLIGHT_BY_TIME)


class LockBusy(RuntimeError):
    """Another governor held the decision lock too long; the entry stays pending and is retried."""


class LockLost(RuntimeError):
    """The decision outlived the lock's TTL, so another governor may have decided meanwhile: decide again."""


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
        trips_since = now_ms - self.limits.auto_disarm_window_ms
        script_keys = [keys.GOVERNOR_LOCK, keys.KILL, keys.GOVERNOR_EXECUTION, keys.cooldown_last_exec(symbol),
                       keys.EXCHANGE_POSITIONS, keys.plan_result_marker(plan_id), *INFLIGHT_KEYS,
                       keys.governor_opens(symbol), keys.GOVERNOR_RATE_TRIPS, keys.GOVERNOR_DISARMED]
        args = [token, LOCK_TTL_MS, plan_id, now_ms - HOUR_MS, now_ms - FIVE_MIN_MS, trips_since,
                now_ms - self.limits.inflight_expiry_ms]
        values = lua.READ_OPEN(self.r, script_keys, args)
        return _open_state(values, now_ms, trips_since) if values is not None else None

    def read_inflight(self) -> tuple[tuple[InFlight, ...], tuple[str, ...]]:
        """Every in-flight record, and the ids of those that do not parse (for an exact look)."""
        return _inflight(self.r.hgetall(keys.GOVERNOR_INFLIGHT))

    def read_results(self, plan_ids: Iterable[str]) -> dict[str, int]:
        """When each of these plans got its result (ms), for those that have one."""
        plan_ids = list(plan_ids)
        if not plan_ids:
            return {}
        found = self.r.mget([keys.plan_result_marker(plan_id) for plan_id in plan_ids])
        return {plan_id: _int_or(raw, 0) for plan_id, raw in zip(plan_ids, found) if raw is not None}

    def commit(self, writes: Writes, token: str) -> None:
        """Permit and bookkeeping in one script call, which also releases the decision lock."""
        permit = writes.permit
        script_keys = [keys.GOVERNOR_LOCK, keys.permit_p32(permit.plan_id), keys.permit_ready(permit.plan_id),
                       *INFLIGHT_KEYS, keys.governor_opens(permit.symbol), keys.GOVERNOR_RATE_TRIPS,
                       keys.GOVERNOR_EXECUTION, keys.GOVERNOR_DISARMED]
        record = writes.inflight.to_json() if writes.inflight is not None else ""
        args = [token, permit.to_json(), self.limits.permit_ttl_s, PermitKind.P32.value, permit.plan_id, record,
                writes.now_ms, HOUR_MS, int(writes.rate_trip), self.limits.auto_disarm_window_ms,
                writes.disarm or "", int(writes.clear_disarm), DISABLED, *writes.drop_inflight]
        if not lua.COMMIT_OPEN(self.r, script_keys, args):
            raise LockLost(f"decision lock expired before plan {permit.plan_id} was committed")

    def release(self, token: str) -> None:
        lua.RELEASE_LOCK(self.r, [keys.GOVERNOR_LOCK], [token])

    def drop(self, plan_ids: Iterable[str]) -> int:
        """Drop in-flight records with their share of the totals; returns how many did not parse."""
        plan_ids = list(plan_ids)
        return int(lua.DROP(self.r, INFLIGHT_KEYS, plan_ids)) if plan_ids else 0

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
        self.drop(settled)
        return settled

    def read_gauges(self) -> tuple[Switches, bool, int]:
        """(switches, auto-disarmed, in-flight records) for the idle-time gauge refresh."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(keys.KILL).get(keys.GOVERNOR_EXECUTION).exists(keys.GOVERNOR_DISARMED).hlen(keys.GOVERNOR_INFLIGHT)
        kill, execution, disarmed, inflight = pipe.execute()
        return read_switches(kill, execution), bool(disarmed), int(inflight)


def _open_state(values: list[Any], now_ms: int, trips_since: int) -> tuple[GovernorState, bool]:
    """(state, whether the plan already has a result) from the read script's reply."""
    kill, execution, cooldown, snapshot_raw, has_result, totals_raw, own_raw, *counts = values
    hour, five_min, own_open, trips, own_trip, disarmed, corrupt = counts
    snapshot, snapshot_problem = _snapshot(snapshot_raw)
    last_exec_ms = _int_or(cooldown, None)
    unreadable = {"snapshot": snapshot_problem, "inflight": f"{corrupt} unreadable record(s)" if corrupt else None,
                  "cooldown": cooldown if last_exec_ms is None else None}
    state = GovernorState(
        switches=read_switches(kill, execution),
        last_exec_ms=last_exec_ms,
        snapshot=snapshot,
        totals=_totals(_pairs(totals_raw), own_raw),
        opens_last_hour=int(hour) - _within(own_open, now_ms - HOUR_MS),
        opens_last_5min=int(five_min) - _within(own_open, now_ms - FIVE_MIN_MS),
        rate_trips=int(trips) - _within(own_trip, trips_since),
        auto_disarmed=bool(disarmed),
        unreadable={name: value for name, value in unreadable.items() if value is not None},
    )
    return state, bool(has_result)


def _pairs(flat: list[str] | dict[str, str]) -> dict[str, str]:
    """A script's HGETALL arrives as a flat list (RESP2) or a map (RESP3)."""
    return dict(flat) if isinstance(flat, dict) else dict(zip(flat[0::2], flat[1::2]))


def _totals(fields: dict[str, str], own_raw: str | None) -> Pending:
    """The running totals without the plan's own record (a replay does not count itself)."""
    counts = {name[2:]: int(value) for name, value in fields.items() if name.startswith("n:")}
    units = int(fields.get("units", 0))
    own = _decode_or_none(own_raw)
    if own is not None:
        units -= lua.to_units(own.notional)
        counts[own.symbol] = counts.get(own.symbol, 0) - 1
    return Pending(frozenset(s for s, n in counts.items() if n > 0), lua.from_units(max(units, 0)),
                   max(sum(counts.values()), 0))


def _within(score: str | None, since_ms: int) -> int:
    """1 when the plan's own member is inside the window (a replay), so it is not counted twice."""
    return 1 if score is not None and float(score) > since_ms else 0


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


def _decode_or_none(raw: str | None) -> InFlight | None:
    try:
        return _decode_inflight("", raw) if raw is not None else None
    except (ValueError, KeyError, TypeError, ArithmeticError):
        return None  # an unreadable record is not in the totals either (the scripts drop it)


@lru_cache(maxsize=4096)
def _decode_inflight(plan_id: str, value: str) -> InFlight:
    """Each record is decoded once, not on every open decision that reads the whole set."""
    return InFlight.from_json(plan_id, value)


def _int_or(raw: str | None, default: int | None) -> int | None:
    try:
        return int(float(raw)) if raw is not None else default
    except (ValueError, OverflowError):
        return default
