"""The permit codec: issue with a TTL and a wake-up for the waiting executor, consume exactly once."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

import redis
from pydantic import ValidationError

from shared import keys
from shared.lua import LuaScript
from shared.schema.permit import PERMIT_JSON_MAX, P32Permit, P33Permit, Permit


USED_MARKER_TTL_S = 24 * 3600


class PermitKind(str, Enum):
    P32 = "p32"
    P33 = "p33"

    def key(self, plan_id: str) -> str:
        return keys.permit_p32(plan_id) if self is PermitKind.P32 else keys.permit_p33(plan_id)

    @property
    def model(self) -> type[Permit]:
        return P32Permit if self is PermitKind.P32 else P33Permit


class PermitError(ValueError):
    """A permit value that is not a valid permit (treated as a denial by callers)."""


def kind_of(permit: Permit) -> PermitKind:
    return PermitKind.P32 if isinstance(permit, P32Permit) else PermitKind.P33


# KEYS: permit ready-list [record]; ARGV: permit-json ttl-s kind [record-value record-ttl-ms]. The permit, its
# waiter's wake-up and, when given, a record the issuer keeps beside it (longer lived), atomically.
ISSUE = LuaScript("""
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[2])
if KEYS[3] then redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5]) end
return 1
""")


@dataclass(frozen=True)
class Record:
    """A key written in the same call as a permit, so one never exists without the other."""

    key: str
    value: str
    ttl_ms: int


def issue(client: redis.Redis, permit: Permit, ttl_seconds: int) -> None:
    """Write the permit with its TTL and wake any waiter, in one script call."""
    ISSUE(client, *_issue_call(permit, ttl_seconds, None))


def issue_many(client: redis.Redis, issued: Iterable[Permit], ttl_seconds: int,
               records: Mapping[str, Record] | None = None) -> None:
    """Several permits in one round trip; each is written with its wake-up and its plan's record (by plan id),
    if any, atomically."""
    records = records or {}
    calls = [_issue_call(permit, ttl_seconds, records.get(permit.plan_id)) for permit in issued]
    if calls:
        ISSUE.many(client, calls)


def _issue_call(permit: Permit, ttl_seconds: int, record: Record | None) -> tuple[list[str], list[object]]:
    kind = kind_of(permit)
    call_keys, args = [kind.key(permit.plan_id), keys.permit_ready(permit.plan_id)], [permit.to_json(), ttl_seconds, kind.value]
    if record is not None:
        call_keys.append(record.key)
        args += [record.value, record.ttl_ms]
    return call_keys, args


def decode(kind: PermitKind, raw: bytes | str) -> Permit:
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        permit = kind.model.model_validate_json(text)
    except ValidationError as exc:
        named = ", ".join(".".join(map(str, e["loc"])) or "permit" for e in exc.errors(include_url=False))
        raise PermitError(f"{kind.value} permit is invalid ({named})") from None
    if len(text) <= PERMIT_JSON_MAX:  # a result carries this text, not a second serialisation (Permit.wire_json)
        permit.__dict__["wire_json"] = text
    return permit


def peek(client: redis.Redis, kind: PermitKind, plan_id: str) -> Permit | None:
    raw = client.get(kind.key(plan_id))
    return None if raw is None else decode(kind, raw)


def consume(client: redis.Redis, kind: PermitKind, plan_id: str) -> Permit | None:
    """Take the permit: of any number of concurrent callers exactly one gets it."""
    return consume_all(client, plan_id, [kind])[0]


# Lua: taking a permit is SET NX of its used marker, then reading it. Scripts that take permits
# together with other reads (the executor's) include this, so there is one way to take a permit.
# The marker holds the taker's attempt token: when the client sends the same call again (its reply
# was lost with a dropped connection), the call that took the permit still wins it; any other loses.
TAKE_FUNCTION = """
local function take_permit(used_key, permit_key, used_ttl, attempt)
  local won = redis.call('SET', used_key, attempt, 'NX', 'EX', used_ttl) and 1 or 0
  if won == 0 and redis.call('GET', used_key) == attempt then won = 1 end
  return won, redis.call('GET', permit_key)
end
"""
# KEYS: used-marker permit, per kind; ARGV: used-ttl-s attempt. Reply: won (0|1), permit, per kind.
CONSUME = LuaScript(TAKE_FUNCTION + """
local reply = {}
for i = 1, #KEYS, 2 do
  local won, raw = take_permit(KEYS[i], KEYS[i + 1], ARGV[1], ARGV[2])
  reply[#reply + 1] = won
  reply[#reply + 1] = raw
end
return reply
""")


def consume_all(client: redis.Redis, plan_id: str, kinds: Iterable[PermitKind]) -> list[Permit | None]:
    """Take several permits in one script call, so two takers cannot each get one of them.

    Taking marks the permit used (SET NX) and reads it; the permit stays readable for
    operators until its TTL, but no second taker can use it.
    """
    kinds = list(kinds)
    return taken(kinds, CONSUME(client, consume_keys(plan_id, kinds), [USED_MARKER_TTL_S, new_attempt("consume")]))


def new_attempt(taker: str) -> str:
    """A token naming one attempt to take permits: the taker and a random part."""
    return f"{taker}/{os.urandom(8).hex()}"  # 64 random bits (uuid4().hex[:16] had 60), at a fifth of the cost


def consume_keys(plan_id: str, kinds: Iterable[PermitKind]) -> list[str]:
    """(used marker, permit) per kind, as CONSUME and TAKE_FUNCTION's callers pass them."""
    return [key for kind in kinds for key in (keys.permit_used(kind.value, plan_id), kind.key(plan_id))]


def taken(kinds: list[PermitKind], replies: list) -> list[Permit | None]:
    """The permits won, from replies that start with (won, permit) per kind, as CONSUME's do."""
    mine = replies[: 2 * len(kinds)]
    return [decode(kind, raw) if won and raw is not None else None
            for kind, won, raw in zip(kinds, mine[0::2], mine[1::2])]
