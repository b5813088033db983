"""Reads made the moment new entries arrive, in the round trip that waits for them.

A consumer blocked in XREADGROUP sends, in the same pipeline, a script call that a handler
asked for. Redis runs a blocked client's next pipelined command as soon as the block ends, so
the script reads the handler's state right when the entries are delivered and both replies
come back in one wake-up: the handler saves a round trip per batch.

The script finds the entries just delivered by listing this consumer's pending entries after
the last one it was given before (XPENDING ... consumer), so it reads for exactly those; keys it
derives from an entry's fields are built inside the script, which needs a standalone Redis (the
fleet's), not a cluster. What it returns is advice: a handler uses it only when it matches the
batch it is handed (same entries, same inputs), and otherwise reads as it always did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shared.lua import LuaScript

# The script prelude. KEYS[1] stream; ARGV[1] group ARGV[2] consumer ARGV[3] first id (inclusive, or "-")
# ARGV[4] count. A handler's own KEYS and ARGV follow (from KEYS[2] and ARGV[5]).
# delivered(): {entry id, {field = value}} of each entry pending for this consumer from ARGV[3] on, oldest first.
# symbol(raw): a plan's symbol as the schema normalises it (trimmed, upper case), or nil.
PRELUDE = """
local function delivered()
  local out = {}
  for _, pending in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], '+', ARGV[4], ARGV[2])) do
    local entry = redis.call('XRANGE', KEYS[1], pending[1], pending[1])[1]
    if entry then
      local fields = {}
      for i = 1, #entry[2], 2 do fields[entry[2][i]] = entry[2][i + 1] end
      out[#out + 1] = {entry[1], fields}
    end
  end
  return out
end
local function symbol(raw)
  if type(raw) ~= 'string' then return nil end
  return string.upper(string.match(raw, '^%s*(.-)%s*$'))
end
"""
FIRST_OWN_KEY = 2
FIRST_OWN_ARG = 5


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


def first_after(entry_id: str) -> str:
    """The smallest entry id after entry_id: the inclusive start of what arrived since."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"
