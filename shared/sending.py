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

import redis

from shared import keys

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
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    return any(not until.isdigit() or int(until) > now_ms for until in fields.values())  # unreadable: busy
