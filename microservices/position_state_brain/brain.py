"""The P3.3 handler: each executable plan in, one permit out (allow or deny), one Redis round trip a batch.

The read: for every plan of the batch, the ledger, the cooldown key and the result marker, and
once the results written since (fills the snapshot may not show yet); the snapshot is already in
memory. It rides on the consumer's wait for the batch (an arrival read, shared.runtime.arrival):
Redis runs it the moment the plans are delivered. When that read does not match the batch
handed over, a read of its own is one more round trip. The write: all the permits, each with its
executor wake-up. An open it permits counts as a position on its way until its result is read
(permitted.py), for the later plans of the same batch too.
"""

from __future__ import annotations

import json
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
from microservices.position_state_brain.permitted import PermittedOpens
from shared import freshness, keys, ledger, permits, results
from shared.exchange.filters import SymbolRules
from shared.ledger import LedgerPosition
from shared.logging import get_logger
from shared.lua import SAFE_READS, LuaScript
from shared.runtime import arrival
from shared.runtime.arrival import ArrivalCall
from shared.runtime.consumer import Entry
from shared.schema import P33Permit, Plan, Reason, Side, format_decimal
from shared.snapshot import ExchangeSnapshot

ZERO = Decimal(0)
CATCH_UP_COUNT = 500
RECOVER_BATCH = 1000  # permit keys scanned and read at a time when recovering the permitted opens at start
# Catching up between batches only bounds the next read after a quiet spell; each batch's read takes
# every result since the cursor anyway, so doing it after every batch was a round trip per plan.
CATCH_UP_EVERY_S = 0.2
# KEYS: apply.result, then per plan: ledger cooldown result-marker; ARGV: first result id to read ('' none).
# Reply: the results since (id, flat fields), the stream's newest id, then per plan: ledger (flat; nil when the key
# is not a hash), cooldown, result marker exists.
# results_since(key, first): the entries from `first` ('' none) on, oldest first, and the id of the stream's
# newest entry ('0-0' when empty), where the next read goes on: no result written later is skipped, whatever
# snapshot is held by then. Read backwards from the stream's end when they are few (XREVRANGE starts there at
# once; XRANGE first walks the stream node).
_RESULTS_SINCE = """
local function results_since(key, first)
  if first == '' then return {}, '' end
  local newest = redis.call('XREVRANGE', key, '+', first, 'COUNT', 65)
  if #newest > 64 then
    local all = redis.call('XRANGE', key, first, '+')
    return all, all[#all][1]
  end
  local out = {}
  for i = #newest, 1, -1 do out[#out + 1] = newest[i] end
  if #out > 0 then return out, out[#out][1] end
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  return out, (last[1] and last[1][1]) or '0-0'
end
"""
READ = LuaScript(SAFE_READS + _RESULTS_SINCE + """
local reply = {results_since(KEYS[1], ARGV[1])}
for i = 2, #KEYS, 3 do
  reply[#reply + 1] = fields_of(KEYS[i])
  reply[#reply + 1] = text_of(KEYS[i + 1])
  reply[#reply + 1] = redis.call('EXISTS', KEYS[i + 2])
end
return reply
""")
# The same reads, for the plans the consumer's wait just delivered (shared.runtime.arrival).
# KEYS[2] apply.result; ARGV[3] first result id to read ('' none), ARGV[4..6] ledger cooldown result-marker key prefixes.
# Reply: the results since, the stream's newest id, then per delivered plan: {entry id, plan id, symbol, ledger (flat),
# cooldown, result marker}.
ARRIVAL_READ = LuaScript(arrival.PRELUDE + SAFE_READS + _RESULTS_SINCE + """
local reply = {results_since(KEYS[2], ARGV[3])}
for _, entry in ipairs(delivered()) do
  local plan_id, sym = plan_of(entry[2])
  if plan_id then
    reply[#reply + 1] = {entry[1], plan_id, sym, fields_of(ARGV[4] .. sym), text_of(ARGV[5] .. sym),
                         redis.call('EXISTS', ARGV[6] .. plan_id)}
  end
end
return reply
""")
KEY_PREFIXES = [keys.position_ledger(""), keys.cooldown_last_exec(""), keys.plan_result_marker("")]


class RulesSource(Protocol):
    def find(self, symbol: str) -> SymbolRules | None: ...


