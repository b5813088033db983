"""Reconcile: compare exchange positions with the ledger on an interval and after each result.

A mismatch is recorded when first seen (visible to operators in Redis and /metrics), and
healed once it outlasts the grace period with no plan on the symbol in flight: the ledger
adopts the exchange amount, an event goes to the reconcile stream. Only that symbol is held
meanwhile, and never forever: an unreadable ledger is a mismatch healed the same way, a failure on
one symbol is logged and the pass goes on to the others, and a symbol P3.3 has held
(reconcile_required_qty_mismatch) is healed at any difference, whatever either tolerance says.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

import redis
from prometheus_client import Counter, Gauge

from microservices.reconcile.decide import Observation, Verdict, decide
from microservices.reconcile.settings import ReconcileSettings
from shared import freshness, keys, ledger, sending
from shared import snapshot as exchange_snapshot
from shared.exchange.errors import ExchangeError
from shared.exchange.models import Position
from shared.ledger import LedgerEntry
from shared.logging import get_logger
from shared.redis_conn import wrong_type
from shared.runtime.consumer import Entry
from shared.runtime.exchange import ExchangeAccess
from shared.schema import PlanResult, Reason, format_decimal
from shared.snapshot import ExchangeSnapshot

HEALS = Counter("quantum_reconcile_heals_total", "Ledger entries healed from the exchange", ["kind"])
MISMATCHES = Gauge("quantum_reconcile_mismatches", "Symbols whose ledger and exchange disagree now")
PASSES = Counter("quantum_reconcile_passes_total", "Reconcile passes by outcome", ["outcome"])
for _outcome in ("done", "weight_budget", "exchange_error"):  # each at 0 from the start, so the first one is a rise
    PASSES.labels(outcome=_outcome)
ORPHANS = Counter("quantum_reconcile_orphaned_plans_released_total",
                  "Sending marks of plans whose apply.plan entry was deleted while their order's outcome was unknown")
SYMBOL_ERRORS = Counter("quantum_reconcile_symbol_errors_total", "Symbols a pass could not reconcile (logged; next pass)")
ZERO = Decimal(0)
POSITIONS_WEIGHT = 5
FULL_SCAN_EVERY_S = 60.0


class Reconciler:
    def __init__(self, client: redis.Redis, access: ExchangeAccess, settings: ReconcileSettings,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self.r = client
        self.access = access
        self.settings = settings
        self.clock = clock  # wall time: compared with times other processes wrote
        # The interval between passes (found in review: on the wall clock, a step back of an hour ran no interval
        # pass for an hour; a position opened or closed by hand went unseen meanwhile).
        self.monotonic = monotonic
        self.log = get_logger(component="reconcile")
        self._due_at = 0.0
        self._last_result_ms = 0
        self._result_unseen = False
        self._held_by_p33: set[str] = set()
        self._observed_at_ms = 0  # when the exchange positions of the current pass were taken
        self._recorded: set[str] = set()  # symbols with a ledger or a mismatch record, as last scanned and since
        self._scanned_at = float("-inf")

    def on_result(self, result: PlanResult, entry: Entry) -> None:
        self._recorded.add(result.symbol)  # its ledger may be new: looked at from the next pass, before any scan
        # A result that may have moved a position (a fill, or a give-up whose order may exist): compare as soon as the
        # exchange view postdates it. A refusal moved nothing: the fleet's snapshot stays good for the next pass
        # (found in review: each one sent reconcile to the exchange itself, ~150 weight a minute while plans were
        # denied every few seconds, the seeds' pattern).
        if result.executed or result.reason is Reason.GAVE_UP:
            self._last_result_ms = max(self._last_result_ms, int(entry.entry_id.split("-")[0]))
            self._result_unseen = True
        if result.reason is Reason.RECONCILE_REQUIRED_QTY_MISMATCH:
            self._held_by_p33.add(result.symbol)

    def tick(self) -> None:
        now = self.monotonic()
        if now >= self._due_at or (self._result_unseen and self._fresh_snapshot() is not None):
            self._due_at = now + self.settings.reconcile_interval_sec
            self.run_pass()

    def run_pass(self) -> None:
        positions = self._positions()
        if positions is None:
            return
        self._result_unseen = False
        held = set(positions)
        symbols = held | self._recorded_symbols()
        self._recorded |= held  # a position's ledger stays after it closes: looked at without a scan
        disagreeing = sum(not self._reconcile_isolated(symbol, positions.get(symbol)) for symbol in sorted(symbols))
        MISMATCHES.set(disagreeing)
        PASSES.labels(outcome="done").inc()

    def _reconcile_isolated(self, symbol: str, position: Position | None) -> bool:
        """_reconcile_symbol, where one symbol's failure is logged and counted as a disagreement."""
        try:
            return self._reconcile_symbol(symbol, position)
        except (redis.ConnectionError, redis.TimeoutError):
            raise  # Redis itself is gone: no symbol can be reconciled, the runtime reports it
        except Exception as exc:
            SYMBOL_ERRORS.inc()
            self.log.exception("reconcile_symbol_failed", symbol=symbol, error=exc.__class__.__name__)
            return False

    def _positions(self) -> dict | None:
        """Exchange positions newer than the last result: the fleet's snapshot when it is, else a
        fetch of our own when the weight budget allows, else nothing this pass."""
        seen = self._fresh_snapshot()
        if seen is not None:
            self._observed_at_ms = seen.fetched_at_ms
            return dict(seen.positions)
        if not self.access.client.can_spend(POSITIONS_WEIGHT):
            PASSES.labels(outcome="weight_budget").inc()
            return None
        try:
            self._observed_at_ms = int(self.clock() * 1000)
            return self._exchange_positions()
        except ExchangeError as exc:
            PASSES.labels(outcome="exchange_error").inc()
            self.log.warning("reconcile_skipped", error=exc.message)
            return None

    def _fresh_snapshot(self) -> ExchangeSnapshot | None:
        seen = exchange_snapshot.read(self.r)
        now_ms = int(self.clock() * 1000)
        if seen is None or seen.age_s(now_ms) > self.settings.reconcile_snapshot_max_age_sec:
            return None
        return seen if seen.fetched_at_ms > self._last_result_ms else None

    def _exchange_positions(self) -> dict[str, Position]:
        by_symbol: dict[str, Position] = {}
        for position in self.access.client.positions():
            held = by_symbol.get(position.symbol)
            by_symbol[position.symbol] = position if held is None else replace(held, amount=held.amount + position.amount)
        return by_symbol

    def _recorded_symbols(self) -> set[str]:
        """Symbols with a ledger or a mismatch record (so that a record goes once both agree). The keyspace is
        scanned for them at most every FULL_SCAN_EVERY_S: it holds every plan's markers for days, and a SCAN of it
        each pass (every RECONCILE_INTERVAL_SEC and after results) grew with the plans ever made, not with the
        positions (found in review: 0.43 s of Redis per pass at 300k keys). Between scans, the symbols of the last
        scan and of every result since; a ledger written by hand on another symbol is found at the next scan."""
        now = self.monotonic()
        if now - self._scanned_at >= FULL_SCAN_EVERY_S:
            self._recorded = (self._symbols_under(keys.position_ledger_pattern())
                              | self._symbols_under(keys.reconcile_mismatch_pattern()))
            self._scanned_at = now
        return set(self._recorded)

    def _symbols_under(self, pattern: str) -> set[str]:
        return {keys.symbol_from_key(key) for key in self.r.scan_iter(pattern, count=500)}

    def _reconcile_symbol(self, symbol: str, position: Position | None) -> bool:
        """Returns True when the symbol agrees (now or after healing)."""
        recorded = ledger.read_entry(self.r, symbol)
        observation = _observe(symbol, position, recorded, self._tolerance(symbol))
        mismatch_key = keys.reconcile_mismatch(symbol)
        now_ms = int(self.clock() * 1000)
        first_seen = self._first_seen_ms(mismatch_key, now_ms)
        in_flight = sending.busy(self.r, symbol)
        if in_flight and not observation.agrees and self._released_orphans(symbol):
            in_flight = sending.busy(self.r, symbol)
        verdict = decide(observation, first_seen, in_flight, now_ms, int(self.settings.reconcile_grace_sec * 1000))
        if verdict is Verdict.AGREE:
            self.r.delete(mismatch_key)
            self._held_by_p33.discard(symbol)
            return True
        if verdict is Verdict.NEW_MISMATCH:
            self._record(observation, recorded, now_ms)
            return False
        if verdict is Verdict.HEAL:
            return self._heal(observation, recorded, position, now_ms, first_seen)
        return False

    def _released_orphans(self, symbol: str) -> bool:
        """Sending marks of plans whose apply.plan entry is gone (shared.sending.release_orphans): let go, so that
        the symbol heals now rather than when the marks expire in 7 days."""
        # The window at the largest settings: the executor's timeout and recvWindow may be set apart from ours.
        released = sending.release_orphans(self.r, symbol, sending.max_unclear_window_ms())
        for plan_id in released:
            ORPHANS.inc()
            self.log.warning("ORPHANED_PLAN_RELEASED", symbol=symbol, plan_id=plan_id, reason=sending.ORPHAN_REASON,
                             detail="its entry was deleted while its order's outcome was unknown: the exchange decides")
        return bool(released)

    def _first_seen_ms(self, mismatch_key: str, now_ms: int) -> int | None:
        """When the mismatch was first seen; None when unrecorded or garbled (it is then recorded afresh). A
        record of another type (an operator's SET) is deleted, or every pass would fail on it and never heal. A time
        further ahead than any clock of this host (a clock since stepped back, a hand-typed value) reads as absent:
        found in review, it held the heal off, and P3.3 refused the symbol's closes, until the clock caught up."""
        try:
            return freshness.stored_ms(self.r.hget(mismatch_key, "first_seen_ms"), now_ms)
        except redis.ResponseError as exc:
            if not wrong_type(exc):
                raise
            self.r.delete(mismatch_key)
            return None

    def _tolerance(self, symbol: str) -> Decimal:
        # P3.3 holding the symbol proves it sees a difference: heal any, whatever the tolerances say.
        if symbol in self._held_by_p33:
            return ZERO
        return ledger.qty_tolerance(self.access.filters.find(symbol), self.settings.heal_tolerance_steps)

    def _record(self, observation: Observation, recorded: LedgerEntry, now_ms: int) -> None:
        described = _describe(observation, recorded, now_ms)
        self.r.hset(keys.reconcile_mismatch(observation.symbol), mapping=described)
        self.log.warning("RECONCILE_MISMATCH", **described, grace_sec=self.settings.reconcile_grace_sec)

    def _heal(self, observation: Observation, recorded: LedgerEntry, position: Position | None, now_ms: int,
              first_seen_ms: int | None) -> bool:
        symbol = observation.symbol
        # Says when the mismatch was first seen, not when it healed (found in review: operators could not tell how
        # long the symbol had been held).
        described = _describe(observation, recorded, first_seen_ms if first_seen_ms is not None else now_ms)
        with self.r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(keys.position_ledger(symbol), keys.executor_sending(symbol))
                # Compared as stored (raw), so an unreadable ledger is compare-and-set like any other.
                if sending.busy(pipe, symbol) or ledger.read_entry(pipe, symbol) != recorded:
                    return False  # the executor moved: look again next pass
                moved = self._moved_since_observed(pipe, symbol, recorded, now_ms)
                if moved is not None:  # a fill was recorded after the exchange was looked at: look again
                    self.log.info("heal_deferred", symbol=symbol, reason=moved, observed_at_ms=self._observed_at_ms)
                    return False
                pipe.multi()
                ledger.queue_write(pipe, symbol, _adopted(observation, recorded.position, position, now_ms))
                pipe.xadd(keys.Stream.RECONCILE_EVENT, {**described, "action": "adopted_exchange"})
                pipe.delete(keys.reconcile_mismatch(symbol))
                pipe.execute()
            except redis.WatchError:
                return False
        HEALS.labels(kind=observation.kind.value).inc()
        self._held_by_p33.discard(symbol)
        self.log.warning("RECONCILE_HEALED", **described)
        return True

    def _moved_since_observed(self, pipe: redis.client.Pipeline, symbol: str, recorded: LedgerEntry,
                              now_ms: int) -> str | None:
        """Why the ledger may hold a fill the exchange view does not (one written at or after the view's time), or
        None. The ledger's own time says so for a position; a fill that closed one deleted the hash, so the symbol's
        last-execution time (set by the same script call as every fill) says it for both. A time further ahead of
        now than any clock of this host (freshness.FUTURE_SKEW_MS: a hand-written time in µs, a clock since
        stepped back) was not written by a fill just now: read as absent. Before, such a time held off every heal
        of the symbol, and P3.3 refused its closes, without a word."""
        if recorded.position is not None:
            updated = freshness.stored_ms(str(recorded.position.updated_at_ms), now_ms)
            if updated is not None and updated >= self._observed_at_ms:
                return "ledger_updated_after_observation"
        # MGET, not GET: a key of another type reads as absent instead of failing every pass (the next fill's SET
        # replaces it); the ledger's own time still counts then.
        last_exec = freshness.stored_ms(pipe.mget([keys.cooldown_last_exec(symbol)])[0], now_ms)
        if last_exec is not None and last_exec >= self._observed_at_ms:
            return "executed_after_observation"
        return None


