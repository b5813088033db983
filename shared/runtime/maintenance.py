"""Stream housekeeping: consumer-group lag, and trimming that never drops an unread entry.

The seeds trimmed apply.plan with MAXLEN 10000 while plans were still unread. Here a stream
is trimmed by MINID to the oldest of (retention horizon, every group's last-delivered id,
every group's oldest pending id), so nothing a group has not yet read or acked is removed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis

from shared.lua import LuaScript
from shared.runtime.ids import min_id

# On Redis < 7 lag is counted by reading entries; past this many the gauge reports the cap ("at least").
LAG_COUNT_CAP = 1_000
UNREAD_FOR_MS = 10 * 60_000  # entries a group has left unread this long: no process reads it (release_left_group)


@dataclass(frozen=True)
class GroupState:
    lag: int
    pending: int
    last_delivered_id: str
    lag_at_least: bool = False  # counted on Redis < 7 and stopped at LAG_COUNT_CAP: the lag is this or more


def group_state(client: redis.Redis, stream: str, group: str) -> GroupState | None:
    for info in client.xinfo_groups(stream):
        if info["name"] == group:
            last_id = info["last-delivered-id"]
            lag = info.get("lag")
            counted = lag is None
            if counted:  # Redis < 7 has no lag field; count what is after last-delivered.
                lag = len(client.xrange(stream, min=f"({last_id}", max="+", count=LAG_COUNT_CAP))
            return GroupState(lag=int(lag), pending=int(info["pending"]), last_delivered_id=last_id,
                              lag_at_least=counted and int(lag) >= LAG_COUNT_CAP)
    return None


def safe_trim_id(client: redis.Redis, stream: str, retention_min_id: str) -> str:
    """The newest id below which every entry is read and acked by every group and past retention."""
    candidates = [retention_min_id]
    for info in client.xinfo_groups(stream):
        candidates.append(info["last-delivered-id"])
        if int(info["pending"]):
            oldest_pending = client.xpending(stream, info["name"])["min"]
            if oldest_pending:
                candidates.append(oldest_pending)
    return min_id(*candidates)


def release_left_group(client: redis.Redis, stream: str, group: str, now_ms: int,
                       others_read: Callable[[], bool] = lambda: False, unread_for_ms: int = UNREAD_FOR_MS) -> str:
    """A daemon that reads another stream now (the apply layer after a P26_MODE change) lets go of its group on this
    one: every group holds back trimming (safe_trim_id), and one nobody reads would hold it forever (found in review:
    harvest.proposal grew past STREAM_RETENTION_HOURS). Destroyed only when nothing there is pending and its oldest
    unread entry (the first after its last-delivered id) was added more than `unread_for_ms` ago (Redis's clock,
    `now_ms`): a running consumer of the group, blocked on it, reads an entry within seconds, and one restarting within
    minutes. Found in review: XINFO's consumer idle time cannot tell (before Redis 7.2 it counts from the last entry
    delivered, not the last read), nor can heartbeats alone (a process starting has none yet); `others_read`, asked
    last, says whether a running process says it reads the stream. A group that is not behind holds nothing back.
    What happened, as a word: released, absent, pending, read (not behind, or not for long), in_use. The look and the
    destroy are one script call (a reader's XREADGROUP cannot land between them)."""
    state = _LEFT_GROUP(client, [stream], [group, now_ms, unread_for_ms, 0])
    if state != "behind":
        return str(state)
    if others_read():
        return "in_use"
    return str(_LEFT_GROUP(client, [stream], [group, now_ms, unread_for_ms, 1]))


# KEYS: the stream; ARGV: group, now-ms, unread-for-ms, 1 to destroy a group behind. Reply: absent, pending, read,
# behind (ARGV[4] 0), released.
_LEFT_GROUP = LuaScript("""
if redis.call('EXISTS', KEYS[1]) == 0 then return 'absent' end
local info
for _, listed in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local fields = {}
  for i = 1, #listed, 2 do fields[listed[i]] = listed[i + 1] end
  if fields['name'] == ARGV[1] then info = fields end
end
if not info then return 'absent' end
if tonumber(info['pending']) > 0 then return 'pending' end
local unread = redis.call('XRANGE', KEYS[1], '(' .. info['last-delivered-id'], '+', 'COUNT', 1)
if #unread == 0 then return 'read' end
local added = tonumber(string.match(unread[1][1], '^(%d+)'))
if tonumber(ARGV[2]) - added <= tonumber(ARGV[3]) then return 'read' end
if ARGV[4] ~= '1' then return 'behind' end
redis.call('XGROUP', 'DESTROY', KEYS[1], ARGV[1])
return 'released'
""")


def trim(client: redis.Redis, stream: str, retention_ms: int, now_ms: int) -> int:
    """Trim entries older than the retention that every group is done with; returns how many went."""
    if not client.exists(stream):
        return 0
    horizon = f"{max(now_ms - retention_ms, 0)}-0"
    return int(client.xtrim(stream, minid=safe_trim_id(client, stream, horizon), approximate=False))
