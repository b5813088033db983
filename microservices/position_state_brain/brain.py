"""The P3.3 handler: one executable plan in, one permit out (allow or deny), in two Redis round trips.

Round trip one reads the ledger, the cooldown key, the result marker and the results written
since (fills the snapshot may not show yet) in a pipeline; the snapshot is already in memory.
Round trip two writes the permit and wakes the executor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

import redis

from microservices.position_state_brain import metrics
from microservices.position_state_brain.gates import GatePolicy, Verdict, decide, deny
from microservices.position_state_brain.fills import ConfirmedFills
from microservices.position_state_brain.keeper import SnapshotKeeper
from shared import keys, permits
from shared.exchange.filters import SymbolRules
from shared.ledger import LedgerPosition
from shared.logging import get_logger
from shared.runtime.consumer import Entry
from shared.schema import P33Permit, Plan, Reason, format_decimal
from shared.snapshot import ExchangeSnapshot

ZERO = Decimal(0)


class RulesSource(Protocol):
    def find(self, symbol: str) -> SymbolRules | None: ...


@dataclass(frozen=True)
class PlanReads:
    ledger: LedgerPosition | None
    ledger_readable: bool
    last_exec_ms: int | None
    has_result: bool
    snapshot: ExchangeSnapshot | None  # the exchange view with fills since the snapshot applied


class PositionStateBrain:
    def __init__(
        self,
        client: redis.Redis,
        keeper: SnapshotKeeper,
        rules: RulesSource,
        policy: GatePolicy,
        permit_ttl_s: int,
        clock: Callable[[], float] = time.time,
    ):
        self.r = client
        self.keeper = keeper
        self.rules = rules
        self.policy = policy
        self.permit_ttl_s = permit_ttl_s
        self.clock = clock
        self.fills = ConfirmedFills()
        self.log = get_logger(component="p33")

    def handle(self, plan: Plan, entry: Entry | None = None) -> Verdict | None:
        if not plan.is_executable:
            return self._skip(plan, "decision_not_execute")
        reads = self._read(plan)
        if reads.has_result:
            return self._skip(plan, "plan_has_result")
        verdict = self._verdict(plan, reads)
        self._issue(plan, verdict, reads)
        return verdict

    def _read(self, plan: Plan) -> PlanReads:
        held = self.keeper.snapshot
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(keys.position_ledger(plan.symbol))
        pipe.get(keys.cooldown_last_exec(plan.symbol))
        pipe.exists(keys.plan_result_marker(plan.plan_id))
        if held is not None:
            pipe.xrange(keys.Stream.APPLY_RESULT, min=self.fills.start_id(held), max="+")
        ledger_hash, last_exec_raw, result_count, *since = pipe.execute()
        ledger, readable = self._ledger(plan.symbol, ledger_hash)
        view = None
        if held is not None:
            self.fills.absorb(since[0], held)
            view = self.fills.view(held, plan.symbol)
        return PlanReads(ledger, readable, self._last_exec_ms(plan.symbol, last_exec_raw), bool(result_count), view)

    def _ledger(self, symbol: str, data: dict[str, str]) -> tuple[LedgerPosition | None, bool]:
        if not data:
            return None, True
        try:
            return LedgerPosition.from_hash(symbol, data), True
        except (ArithmeticError, ValueError):
            self.log.warning("ledger_unreadable", symbol=symbol)
            return None, False

    def _last_exec_ms(self, symbol: str, raw: str | None) -> int | None:
        if raw is None:
            return None
        try:
            return int(Decimal(raw))
        except (ArithmeticError, ValueError):
            self.log.warning("cooldown_key_unreadable", symbol=symbol)
            return None

    def _verdict(self, plan: Plan, reads: PlanReads) -> Verdict:
        if not reads.ledger_readable:
            # Reconcile rewrites the ledger from the exchange, which heals this like any mismatch.
            return deny(Reason.RECONCILE_REQUIRED_QTY_MISMATCH, ledger="unreadable")
        return decide(plan, reads.snapshot, reads.ledger, reads.last_exec_ms,
                      self.rules.find(plan.symbol), self.policy, self._now_ms())

    def _issue(self, plan: Plan, verdict: Verdict, reads: PlanReads) -> None:
        held = reads.snapshot
        permit = P33Permit(
            plan_id=plan.plan_id, allow=verdict.allow, symbol=plan.symbol, reason=verdict.reason,
            context=verdict.context, created_at=self.clock(), safe_qty=verdict.safe_qty,
            exchange_position_amt=held.amount(plan.symbol) if held else ZERO,
            ledger_amt=reads.ledger.amount if reads.ledger else ZERO,
        )
        permits.issue(self.r, permit, self.permit_ttl_s)
        metrics.DECISIONS.labels(allow=str(verdict.allow).lower(), reason=verdict.reason.value).inc()
        log = self.log.info if verdict.allow else self.log.warning
        log("PERMIT_DECISION", permit="p33", plan_id=plan.plan_id, symbol=plan.symbol, allow=verdict.allow,
            reason=verdict.reason.value, safe_qty=format_decimal(verdict.safe_qty), context=verdict.context)

    def _skip(self, plan: Plan, why: str) -> None:
        metrics.PLANS_SKIPPED.labels(reason=why).inc()
        self.log.info("plan_skipped", plan_id=plan.plan_id, symbol=plan.symbol, reason=why)
        return None

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)
