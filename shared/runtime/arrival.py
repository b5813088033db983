"""Reads made the moment new entries arrive, in the round trip that waits for them.

A consumer blocked in XREADGROUP sends, in the same pipeline, a script call that a handler
asked for. Redis runs a blocked client's next pipelined command as soon as the block ends, so
the script reads the handler's state right when the entries are delivered and both replies
come back in one wake-up: the handler saves a round trip per batch.

The script finds the entries just delivered as those after the last one this consumer was given,
read backwards from the stream's end (XREVRANGE starts there at once, where XRANGE would first
walk the stream node from its start). Usually those are exactly the entries delivered; they may
also hold entries another consumer of the group was given, or that were added after the read
(Redis may serve other clients between the wake-up and the script): read for too, unused. When
more than a batch lie there (a backlog), the script finds none. At start the consumer takes the
group's last delivered id as the last one given. Keys it derives from an entry's fields are built
inside the script, which needs a standalone Redis (the fleet's), not a cluster; fields it reads
are bounded in length before any pattern touches them (an entry is not validated yet). What it
returns is advice: a handler uses it only when it matches the batch it is handed (same entries,
same inputs), and otherwise reads as it always did. A reader hears None when the call failed, and
again after every batch, however the read or the batch ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import redis

from shared.lua import LuaScript

# The script prelude. KEYS[1] stream; ARGV[1] "(" and the last entry id the consumer was given; ARGV[2] the
# read's count. A handler's own KEYS and ARGV follow (from KEYS[2] and ARGV[3]).
# delivered(): {entry id, {field = value}} of each entry after ARGV[1], oldest first; none past a batch.
# plan_of(fields): the plan id and symbol (trimmed, upper case, as the schema has them) of a plan entry
#   whose decision is EXECUTE, or nil: only such plans need a permit, so only they are read for.
PRELUDE = """
local function delivered()
  local newest = redis.call('XREVRANGE', KEYS[1], '+', ARGV[1], 'COUNT', ARGV[2] + 1)
  if #newest > tonumber(ARGV[2]) then return {} end
  local out = {}
  for i = #newest, 1, -1 do
    local fields = {}
    for j = 1, #newest[i][2], 2 do fields[newest[i][2][j]] = newest[i][2][j + 1] end
    out[#out + 1] = {newest[i][1], fields}
  end
  return out
end
local function word(raw, longest)
  if type(raw) ~= 'string' or #raw > longest then return nil end
  return string.match(raw, '^%s*(%S+)%s*$')
end
local function plan_of(fields)
  local plan_id, sym, decision = word(fields.plan_id, 128), word(fields.symbol, 64), word(fields.decision, 16)
  if not plan_id or not sym or not decision or string.upper(decision) ~= 'EXECUTE' then return nil end
  return plan_id, string.upper(sym)
end
"""


@dataclass(frozen=True)
class ArrivalCall:
    """A handler's script (built on PRELUDE) with its own keys and args."""

    script: LuaScript
    keys: list[str]
    args: list[object]


class ArrivalReader(Protocol):
    """What a batch handler gives the consumer to read on arrival."""

    def arrival_call(self) -> ArrivalCall | None:
        """The call to send with the next blocking read (None: nothing to read)."""

    def arrived(self, reply: object | None) -> None:
        """The script's reply for the batch about to be handed over; None after it, or when the call failed."""


@dataclass(frozen=True)
class Sent:
    """An arrival call as sent, to read its reply (and send it again if need be)."""

    script: LuaScript
    keys: list
    args: list

    @property
    def command(self) -> tuple:
        return self.script.command(self.keys, self.args)

    def reply(self, client: redis.Redis, reply: object) -> object:
        """The script's reply, or the error it ended with. A script a restarted Redis lost is sent again: it
        reads for what lies after the last entry given, as it would have."""
        if isinstance(reply, redis.exceptions.NoScriptError):
            try:
                return self.script(client, self.keys, self.args)
            except redis.ResponseError as exc:
                return exc
        return reply


def sent(call: ArrivalCall, stream: str, last_given: str, count: int) -> Sent:
    """The call to send right after the blocking read of `stream` (up to `count` entries)."""
    return Sent(call.script, [stream, *call.keys], [f"({last_given}", count, *call.args])
