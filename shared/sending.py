"""Plans the executor may be sending on a symbol right now: reconcile leaves such a symbol alone.

`keys.executor_sending(symbol)` is a hash, plan id -> the Redis time (ms) until which that plan counts.
The executor that holds a plan's claim writes the plan's field when it starts on it and renews it when
it takes the permits; once it has written the order marker (an order may be out), the field lasts as long
as the marker. It deletes its own field, and only its own, when the plan ends (or is let go with no order
out). So one plan finishing never hides another's send on the symbol, and the field of an executor that
died before taking the permits stops counting once its time is up (the hash itself expires when nobody
writes to it; a write never shortens it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from shared import keys
from shared.freshness import redis_ms
from shared.lua import LuaScript
from shared.runtime.deadletter import dead_letter_fields

if TYPE_CHECKING:
    from shared.exchange.target import ExchangeSettings

SEND_MARGIN_S = 1.0  # besides the requests below, nothing lies between taking the permits and signing
REQUESTS_BEFORE_SENDING = 2  # at most a mark price and setting the open's leverage, each within the timeout
FINALITY_MARGIN_MS = 1000  # clock differences between Redis and the exchange, and the request's own travel
PENDING_SCAN = 1000  # the executor's pending entries read to tell an orphan; more than this: none is told
# After a permit's TTL, how long the governor and P3.3 still count an open they permitted: a permit taken just
# before its TTL may still be sent, and accepted, an unclear window later (ExchangeSettings refuses settings whose
# window is longer), and the snapshot shows the fill a moment after.
INFLIGHT_GRACE_MS = 60_000
# Of that grace, what the snapshot needs to show a fill accepted at the window's end: the exchange's view catching
# up (SURELY_SHOWN_MS) and a snapshot fetched after it, within GOV_SNAPSHOT_MAX_AGE_SEC's default (older: no open).
FILL_SHOWN_WITHIN_MS = 11_000

# Lua: mark_sending(hash, plan id, seconds): the plan counts for at least `seconds` from now. A mark never
# shortens one already there (a plan picked up again keeps the time its order marker gave it) nor the hash's
# expiry (the other plans' fields). Scripts that use it include this text.
MARK_FUNCTION = """
local function mark_sending(key, plan_id, seconds)
  local now = redis.call('TIME')
  local until_ms = now[1] * 1000 + math.floor(now[2] / 1000) + seconds * 1000
  local current = tonumber(redis.call('HGET', key, plan_id) or '') or 0
  if until_ms > current then redis.call('HSET', key, plan_id, string.format('%d', until_ms)) end
  if redis.call('TTL', key) < seconds then redis.call('EXPIRE', key, seconds) end
