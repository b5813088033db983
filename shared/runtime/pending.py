"""A consumer's hold on the group's pending entries: claiming those left idle, keeping its own claim through a long
batch, and ending those deleted from the stream while pending (each with its dead letter, written in the same script
call as its ack, so a reply lost with the connection loses none and a retry writes none twice).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis

from shared import keys, redis_wire
from shared.lua import LuaScript
from shared.runtime.handling import DELETED_DETAIL, DELETED_REASON

if TYPE_CHECKING:
    from shared.runtime.consumer import ConsumerConfig

Batch = list[tuple[str, dict[str, str] | None]]

# deleted(entry id): the dead letter of an entry deleted from the stream while pending, with the fields
# shared.runtime.deadletter writes. KEYS[1] the stream, KEYS[2] the dead-letter stream; ARGV[1] group, ARGV[2]
# consumer, ARGV[3] and ARGV[4] the dead letter's reason and detail.
_DELETED_LETTER = """
local function deleted(entry_id)
  local now = redis.call('TIME')
  redis.call('XADD', KEYS[2], '*', 'source_stream', KEYS[1], 'entry_id', entry_id, 'reason', ARGV[3],
             'detail', ARGV[4], 'fields', '{}', 'group', ARGV[1], 'consumer', ARGV[2],
             'ts_ms', string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000)))
end
"""
# KEYS, ARGV[1..4] as _DELETED_LETTER; ARGV[5]: how many of the consumer's pending entries to look at. Acks those
# no longer in the stream, each with its dead letter; returns how many.
ACK_DELETED = LuaScript(_DELETED_LETTER + """
local acked = 0
for _, pending in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', ARGV[5], ARGV[2])) do
  if #redis.call('XRANGE', KEYS[1], pending[1], pending[1]) == 0 and redis.call('XACK', KEYS[1], ARGV[1], pending[1]) == 1 then
    deleted(pending[1])
    acked = acked + 1
  end
end
return acked
""")
DELETED_SCAN = 1000
# KEYS, ARGV[1..4] as _DELETED_LETTER; ARGV[5..7]: min idle ms, start id, count. XAUTOCLAIM; the entries Redis 7
# drops from the pending list as deleted (its reply's third element, named to this call alone) get their dead
# letters in the same call, so a reply lost with the connection loses none and a retry writes none twice. The reply
# is XAUTOCLAIM's own.
CLAIM_IDLE = LuaScript(_DELETED_LETTER + """
local reply = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[5], ARGV[6], 'COUNT', ARGV[7])
for _, entry_id in ipairs(reply[3] or {}) do deleted(entry_id) end
return reply
""")
# KEYS: the stream; ARGV: group, consumer, n, n entry ids to ack, then entry ids to keep. Acks the first, then
# re-claims each of the others still pending to this consumer (JUSTID: the delivery count stays); returns those.
KEEP_CLAIM = LuaScript("""
local group, me, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
if n > 0 then redis.call('XACK', KEYS[1], group, unpack(ARGV, 4, 3 + n)) end
local kept = {}
for i = 4 + n, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], group, ARGV[i], ARGV[i], 1)[1]
  if pending and pending[2] == me then
    redis.call('XCLAIM', KEYS[1], group, me, 0, ARGV[i], 'JUSTID')
    kept[#kept + 1] = ARGV[i]
  end
end
return kept
""")


def claim_idle(client: redis.Redis, config: ConsumerConfig, start_id: str,
               on_retry: Callable[[Exception], object] | None = None) -> tuple[str, Batch, int, list[str]]:
    """XAUTOCLAIM from start_id, read raw as XREADGROUP is (an entry's fields are told apart when one is given twice):
    (where the next claim goes on, the entries claimed, how many Redis 6.2 answered nil for, the ids Redis 7 dropped
    as deleted, already dead-lettered)."""
    return redis_wire.claimed(CLAIM_IDLE(client, [config.stream, keys.Stream.DEAD_LETTER],
                                         [*_deleted_letter_args(config), config.claim_idle_ms, start_id, config.batch],
                                         on_retry=on_retry))


def keep_claim(client: redis.Redis, config: ConsumerConfig, acks: list[str], entry_ids: list[str]) -> list[str]:
    """Ack `acks`, then claim again those of `entry_ids` still pending to this consumer; returns those."""
    return KEEP_CLAIM(client, [config.stream], [config.group, config.consumer, len(acks), *acks, *entry_ids])


def ack_deleted(client: redis.Redis, config: ConsumerConfig) -> int:
    """Ack this consumer's pending entries no longer in the stream, each with its dead letter; returns how many."""
    return int(ACK_DELETED(client, [config.stream, keys.Stream.DEAD_LETTER], [*_deleted_letter_args(config),
                                                                              DELETED_SCAN]))


def delivery_counts(client: redis.Redis, config: ConsumerConfig, batch: Batch) -> dict[str, int]:
    """Each entry's delivery count, asked one by one: a claimed batch is not contiguous in our pending list."""
    pipe = client.pipeline(transaction=False)
    for entry_id, _fields in batch:
        pipe.xpending_range(config.stream, config.group, min=entry_id, max=entry_id, count=1,
                            consumername=config.consumer)
    return {item["message_id"]: int(item["times_delivered"]) for details in pipe.execute() for item in details}


def _deleted_letter_args(config: ConsumerConfig) -> list[str]:
    """ARGV[1..4] of the scripts built on _DELETED_LETTER."""
    return [config.group, config.consumer, DELETED_REASON, json.dumps({"detail": DELETED_DETAIL})]
