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
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from microservices.governor import lua
from microservices.governor.gates import FIVE_MIN_MS, HOUR_MS
from microservices.governor.settings import Limits
from microservices.governor.state import GovernorState, InFlight, Pending
from shared.trading_state import DISABLED, Switches, read_switches
from microservices.governor.writes import Writes
from shared import keys, results
from shared import snapshot as exchange_snapshot
from shared import permits
from shared.freshness import stored_ms
from shared.results import marker_ms
from shared.permits import PermitKind
from shared.schema import P32Permit
from shared.lua import text_reply
from shared.snapshot import ExchangeSnapshot

LOCK_TTL_MS = 2_000  # a decision holds it for well under a millisecond; a crashed holder frees it by expiry
LOCK_WAIT_BUDGET_S = 2 * LOCK_TTL_MS / 1000  # outlasts a crashed holder's lock
FIRST_BACKOFF_S = 0.0002
MAX_BACKOFF_S = 0.02
INFLIGHT_KEYS = (keys.GOVERNOR_INFLIGHT, keys.GOVERNOR_INFLIGHT_TOTALS, keys.GOVERNOR_INFLIGHT_BY_TIME)
ROUND_KEYS = (keys.GOVERNOR_LOCK, keys.KILL, keys.GOVERNOR_EXECUTION, keys.EXCHANGE_POSITIONS, *INFLIGHT_KEYS,
              keys.GOVERNOR_RATE_TRIPS, keys.GOVERNOR_DISARMED)


class LockBusy(RuntimeError):
    """Another governor held the decision lock too long; the entry stays pending and is retried."""


class LockLost(RuntimeError):
    """The decision outlived the lock's TTL, so another governor may have decided meanwhile: decide again."""


@dataclass(frozen=True)
class OwnRead:
    """What one open of a round reads about itself and its symbol."""

    last_exec_ms: int | None
    cooldown_raw: str | None  # set when the cooldown value could not be read
    has_result: bool
    own_record: str | None  # a replay finds its own in-flight record
    opens_last_hour: int  # without the plan itself
    opens_last_5min: int
    own_trip: bool  # a replay finds its own rate-limit trip in the window
    opened_before: bool  # a replay's allow is already in the symbol's opens (ZADD NX adds nothing)
    tripped_before: bool  # a replay's rate-limit trip is already recorded


@dataclass
class RoundEffects:
    """What the round's decisions so far will write, so the next plan of the round decides as if they were."""

    allowed: list[InFlight] = field(default_factory=list)  # in-flight records the commit writes
    replaced: list[InFlight] = field(default_factory=list)  # a replay's earlier record, which its new one replaces
    opened: list[str] = field(default_factory=list)  # symbols of new opens (ZADD NX adds them)
    trips: int = 0

    def add(self, writes: Writes, own: OwnRead) -> None:
        """Count what the commit will change: a replay's record is replaced (its permit is written anew), its
        open and trip may be there already."""
        if writes.inflight is not None:
            self.allowed.append(writes.inflight)
            earlier = _decode_or_none(own.own_record)
            if earlier is not None:
                self.replaced.append(earlier)
            if not own.opened_before:
                self.opened.append(writes.inflight.symbol)
        if writes.rate_trip and not own.tripped_before:
            self.trips += 1