end
"""


def busy(client: redis.Redis, symbol: str) -> bool:
    """Whether a plan on the symbol may be being sent now. Works in a WATCHed pipeline (immediate mode)."""
    fields = client.hgetall(keys.executor_sending(symbol))
    if not fields:
        return False
    now_ms = redis_ms(client)
    return any(not until.isdigit() or int(until) > now_ms for until in fields.values())  # unreadable: busy


def send_within_s(exchange: "ExchangeSettings") -> float:
    """The longest the executor may take from taking the permits to sending (a mark price request, setting the
    leverage)."""
    return _send_within_s(exchange.request_timeout_s)


def unclear_window_ms(exchange: "ExchangeSettings") -> int:
    """From an order marker's time until the exchange can no longer accept the order it stands for: the send
    deadline, then recvWindow after signing, and a margin."""
    return _window_ms(exchange.request_timeout_s, exchange.recv_window_ms)


def check_within_grace(request_timeout_s: float, recv_window_ms: int) -> None:
    """Refuse exchange settings under which an order could still be accepted after the governor and P3.3 stopped
    counting its open (INFLIGHT_GRACE_MS after the permit's TTL): the caps would then be exceeded."""
    window_ms = _window_ms(request_timeout_s, recv_window_ms)
    longest_ms = INFLIGHT_GRACE_MS - FILL_SHOWN_WITHIN_MS
    if window_ms > longest_ms:
        raise ValueError(
            f"EXCHANGE_RECV_WINDOW_MS ({recv_window_ms}) + 2 x EXCHANGE_REQUEST_TIMEOUT_S ({request_timeout_s:g} s) + 2 s "
            f"= {window_ms / 1000:g} s must be at most {longest_ms // 1000} s: an order could still be accepted, or not "
            "yet be in the snapshot, after the governor and P3.3 stopped counting its open against the caps")


def max_unclear_window_ms() -> int:
    """unclear_window_ms at the largest settings any daemon may run with (EXCHANGE_REQUEST_TIMEOUT_S and
    EXCHANGE_RECV_WINDOW_MS are bounded): the executor's may differ from the caller's."""
    from shared.exchange.target import MAX_RECV_WINDOW_MS, MAX_REQUEST_TIMEOUT_S

    return _window_ms(MAX_REQUEST_TIMEOUT_S, MAX_RECV_WINDOW_MS)


def _send_within_s(request_timeout_s: float) -> float:
    return REQUESTS_BEFORE_SENDING * request_timeout_s + SEND_MARGIN_S


def _window_ms(request_timeout_s: float, recv_window_ms: int) -> int:
    return int(_send_within_s(request_timeout_s) * 1000) + recv_window_ms + FINALITY_MARGIN_MS


@dataclass(frozen=True)
class Marker:
    """An order marker: `<client order id> <attempt> <Redis ms when the permits were taken>`, then on a line each
    the two permits taken (P3.2's, P3.3's), for the result of whichever attempt learns the order's outcome."""

    client_order_id: str
    attempt: str
    marked_ms: int  # 0 when the marker does not say (written by an earlier version: long ago)
    permits: tuple[str, str] | None = None  # as taken (JSON); None in a marker of an earlier version

    @classmethod
    def parse(cls, raw: str) -> "Marker":
        head, *carried = raw.split("\n", 2)
        words = head.split(" ")
        marked = words[2] if len(words) > 2 and words[2].isdigit() else "0"
        return cls(words[0], words[1] if len(words) > 1 else "", int(marked),
                   (carried[0], carried[1]) if len(carried) == 2 else None)


# KEYS: sending hash, claim, result marker, dead-letter stream; ARGV: plan id, result marker value, its TTL (s), then
# the dead letter's fields (flat). Only while no executor holds the plan and it has no result: ends the plan (its
# result marker: a later entry under its plan id is a duplicate_plan, and a late FINISH records no fill over the
# ledger reconcile adopts from the exchange), lets go of its mark, and says so in a dead letter.
_RELEASE_ORPHAN = LuaScript("""
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
redis.call('XADD', KEYS[4], '*', unpack(ARGV, 4))
return 1
""")

ORPHAN_REASON = "plan_entry_deleted"


def release_orphans(client: redis.Redis, symbol: str, window_ms: int) -> list[str]:
    """Let go of the sending marks of plans on `symbol` that no executor will ever end: an order marker (an order
    may be out, written by a version that dates it), no result, no executor holding the plan, the exchange past
    accepting its order (`window_ms` after the marker), and no pending entry of the executor's group for it (its
    apply.plan entry was deleted or trimmed while pending; the consumer dead-lettered it, having nothing to
    handle). Such a mark would last the marker's 7 days, and reconcile would leave the symbol's ledger unhealed so
    long. Each plan is ended (its result marker, no result entry: nothing is known of its side or size here) and
    said in a dead letter (reason plan_entry_deleted); reconcile then adopts what the exchange holds. Returns the
    plan ids let go."""
    marks = client.hgetall(keys.executor_sending(symbol))
    if not marks:
        return []
    plan_ids = list(marks)
    pipe = client.pipeline(transaction=False)
    for plan_id in plan_ids:
        pipe.exists(keys.plan_claim(plan_id), keys.plan_result_marker(plan_id))
        pipe.get(keys.plan_order_marker(plan_id))
    replies = pipe.execute()
    now_ms = redis_ms(client)
    candidates: dict[str, Marker] = {}
    for plan_id, held, raw in zip(plan_ids, replies[0::2], replies[1::2]):
        if held or raw is None:
            continue  # being worked on, ended, or no order out (that mark ends with the claim's TTL)
        marker = Marker.parse(raw)
        if marker.marked_ms and marker.marked_ms + window_ms <= now_ms:
            candidates[plan_id] = marker
    if not candidates:
        return []
    from shared.results import RESULT_MARKER_TTL_S  # a plan ended here is marked as long as one with its result

    pending = _pending_plan_ids(client)
    if pending is None:
        return []
    released = []
    for plan_id, marker in candidates.items():
        if plan_id in pending:
            continue  # its entry is delivered again: the executor resolves it
        detail = {"plan_id": plan_id, "symbol": symbol, "client_order_id": marker.client_order_id,
                  "detail": "its apply.plan entry was deleted while its order's outcome was unknown; reconcile "
                            "adopts what the exchange holds"}
        dead = dead_letter_fields(keys.Stream.APPLY_PLAN, "", {}, ORPHAN_REASON, detail, keys.Group.INTENT_EXECUTOR, "")
        if _RELEASE_ORPHAN(client, [keys.executor_sending(symbol), keys.plan_claim(plan_id),
                                    keys.plan_result_marker(plan_id), keys.Stream.DEAD_LETTER],
                           [plan_id, f"{now_ms} {ORPHAN_REASON}", RESULT_MARKER_TTL_S,
                            *[item for pair in dead.items() for item in pair]]):
            released.append(plan_id)
    return released


def _pending_plan_ids(client: redis.Redis) -> set[str] | None:
    """The plan ids of the executor group's pending entries; None when that cannot be told (too many, or one whose
    plan id does not read)."""
    from shared.schema import EntryError, Plan  # the schema imports more than this module needs elsewhere

    try:
        pending = client.xpending_range(keys.Stream.APPLY_PLAN, keys.Group.INTENT_EXECUTOR, min="-", max="+",
                                        count=PENDING_SCAN)
    except redis.ResponseError:  # no such stream or group: nothing is pending
        return set()
    if len(pending) >= PENDING_SCAN:
        return None
    pipe = client.pipeline(transaction=False)
    for item in pending:
        pipe.xrange(keys.Stream.APPLY_PLAN, item["message_id"], item["message_id"])
    plan_ids = set()
    for found in pipe.execute():
        if not found:
            continue  # deleted: it stands for no plan any more
        [(_entry_id, fields)] = found
        try:
            plan_ids.add(Plan.from_fields(fields).plan_id)
        except EntryError:
            plan_id = fields.get("plan_id")
            if not plan_id:
                return None
            plan_ids.add(plan_id.strip())
    return plan_ids
