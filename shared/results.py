"""Ending a plan: exactly one result, written with its ledger and cooldown effects in one script call.

The script writes only when the plan has no result yet and the symbol's ledger still holds
what the new position was computed from (compare-and-set); the ledger arithmetic stays in
Python with Decimal. A refusal (no fill) needs no read: one round trip. A fill needs the
ledger; callers that read it earlier (the executor, with the permits) pass it in.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, replace

import redis

from shared import keys, ledger
from shared.freshness import stored_ms
from shared.logging import get_logger
from shared.lua import SAFE_READS, LuaScript
from shared.schema.result import PlanResult

RESULT_MARKER_TTL_S = 7 * 24 * 3600
NO_LEDGER_WRITE = "-"
EXECUTED = "executed"  # a result marker's outcome for a plan whose order executed (else the reason)
UNKNOWN = "-"  # ... for a plan ended unexecuted while its order may exist (given up before its fate was learnt)
UNDECODABLE = "it does not read back as stored (bytes that are not UTF-8)"
LEDGER_ATTEMPTS = 5  # the ledger moving under us more often than this is not contention but a value we misread
_log = get_logger(component="results")

# KEYS: result-marker result-stream ledger cooldown sending-hash release...
# ARGV: now-ms marker-ttl-s call-token result-field-count result-fields... ledger-mode expected-field-count
#       expected-fields... new-field-count new-fields... cooldown(0|1) sending-field('' for none)
# ledger-mode: '-' leaves the ledger alone (no fill, or a ledger that does not parse: reconcile rewrites it from the
# exchange); 'w' checks it against the expected fields and writes the new ones (none: the position is flat).
# `release`: keys deleted once the plan has its result (the caller's claims), and the plan's own field of the
# symbol's sending hash (shared.sending).
# The result marker holds now-ms and the call's token (`<hex> <outcome> [<plan digest>]`, see marker_outcome): the
# same call sent again (redis-py retries a command whose reply was lost) finds its own marker and answers 1, as the
# first run did, not "already had a result".
# Reply: 1 written (by this call), 0 the plan already has a result, -1 the ledger changed (nothing written or
# released).
FINISH = LuaScript(SAFE_READS + """
local function release()
  for j = 6, #KEYS do redis.call('DEL', KEYS[j]) end
  if ARGV[#ARGV] ~= '' then redis.call('HDEL', KEYS[5], ARGV[#ARGV]) end
end
local own = ARGV[1] .. ' ' .. ARGV[3]
local marker = text_of(KEYS[1])
if marker then
  release()
  if marker == own then return 1 end
  return 0
end
local i = 4
local function take()
  local n = tonumber(ARGV[i]); local items = {}
  for j = i + 1, i + n do items[#items + 1] = ARGV[j] end
  i = i + n + 1
  return items
end
local result = take()
local mode = ARGV[i]; i = i + 1
local expected = take()
local new = take()
if mode == 'w' then
  local current = fields_of(KEYS[3])
  if not current or #current ~= #expected then return -1 end
  local want = {}
  for j = 1, #expected, 2 do want[expected[j]] = expected[j + 1] end
  for j = 1, #current, 2 do
    if want[current[j]] ~= current[j + 1] then return -1 end
  end
end
redis.call('SET', KEYS[1], own, 'EX', ARGV[2])
result[#result + 1] = 'ts_ms'
result[#result + 1] = ARGV[1]
redis.call('XADD', KEYS[2], '*', unpack(result))
if mode == 'w' then
  redis.call('DEL', KEYS[3])
  if #new > 0 then redis.call('HSET', KEYS[3], unpack(new)) end
end
if ARGV[i] == '1' then redis.call('SET', KEYS[4], ARGV[1]) end
release()
return 1
""")


class LedgerUnstable(RuntimeError):
    """The ledger never held what was just read (e.g. a value that does not survive decoding): the plan stays
    pending, is retried, and past its deliveries ends as gave_up_after_retries with the reason logged."""


@dataclass(frozen=True)
class Effects:
    fill: ledger.Fill | None = None
    cooldown_symbol: str | None = None


def has_result(client: redis.Redis, plan_id: str) -> bool:
    return bool(client.exists(keys.plan_result_marker(plan_id)))


def marker_ms(raw: str | None) -> int | None:
    """When a result marker says its result was written (ms; FINISH writes `<ms> <call token>`); None when absent
    or unreadable."""
    return stored_ms((raw or "").split(" ", 1)[0])


def marker_outcome(raw: str | None) -> str | None:
    """What a result marker says the plan came to: EXECUTED, or the reason it did not execute. None when absent, or
    a marker that does not say (one written before markers said, or by shared.sending's orphan release, whose order
    may or may not have filled)."""
    words = (raw or "").split(" ")
    return words[2] if len(words) in (3, 4) and words[2] else None


def marker_digest(raw: str | None) -> str | None:
    """The digest of the plan a result marker ended (`<ms> <token> <outcome> <digest>`); None when it does not say."""
    words = (raw or "").split(" ")
    return words[3] if len(words) == 4 and words[3] else None


def ended_unexecuted(raw: str | None) -> bool:
    """Whether a result marker says its plan ended with no order executed: a refusal's reason. Not UNKNOWN (given up
    while its order may exist), nor a marker that does not say (an orphan's, an earlier version's)."""
    return marker_outcome(raw) not in (None, UNKNOWN, EXECUTED)


def with_results(client: redis.Redis, plan_ids: list[str]) -> set[str]:
    """Those of these plans that have their result, in one read."""
    if not plan_ids:
        return set()
    markers = client.mget([keys.plan_result_marker(plan_id) for plan_id in plan_ids])
    return {plan_id for plan_id, marker in zip(plan_ids, markers) if marker is not None}


def finish_plan(client: redis.Redis, result: PlanResult, effects: Effects = Effects(), now_ms: int | None = None,
                ledger_seen: dict[str, str] | None = None, release: list[str] | tuple[str, ...] = (),
                sending: str | None = None, order_may_exist: bool = False, plan_digest: str = "") -> bool:
    """Write the plan's one result; False (and nothing written) when it already has one.

    `ledger_seen`: the fill's ledger hash as the caller read it earlier; re-read only if it changed.
    `release`: keys to delete in the same call once the plan has its result (written now or before);
    `sending`: the symbol's sending hash, whose field for this plan goes too.
    `order_may_exist`: the plan ends unexecuted while an order sent for it may have filled (its marker says UNKNOWN).
    `plan_digest`: the plan's (Plan.digest), which the marker carries: another entry under the plan_id with other
    content is told from a redelivery of this one (marker_digest)."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    # This call's token, in its result marker: a resent FINISH knows its own write; readers learn the outcome.
    token = f"{secrets.token_hex(8)} {_outcome(result, order_may_exist)}" + (f" {plan_digest}" if plan_digest else "")
    fill = effects.fill
    seen = ledger.parse(fill.symbol, ledger_seen) if fill is not None and ledger_seen is not None else None
    failed_against: dict[str, str] | None = None  # the ledger as read for the last write it refused
    for _attempt in range(LEDGER_ATTEMPTS):
        if fill is not None and seen is None:
            seen = ledger.read_entry(client, fill.symbol)
            if failed_against and seen.raw == failed_against and not seen.unreadable:  # ({} is absent: no bytes)
                # Read the same again: the ledger never holds what it reads as (bytes that do not decode, made
                # readable on the way): no compare can ever pass. Written as for an unreadable ledger: the result
                # without the fill; reconcile rewrites the ledger from the exchange.
                seen = replace(seen, error=UNDECODABLE)
        written = FINISH(client, [*_keys(result, effects), sending or keys.executor_sending(result.symbol), *release],
                         [*_args(result, effects, seen, now_ms, token), result.plan_id if sending else ""])
        if written != -1:
            if written == 1 and seen is not None and seen.unreadable:
                _log.warning("ledger_unreadable_fill_not_recorded", plan_id=result.plan_id, symbol=seen.symbol,
                             error=seen.error, detail="the result is written; reconcile rewrites the ledger")
            return bool(written)
        failed_against = seen.raw if seen is not None else None
        seen = None  # the ledger moved between our read and the write (or never held what we read): read it again
    raise LedgerUnstable(f"the {fill.symbol} ledger changed on each of {LEDGER_ATTEMPTS} writes of plan {result.plan_id}")


def _outcome(result: PlanResult, order_may_exist: bool) -> str:
    """What the result marker says the plan came to: EXECUTED, UNKNOWN (`order_may_exist`: ended unexecuted while an
    order sent for it may have filled), or the reason it did not execute."""
    if result.executed:
        return EXECUTED
    return UNKNOWN if order_may_exist or result.reason is None else result.reason.value


def _keys(result: PlanResult, effects: Effects) -> list[str]:
    symbol = effects.fill.symbol if effects.fill else result.symbol
    return [keys.plan_result_marker(result.plan_id), keys.Stream.APPLY_RESULT, keys.position_ledger(symbol),
            keys.cooldown_last_exec(effects.cooldown_symbol or result.symbol)]


def _args(result: PlanResult, effects: Effects, seen: ledger.LedgerEntry | None, now_ms: int, token: str) -> list[str]:
    args: list[str] = [str(now_ms), str(RESULT_MARKER_TTL_S), token]
    args += _counted(result.to_fields())
    if effects.fill is None or seen is None or seen.raw is None or seen.unreadable:
        # No fill; or a ledger no fill can be added to: the order happened all the same, its result is written.
        args += [NO_LEDGER_WRITE, "0", "0"]
    else:
        new_position = ledger.after_fill(seen.position, effects.fill, now_ms)
        args += ["w", *_counted(seen.raw), *_counted(new_position.to_hash() if new_position else {})]
    args.append("1" if effects.cooldown_symbol is not None else "0")
    return args


def _counted(fields: dict[str, str]) -> list[str]:
    flat = [item for pair in fields.items() for item in pair]
    return [str(len(flat)), *flat]