def _observe(symbol: str, position: Position | None, recorded: LedgerEntry, tolerance: Decimal) -> Observation:
    held = recorded.position
    return Observation(symbol, position.amount if position else ZERO, held.amount if held else None, tolerance,
                       ledger_unreadable=recorded.unreadable)


def _adopted(observation: Observation, recorded: ledger.LedgerPosition | None, position: Position | None,
             now_ms: int) -> ledger.LedgerPosition | None:
    if position is None or observation.exchange_amt == 0:
        return None
    same_direction = recorded is not None and (recorded.amount > 0) == (position.amount > 0)
    base = recorded if same_direction else ledger.LedgerPosition(observation.symbol, ZERO, position.entry_price)
    return replace(base, amount=position.amount, entry_price=position.entry_price, updated_at_ms=now_ms,
                   source="reconcile")


def _describe(observation: Observation, recorded: LedgerEntry, now_ms: int) -> dict[str, str]:
    diff = observation.diff
    described = {
        "symbol": observation.symbol, "exchange_amt": format_decimal(observation.exchange_amt),
        "ledger_amt": _ledger_text(observation), "diff": "unknown" if diff is None else format_decimal(diff),
        "tolerance": format_decimal(observation.tolerance), "kind": observation.kind.value, "first_seen_ms": str(now_ms),
    }
    # Why the ledger did not parse (the field, never its value), for the operator who typed it.
    return {**described, "ledger_error": recorded.error} if recorded.unreadable else described


def _ledger_text(observation: Observation) -> str:
    if observation.ledger_unreadable:
        return "unreadable"
    return "none" if observation.ledger_amt is None else format_decimal(observation.ledger_amt)