@dataclass(frozen=True)
class RoundRead:
    """A round of open decisions: the shared state once, then each plan's own reads, all under the lock."""

    shared: GovernorState  # switches, snapshot, rate trips, disarm; no totals (see totals_for)
    units: int  # the running totals as read
    counts: dict[str, int]
    own: list[OwnRead]
    token: str
    now_ms: int

    def state_for(self, index: int, symbol: str, earlier: RoundEffects) -> GovernorState:
        """The state plan `index` decides on: the shared read, its own reads, and the round's earlier decisions."""
        own = self.own[index]
        unreadable = dict(self.shared.unreadable)
        if own.cooldown_raw is not None:
            unreadable["cooldown"] = own.cooldown_raw
        same_symbol = earlier.opened.count(symbol)
        return replace(
            self.shared, totals=self._totals_for(own.own_record, earlier), last_exec_ms=own.last_exec_ms,
            unreadable=unreadable, opens_last_hour=own.opens_last_hour + same_symbol,
            opens_last_5min=own.opens_last_5min + same_symbol,
            rate_trips=self.shared.rate_trips - int(own.own_trip) + earlier.trips,
        )

    def _totals_for(self, own_raw: str | None, earlier: RoundEffects) -> Pending:
        """The running totals without the plan's own record (a replay does not count itself), with the
        opens the round allowed before it, counted as Redis will count them (rounded up to units)."""
        units, counts = self.units, dict(self.counts)
        own = _decode_or_none(own_raw)
        changes = [(own, -1)] if own is not None else []
        changes += [(entry, 1) for entry in earlier.allowed] + [(entry, -1) for entry in earlier.replaced]
        for entry, sign in changes:
            units += sign * lua.to_units(entry.notional)
            counts[entry.symbol] = counts.get(entry.symbol, 0) + sign
        return Pending(frozenset(s for s, n in counts.items() if n > 0), lua.from_units(max(units, 0)),
                       max(sum(counts.values()), 0))


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
        kill, execution, has_result, disarmed = map(text_reply, pipe.execute(raise_on_error=False))
        return GovernorState(switches=read_switches(kill, execution), auto_disarmed=bool(disarmed)), bool(has_result)

    def issue(self, permit: P32Permit) -> None:
        permits.issue(self.r, permit, self.limits.permit_ttl_s)

    def lock_and_read_opens(self, plans: list[tuple[str, str]], now_ms: Callable[[], int],
                            token: str | None = None) -> RoundRead:
        """Take the decision lock and read a round of opens ((plan_id, symbol) each) in one call,
        waiting out contention. `token`: a lock this governor may hold already (from an arrival read)."""
        token = token or secrets.token_hex(8)
        waited, delay = 0.0, FIRST_BACKOFF_S
        while True:
            started_ms = now_ms()
            read = self._try_read_opens(plans, started_ms, token)
            if read is not None:
                return read
            if waited >= LOCK_WAIT_BUDGET_S:
                raise LockBusy(f"governor decision lock busy for {waited:.1f}s")
            self.wait(delay)
            waited, delay = waited + delay, min(delay * 2, MAX_BACKOFF_S)

    def _try_read_opens(self, plans: list[tuple[str, str]], now_ms: int, token: str) -> RoundRead | None:
        hour, five_min, trips_since, expired = self.window_starts(now_ms)
        script_keys = list(ROUND_KEYS)
        for plan_id, symbol in plans:
            script_keys += [keys.cooldown_last_exec(symbol), keys.plan_result_marker(plan_id), keys.governor_opens(symbol)]
        args = [token, LOCK_TTL_MS, hour, five_min, trips_since, expired, *(plan_id for plan_id, _ in plans)]
        values = lua.READ_OPENS(self.r, script_keys, args)
        return round_read(values, token, now_ms, trips_since) if values is not None else None

    def window_starts(self, now_ms: int) -> tuple[int, int, int, int]:
        """Opens counted after (hour, five minutes), trips after, in-flight records expired at or before."""
        return (now_ms - HOUR_MS, now_ms - FIVE_MIN_MS, now_ms - self.limits.auto_disarm_window_ms,
                now_ms - self.limits.inflight_expiry_ms)

    def migrate_records(self) -> int:
        """At start: give in-flight records written before the running totals existed their "units", under
        the decision lock, and drop the totals so the next read rebuilds them from every record (else the
        rebuild would drop those records as unreadable and their opens would stop counting). Returns how
        many were rewritten. Governors of the previous version must be stopped first: they write no units."""
        token = secrets.token_hex(8)
        waited, delay = 0.0, FIRST_BACKOFF_S
        while not self.r.set(keys.GOVERNOR_LOCK, token, nx=True, px=LOCK_TTL_MS):
            if waited >= LOCK_WAIT_BUDGET_S:
                raise LockBusy(f"governor decision lock busy for {waited:.1f}s")
            self.wait(delay)
            waited, delay = waited + delay, min(delay * 2, MAX_BACKOFF_S)
        try:
            rewritten = {}
            for plan_id, raw in self.r.hgetall(keys.GOVERNOR_INFLIGHT).items():
                if '"units"' in raw:
                    continue
                entry = _decode_or_none(raw)
                if entry is not None:
                    rewritten[plan_id] = InFlight(plan_id, entry.symbol, entry.notional, entry.allowed_at_ms).to_json()
            if rewritten:
                pipe = self.r.pipeline(transaction=True)
                pipe.hset(keys.GOVERNOR_INFLIGHT, mapping=rewritten)
                pipe.delete(keys.GOVERNOR_INFLIGHT_TOTALS)
                pipe.execute()
            return len(rewritten)
        finally:
            self.release(token)

    def read_inflight(self) -> tuple[tuple[InFlight, ...], tuple[str, ...]]:
        """Every in-flight record, and the ids of those that do not parse (for an exact look)."""
        return _inflight(self.r.hgetall(keys.GOVERNOR_INFLIGHT))

    def read_results(self, plan_ids: Iterable[str]) -> dict[str, int]:
        """When each of these plans got its result (ms), for those that have one. A marker whose time does not
        read is left out: its open stays counted in flight until its record expires, never dropped early."""
        plan_ids = list(plan_ids)
        if not plan_ids:
            return {}
        found = self.r.mget([keys.plan_result_marker(plan_id) for plan_id in plan_ids])
        written = {plan_id: marker_ms(raw) for plan_id, raw in zip(plan_ids, found)}
        return {plan_id: ms for plan_id, ms in written.items() if ms is not None}

    def commit_round(self, round_writes: list[Writes], token: str) -> int:
        """Each decision's permit and bookkeeping, one script call each, all in one round trip; the last
        releases the decision lock. Returns how many were written before the first that found the lock no
        longer ours; from there on, decisions are taken again (a replay of one that was written counts once)."""
        calls = [self._commit_call(writes, token, release=i == len(round_writes) - 1)
                 for i, writes in enumerate(round_writes)]
        replies = lua.COMMIT_OPEN.many(self.r, calls)
        return next((i for i, written in enumerate(replies) if not written), len(replies))  # the written prefix

    def _commit_call(self, writes: Writes, token: str, release: bool) -> tuple[list[str], list[object]]:
        permit = writes.permit
        script_keys = [keys.GOVERNOR_LOCK, keys.permit_p32(permit.plan_id), keys.permit_ready(permit.plan_id),
                       *INFLIGHT_KEYS, keys.governor_opens(permit.symbol), keys.GOVERNOR_RATE_TRIPS,
                       keys.GOVERNOR_EXECUTION, keys.GOVERNOR_DISARMED]
        record = writes.inflight.to_json() if writes.inflight is not None else ""
        args = [token, permit.to_json(), self.limits.permit_ttl_s, PermitKind.P32.value, permit.plan_id, record,
                writes.now_ms, HOUR_MS, int(writes.rate_trip), self.limits.auto_disarm_window_ms,
                writes.disarm or "", int(writes.clear_disarm), DISABLED, int(release), *writes.drop_inflight]
        return script_keys, args

    def release(self, token: str) -> None:
        lua.RELEASE_LOCK(self.r, [keys.GOVERNOR_LOCK], [token])

    def drop(self, plan_ids: Iterable[str]) -> int:
        """Drop in-flight records with their share of the totals; returns how many did not parse."""
        plan_ids = list(plan_ids)
        return int(lua.DROP(self.r, INFLIGHT_KEYS, plan_ids)) if plan_ids else 0

    def prune_settled(self) -> list[str]:
        """Drop in-flight opens the snapshot already shows, under the decision lock: a decision judges the
        records it reads against the snapshot of its own read, which may be older than ours, so no record may
        go while one is being taken (another governor's exact look would count the open nowhere). With the
        lock busy, pruning waits for a later tick; until then the records count, the safe side."""
        token = secrets.token_hex(8)
        if not self.r.set(keys.GOVERNOR_LOCK, token, nx=True, px=LOCK_TTL_MS):
            return []
        try:
            pipe = self.r.pipeline(transaction=False)
            inflight_raw, snapshot_raw = pipe.hgetall(keys.GOVERNOR_INFLIGHT).get(keys.EXCHANGE_POSITIONS).execute()
            inflight, _ = _inflight(inflight_raw)
            snapshot, _ = exchange_snapshot.checked(snapshot_raw)
            if not inflight or snapshot is None:
                return []
            results = self.read_results(entry.plan_id for entry in inflight)
            settled = GovernorState(snapshot=snapshot, inflight=inflight, result_ms=results).settled_inflight()
            if settled and int(lua.DROP_LOCKED(self.r, [*INFLIGHT_KEYS, keys.GOVERNOR_LOCK], [token, *settled])) < 0:
                return []  # the lock expired meanwhile: a decision may be reading; a later tick prunes
            self._refund_unexecuted([entry for entry in inflight if entry.plan_id in set(settled)])
            return settled
        finally:
            self.release(token)

    def _refund_unexecuted(self, ended: list[InFlight]) -> None:
        """Opens allowed that ended without an order executing (refused by P3.3, below the minimum notional, dry
        run, a permit timeout) give back their place in the symbol's rate windows, which count executions
        (GOV_MAX_EXEC_PER_HOUR/5MIN): else a symbol P3.3 holds would use up its budget with refusals and trip
        the auto-disarm. Nothing executed on the symbol since the allow (its last-execution time, which every fill
        sets, is absent or older) says so; a garbled time keeps the place (the safe side)."""
        if not ended:
            return
        # One read: each symbol's last execution, then each plan's result marker. Only a marker that says the plan
        # was refused gives the place back: a plan ended by reconcile as orphaned (shared.sending.release_orphans), or
        # given up by the executor, may have filled without any last-execution time written.
        read = self.r.mget([*(keys.cooldown_last_exec(entry.symbol) for entry in ended),
                            *(keys.plan_result_marker(entry.plan_id) for entry in ended)])
        last_exec, markers = read[:len(ended)], read[len(ended):]
        refunded = [entry for entry, raw, marker in zip(ended, last_exec, markers)
                    if _none_executed_since(raw, entry.allowed_at_ms) and results.ended_unexecuted(marker)]
        if refunded:
            pipe = self.r.pipeline(transaction=False)
            for entry in refunded:
                pipe.zrem(keys.governor_opens(entry.symbol), entry.plan_id)
            pipe.execute()

    def read_gauges(self) -> tuple[Switches, bool, int, ExchangeSnapshot | None]:
        """(switches, auto-disarmed, in-flight records, exchange snapshot) for the idle-time gauge refresh."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(keys.KILL).get(keys.GOVERNOR_EXECUTION).exists(keys.GOVERNOR_DISARMED).hlen(keys.GOVERNOR_INFLIGHT)
        pipe.get(keys.EXCHANGE_POSITIONS)
        kill, execution, disarmed, inflight, snapshot_raw = map(text_reply, pipe.execute(raise_on_error=False))
        return read_switches(kill, execution), bool(disarmed), int(inflight), exchange_snapshot.checked(snapshot_raw)[0]


def round_read(values: list[Any], token: str, now_ms: int, trips_since: int) -> RoundRead:
    """A RoundRead from the read script's reply (READ_OPENS', or what governor.arrival makes of its own)."""
    kill, execution, snapshot_raw, totals_raw, trips, disarmed, corrupt, *per_plan = values
    snapshot, snapshot_problem = exchange_snapshot.checked(snapshot_raw)
    unreadable = {"snapshot": snapshot_problem, "inflight": f"{corrupt} unreadable record(s)" if corrupt else None}
    shared = GovernorState(
        switches=read_switches(kill, execution),
        snapshot=snapshot,
        rate_trips=int(trips),
        auto_disarmed=bool(disarmed),
        unreadable={name: value for name, value in unreadable.items() if value is not None},
    )
    fields = _pairs(totals_raw)
    counts = {name[2:]: int(value) for name, value in fields.items() if name.startswith("n:")}
    own = [_own_read(per_plan[i:i + 7], now_ms, trips_since) for i in range(0, len(per_plan), 7)]
    return RoundRead(shared, int(fields.get("units", 0)), counts, own, token, now_ms)


def _own_read(values: list[Any], now_ms: int, trips_since: int) -> OwnRead:
    cooldown, has_result, own_record, hour, five_min, own_open, own_trip = values
    last_exec_ms = stored_ms(cooldown, now_ms)
    return OwnRead(
        last_exec_ms=last_exec_ms,
        cooldown_raw=cooldown if cooldown is not None and last_exec_ms is None else None,
        has_result=bool(has_result),
        own_record=own_record,
        opens_last_hour=int(hour) - _within(own_open, now_ms - HOUR_MS),
        opens_last_5min=int(five_min) - _within(own_open, now_ms - FIVE_MIN_MS),
        own_trip=bool(_within(own_trip, trips_since)),
        opened_before=own_open is not None,
        tripped_before=own_trip is not None,
    )


def _pairs(flat: list[str] | dict[str, str]) -> dict[str, str]:
    """A script's HGETALL arrives as a flat list (RESP2) or a map (RESP3)."""
    return dict(flat) if isinstance(flat, dict) else dict(zip(flat[0::2], flat[1::2]))


def _within(score: str | None, since_ms: int) -> int:
    """1 when the plan's own member is inside the window (a replay), so it is not counted twice."""
    return 1 if score is not None and float(score) > since_ms else 0


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


def _none_executed_since(last_exec_raw: str | None, since_ms: int) -> bool:
    if last_exec_raw is None:
        return True
    last_exec = stored_ms(last_exec_raw)
    return last_exec is not None and last_exec < since_ms