@dataclass(frozen=True)
class Arrived:
    """An arrival read's reply, with the snapshot and result cursor it was asked for."""

    snapshot: ExchangeSnapshot | None
    since: str
    reply: list


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
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.r = client
        self.keeper = keeper
        self.rules = rules
        self.policy = policy
        self.permit_ttl_s = permit_ttl_s
        self.clock = clock
        self.monotonic = monotonic
        self._last_catch_up = float("-inf")
        self._asked: tuple[ExchangeSnapshot | None, str] | None = None
        self._arrived: Arrived | None = None
        self.fills = ConfirmedFills()
        self.permitted = PermittedOpens(permit_ttl_s)
        self._recovered: set[str] = set()  # plan ids of opens recovered at start, until settled (see recover)
        self.log = get_logger(component="p33")

    def recover(self) -> int:
        """At start, before any plan: the opens an earlier P3.3 permitted that have no result yet, so a restart
        does not forget a position on its way (permitted.py). Each was written with its permit as a record
        (keys.p33_permitted_open) that lives as long as a running P3.3 holds the open, past the permit's own
        TTL: a permit taken just before it expires may still be sent after. Those whose plans have a result
        marker are over. The results cursor may start after some of their results (it starts at the time of
        whichever snapshot is held at the first read), so their markers are checked on each catch-up until
        they are settled. A Redis error leaves nothing recovered, as before recovery existed. Returns how many."""
        try:
            found = []
            batch: list[str] = []
            for key in self.r.scan_iter(match=keys.p33_permitted_open("*"), count=RECOVER_BATCH):
                batch.append(key)
                if len(batch) == RECOVER_BATCH:
                    found += self._permitted_opens(batch)
                    batch = []
            found += self._permitted_opens(batch)
        except redis.RedisError as exc:
            self.log.warning("p33_recovery_failed", error=exc.__class__.__name__)
            return 0
        for plan_id, held in sorted(found, key=lambda pair: pair[1].at_ms):  # PermittedOpens: oldest first
            self.permitted.add(plan_id, held.symbol, held.side, held.at_ms)
            self._recovered.add(plan_id)
        return len(found)

    def _permitted_opens(self, record_keys: list[str]) -> list[tuple[str, OpenRecord]]:
        """Of these records: (plan id, what it opens) for those whose plan has no result."""
        if not record_keys:
            return []
        prefix = len(keys.p33_permitted_open(""))
        opens = []
        for key, raw in zip(record_keys, self.r.mget(record_keys)):
            held = OpenRecord.parse(raw)
            if held is None:
                if raw is not None:
                    self.log.warning("p33_open_record_unreadable", key=key)
                continue
            opens.append((key[prefix:], held))
        ended = results.with_results(self.r, [plan_id for plan_id, _held in opens])
        return [(plan_id, held) for plan_id, held in opens if plan_id not in ended]

    def _settle_recovered(self) -> None:
        """Recovered opens still held: settled when their result markers exist (see recover)."""
        self._recovered = {plan_id for plan_id in self._recovered if self.permitted.holds(plan_id)}
        ended = results.with_results(self.r, list(self._recovered))
        self.permitted.settle(list(ended))
        self._recovered -= ended

    def maybe_catch_up(self) -> int:
        """catch_up, at most every CATCH_UP_EVERY_S (the loop ticks after every batch)."""
        now = self.monotonic()
        if now - self._last_catch_up < CATCH_UP_EVERY_S:
            return 0
        self._last_catch_up = now
        self._settle_recovered()
        return self.catch_up()

    def catch_up(self, count: int = CATCH_UP_COUNT) -> int:
        """Between batches: read the results written since the last read, a page at a time, so the read
        a plan makes stays small however long P3.3 was idle while the executor kept filling."""
        held, read = self.keeper.snapshot, 0
        # Before the first result is read: where to go on if there is none (read first, so none is skipped).
        newest = "" if held is None or self.fills.cursor else _newest_id(self.r, keys.Stream.APPLY_RESULT)
        while held is not None:
            entries = self.r.xrange(keys.Stream.APPLY_RESULT, min=self.fills.start_id(held), max="+", count=count)
            self._absorb(entries, held, newest)
            read += len(entries)
            if len(entries) < count:
                break
        return read

    def arrival_call(self) -> ArrivalCall:
        """The consumer sends this with each wait for plans: the batch's reads, made as it arrives."""
        held = self.keeper.snapshot
        since = self.fills.start_id(held) if held is not None else ""
        self._asked = (held, since)
        return ArrivalCall(ARRIVAL_READ, [keys.Stream.APPLY_RESULT], [since, *KEY_PREFIXES])

    def arrived(self, reply: object | None) -> None:
        asked, self._asked = self._asked, None
        self._arrived = Arrived(*asked, reply) if asked is not None and isinstance(reply, list) else None

    def handle(self, plan: Plan, entry: Entry | None = None) -> Verdict | None:
        """One plan: the decision taken, or None when it needs no permit."""
        outcome = self.decide_all([plan])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def handle_batch(self, batch: list[tuple[Plan, Entry]]) -> list[BaseException | None]:
        """The consumer's batch handler: every plan of a read decided together (see the module docstring)."""
        outcomes = self.decide_all([plan for plan, _entry in batch])
        return [outcome if isinstance(outcome, Exception) else None for outcome in outcomes]

    def decide_all(self, plans: list[Plan]) -> list[Verdict | Exception | None]:
        """Per plan: its verdict, None (no permit needed), or the exception deciding it raised (no permit)."""
        outcomes: list[Verdict | Exception | None] = [None] * len(plans)
        executable = []
        for i, plan in enumerate(plans):
            if plan.is_executable:
                executable.append(i)
            else:
                self._skip(plan, "decision_not_execute")
        issued, records = [], {}
        for i, read in zip(executable, self._read([plans[i] for i in executable])):
            plan = plans[i]
            if read.has_result:
                self._skip(plan, "plan_has_result")
                continue
            try:
                verdict = self._verdict(plan, read)
                issued.append((plan, verdict, self._permit(plan, verdict, read)))
                outcomes[i] = verdict
                if verdict.allow and not plan.is_close:  # the batch's later plans see it on its way
                    at_ms = self._now_ms()
                    self.permitted.add(plan.plan_id, plan.symbol, plan.side, at_ms)
                    records[plan.plan_id] = permits.Record(keys.p33_permitted_open(plan.plan_id),
                                                           OpenRecord(plan.symbol, plan.side, at_ms).to_json(),
                                                           self.permitted.lifetime_ms)
            except Exception as exc:  # one bad plan fails alone; the batch's other permits are still written
                outcomes[i] = exc
        permits.issue_many(self.r, [permit for _plan, _verdict, permit in issued], self.permit_ttl_s, records)
        for plan, verdict, _permit in issued:
            self._record(plan, verdict)
        return outcomes

    def _read(self, plans: list[Plan]) -> list[PlanReads]:
        if not plans:
            return []
        held = self.keeper.snapshot
        arrived = self._arrived_for(plans, held)
        if arrived is not None:
            since, newest, replies = arrived
        else:
            # One script call, so one atomic read: the executor writes a fill's result and its ledger change
            # together, and a read between the two would see the fill twice or not at all (a false mismatch).
            script_keys = [keys.Stream.APPLY_RESULT]
            for plan in plans:
                script_keys += [keys.position_ledger(plan.symbol), keys.cooldown_last_exec(plan.symbol),
                                keys.plan_result_marker(plan.plan_id)]
            since, newest, *replies = READ(self.r, script_keys, [self.fills.start_id(held) if held is not None else ""])
        if held is not None:
            self._absorb([(entry_id, _pairs(flat)) for entry_id, flat in since], held, newest)
        reads = []
        for plan, (ledger_flat, last_exec_raw, result_count) in zip(plans, zip(*[iter(replies)] * 3)):
            ledger, readable = self._ledger(plan.symbol, ledger_flat)
            view = self.fills.view(held, plan.symbol) if held is not None else None
            reads.append(PlanReads(ledger, readable, self._last_exec_ms(plan.symbol, last_exec_raw), bool(result_count), view))
        return reads

    def _arrived_for(self, plans: list[Plan], held: ExchangeSnapshot | None) -> tuple[list, str, list] | None:
        """The arrival read's (results since, newest result id, flat per-plan replies) when it covers every
        plan and was asked with the snapshot and result cursor in force now; else None. Used once: by the batch
        it came with."""
        arrived, self._arrived = self._arrived, None
        if arrived is None or arrived.snapshot is not held or (held is not None and arrived.since != self.fills.start_id(held)):
            return None
        since, newest, *per_entry = arrived.reply
        found = {(plan_id, symbol): (ledger, cooldown, marker)
                 for _entry_id, plan_id, symbol, ledger, cooldown, marker in per_entry}
        replies = []
        for plan in plans:
            reads = found.get((plan.plan_id, plan.symbol))
            if reads is None:
                return None
            replies += reads
        return since, newest, replies

    def _absorb(self, entries: list[tuple[str, dict[str, str]]], held: ExchangeSnapshot, newest: str = "") -> None:
        """Results read: fills count on the snapshot until it shows them, and permitted opens are settled."""
        self.fills.absorb(entries, held, newest)
        self.permitted.settle([fields.get("plan_id", "") for _entry_id, fields in entries])

    def _ledger(self, symbol: str, flat: list[str] | None) -> tuple[LedgerPosition | None, bool]:
        """(the position or None, whether it parsed): shared.ledger tells absent from unreadable."""
        entry = ledger.from_script(symbol, flat)
        if entry.unreadable:
            self.log.warning("ledger_unreadable", symbol=symbol, error=entry.error)
        return entry.position, not entry.unreadable

    def _last_exec_ms(self, symbol: str, raw: str | None) -> int | None:
        last_exec_ms = freshness.stored_ms(raw, self._now_ms())
        if raw is not None and last_exec_ms is None:  # garbled, or far in the future: as absent, said in the log
            self.log.warning("cooldown_key_unreadable", symbol=symbol, value=raw[:40])
        return last_exec_ms

    def _verdict(self, plan: Plan, reads: PlanReads) -> Verdict:
        if not reads.ledger_readable:
            # Reconcile rewrites the ledger from the exchange, which heals this like any mismatch.
            return deny(Reason.RECONCILE_REQUIRED_QTY_MISMATCH, ledger="unreadable")
        now_ms = self._now_ms()
        return decide(plan, reads.snapshot, reads.ledger, reads.last_exec_ms, self.rules.find(plan.symbol),
                      self.policy, now_ms, self.permitted.side_on(plan.symbol, now_ms, other_than=plan.plan_id))

    def _permit(self, plan: Plan, verdict: Verdict, reads: PlanReads) -> P33Permit:
        held = reads.snapshot
        return P33Permit(
            plan_id=plan.plan_id, allow=verdict.allow, symbol=plan.symbol, reason=verdict.reason,
            context=verdict.context, created_at=self.clock(), safe_qty=verdict.safe_qty,
            exchange_position_amt=held.amount(plan.symbol) if held else ZERO,
            ledger_amt=reads.ledger.amount if reads.ledger else ZERO, plan_digest=plan.digest,
        )

    def _record(self, plan: Plan, verdict: Verdict) -> None:
        metrics.DECISIONS.labels(allow=str(verdict.allow).lower(), reason=verdict.reason.value).inc()
        log = self.log.info if verdict.allow else self.log.warning
        log("PERMIT_DECISION", permit="p33", plan_id=plan.plan_id, symbol=plan.symbol, allow=verdict.allow,
            reason=verdict.reason.value, safe_qty=format_decimal(verdict.safe_qty), context=verdict.context)

    def _skip(self, plan: Plan, why: str) -> None:
        metrics.PLANS_SKIPPED.labels(reason=why).inc()
        self.log.info("plan_skipped", plan_id=plan.plan_id, symbol=plan.symbol, reason=why)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)


@dataclass(frozen=True)
class OpenRecord:
    """An open P3.3 permitted, as kept beside its permit (keys.p33_permitted_open)."""

    symbol: str
    side: Side
    at_ms: int

    def to_json(self) -> str:
        return json.dumps({"symbol": self.symbol, "side": self.side.value, "at_ms": self.at_ms})

    @classmethod
    def parse(cls, raw: str | None) -> OpenRecord | None:
        """None when absent (expired since the scan) or unreadable."""
        try:
            data = json.loads(raw) if raw is not None else None
            return cls(str(data["symbol"]), Side(data["side"]), int(data["at_ms"])) if isinstance(data, dict) else None
        except (ValueError, TypeError, KeyError):
            return None


def _newest_id(client: redis.Redis, stream: str) -> str:
    newest = client.xrevrange(stream, count=1)
    return newest[0][0] if newest else "0-0"


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[0::2], flat[1::2]))
