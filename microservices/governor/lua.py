"""The governor's Redis scripts: an open decision reads in one call and commits in one call.

In-flight opens are kept as records (hash plan_id -> JSON) plus running totals (hash: "units",
the summed notional in integer units of 1e-8 USDT, and "n:<symbol>", the count per symbol),
so a decision reads a handful of fields however many opens are in flight. Redis adds the
integers (HINCRBY, exact in 64 bits); Lua never does arithmetic on money. Every change to the
records goes through `add` and `drop` below, which keep the totals equal to the records. The
totals carry "v"; when that is missing (first start, an operator deleted the hash) or a value
is not an integer, they are rebuilt from the records, dropping records that do not parse.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from shared.lua import SAFE_READS, LuaScript
from shared.runtime import arrival

UNITS_PER_USDT = 10**8
TOTALS_VERSION = "1"
EXPIRE_BATCH = 100  # expired records dropped per decision; the rest go on the next ones
ARRIVAL_SLICE = 32  # scores an arrival read returns per window start; more there, and the plan is read again

_FUNCTIONS = SAFE_READS + """
local function parse(raw)
  local ok, rec = pcall(cjson.decode, raw)
  if not ok or type(rec) ~= 'table' then return nil end
  if type(rec.units) ~= 'string' or not string.match(rec.units, '^%d+$') then return nil end
  if type(rec.symbol) ~= 'string' or rec.symbol == '' or type(rec.allowed_at_ms) ~= 'number' then return nil end
  return rec
end

local function count(totals, rec, sign)
  if rec.units ~= '0' then
    redis.call('HINCRBY', totals, 'units', (sign < 0 and '-' or '') .. rec.units)
  end
  local field = 'n:' .. rec.symbol
  if redis.call('HINCRBY', totals, field, sign) <= 0 then redis.call('HDEL', totals, field) end
end

local function reset_if_empty(inflight, totals, by_time)
  if redis.call('HLEN', inflight) == 0 then
    redis.call('DEL', totals, by_time)
    redis.call('HSET', totals, 'v', 'VERSION')
  end
end

local function drop(inflight, totals, by_time, ids)
  local corrupt = 0
  for _, id in ipairs(ids) do
    local raw = redis.call('HGET', inflight, id)
    if raw then
      redis.call('HDEL', inflight, id)
      local rec = parse(raw)
      if rec then count(totals, rec, -1) else corrupt = corrupt + 1 end
    end
    redis.call('ZREM', by_time, id)
  end
  reset_if_empty(inflight, totals, by_time)
  return corrupt
end

local function valid_totals(totals)
  local flat = fields_of(totals)
  if not flat then return false end  -- another type: rebuilt (DEL) like garbled totals
  local seen = false
  for i = 1, #flat, 2 do
    if flat[i] == 'v' then
      seen = flat[i + 1] == 'VERSION'
    elseif not string.match(flat[i + 1], '^%-?%d+$') then
      return false
    end
  end
  return seen
end

local function rebuild(inflight, totals, by_time)
  redis.call('DEL', totals, by_time)
  local corrupt = 0
  local flat = redis.call('HGETALL', inflight)
  for i = 1, #flat, 2 do
    local rec = parse(flat[i + 1])
    if rec then
      count(totals, rec, 1)
      redis.call('ZADD', by_time, rec.allowed_at_ms, flat[i])
    else
      redis.call('HDEL', inflight, flat[i])
      corrupt = corrupt + 1
    end
  end
  redis.call('HSET', totals, 'v', 'VERSION')
  return corrupt
end
""".replace("VERSION", TOTALS_VERSION)

# A round of open decisions (one plan, or several of a batch) reads everything in one call, under the lock.
# s: lock kill execution positions inflight totals by-time trips disarmed (keys)
# a: token lock-ttl-ms hour-since five-min-since trips-since expired-at-or-before slack-ms
# plans: {cooldown key, result-marker key, opens key, plan id} each
# Reply: nil when another governor holds the lock; else kill execution snapshot totals trips disarmed corrupt,
# then per plan: cooldown has-result own-record opens-last-hour opens-last-5min own-open-score own-trip-score.
# With a slack (an arrival read, made before the decision's time is known; see store.py), then what lies
# within slack-ms after each window's start: the trips' scores, the first in-flight record's allowed-at,
# and per plan the opens' scores after hour-since and after five-min-since (each at most SLICE).
_READ_ROUND = """
local function slice(key, since, slack)
  return redis.call('ZRANGEBYSCORE', key, '(' .. since, string.format('%d', since + slack), 'WITHSCORES', 'LIMIT', 0, SLICE)
end

local function read_round(s, a, plans)
  if not redis.call('SET', s[1], a[1], 'NX', 'PX', a[2]) then
    if redis.call('GET', s[1]) ~= a[1] then return false end
    redis.call('PEXPIRE', s[1], a[2])  -- ours already (a client retry, or a lock taken on arrival): read on
  end
  local corrupt = 0
  if not valid_totals(s[6]) then corrupt = rebuild(s[5], s[6], s[7]) end
  local expired = redis.call('ZRANGEBYSCORE', s[7], '-inf', a[6], 'LIMIT', 0, BATCH)
  if #expired > 0 then corrupt = corrupt + drop(s[5], s[6], s[7], expired) end
  local reply = {
    text_of(s[2]), text_of(s[3]), text_of(s[4]), redis.call('HGETALL', s[6]),
    redis.call('ZCOUNT', s[8], '(' .. a[5], '+inf'), redis.call('EXISTS', s[9]), corrupt,
  }
  for _, plan in ipairs(plans) do
    local values = {
      text_of(plan[1]), redis.call('EXISTS', plan[2]), redis.call('HGET', s[5], plan[4]),
      redis.call('ZCOUNT', plan[3], '(' .. a[3], '+inf'), redis.call('ZCOUNT', plan[3], '(' .. a[4], '+inf'),
      redis.call('ZSCORE', plan[3], plan[4]), redis.call('ZSCORE', s[8], plan[4]),
    }
    for j = 1, 7 do reply[#reply + 1] = values[j] end
  end
  local slack = tonumber(a[7])
  if slack > 0 then
    reply[#reply + 1] = slice(s[8], a[5], slack)
    reply[#reply + 1] = redis.call('ZRANGE', s[7], 0, 0, 'WITHSCORES')
    for _, plan in ipairs(plans) do
      reply[#reply + 1] = slice(plan[3], a[3], slack)
      reply[#reply + 1] = slice(plan[3], a[4], slack)
    end
  end
  return reply
end
""".replace("BATCH", str(EXPIRE_BATCH)).replace("SLICE", str(ARRIVAL_SLICE))

# KEYS: lock kill execution positions inflight totals by-time trips disarmed, then per plan: cooldown result opens
# ARGV: token lock-ttl-ms hour-since five-min-since trips-since expired-at-or-before, then per plan: plan-id
# Reply: read_round's, without slack.
READ_OPENS = LuaScript(_FUNCTIONS + _READ_ROUND + """
local plans = {}
for i = 7, #ARGV do
  local k = 10 + 3 * (i - 7)
  plans[#plans + 1] = {KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[i]}
end
return read_round(KEYS, {ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], 0}, plans)
""")

# The same read for the plans the consumer's wait just delivered (shared.runtime.arrival), taken the moment
# they arrive, for every delivered EXECUTE plan (closes too: telling them apart is the schema's job).
# KEYS from 2: READ_OPENS' shared keys; ARGV from 3: token lock-ttl-ms hour-since five-min-since trips-since
# expired-at-or-before slack-ms, then the cooldown result-marker opens key prefixes.
# Reply: {} when nothing arrived; else {{entry id, plan id, symbol} per plan read, read_round's reply}.
ARRIVAL_READ_OPENS = LuaScript(arrival.PRELUDE + _FUNCTIONS + _READ_ROUND + """
local plans, read_for = {}, {}
for _, entry in ipairs(delivered()) do
  local plan_id, sym = plan_of(entry[2])
  if plan_id then
    plans[#plans + 1] = {ARGV[10] .. sym, ARGV[11] .. plan_id, ARGV[12] .. sym, plan_id}
    read_for[#read_for + 1] = {entry[1], plan_id, sym}
  end
end
if #plans == 0 then return {} end
local shared = {}
for i = 2, 10 do shared[#shared + 1] = KEYS[i] end
return {read_for, read_round(shared, {ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]}, plans)}
""")

# KEYS: lock permit ready-list inflight totals by-time opens trips execution disarmed
# ARGV: token permit-json permit-ttl-s permit-kind plan-id record-json|'' allowed-at-ms hour-ms
#       trip(0|1) trip-window-ms disarm-json|'' clear-disarm(0|1) disabled-value release-lock(0|1) drop-id...
# Reply: 1, or 0 when the lock is no longer ours (nothing written: the caller decides again).
# A round's commits go in one pipeline; only the last releases the lock.
COMMIT_OPEN = LuaScript(_FUNCTIONS + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local record = ARGV[6] ~= '' and parse(ARGV[6])
if ARGV[6] ~= '' and not record then return redis.error_reply('unreadable in-flight record') end
if #ARGV > 14 then
  local ids = {}
  for i = 15, #ARGV do ids[#ids + 1] = ARGV[i] end
  drop(KEYS[4], KEYS[5], KEYS[6], ids)
end
local at = tonumber(ARGV[7])
if ARGV[6] ~= '' then
  -- A replayed allow replaces its record: the permit written below lives from now, and so must the count of it.
  if redis.call('HEXISTS', KEYS[4], ARGV[5]) == 1 then drop(KEYS[4], KEYS[5], KEYS[6], {ARGV[5]}) end
  redis.call('HSET', KEYS[4], ARGV[5], ARGV[6])
  count(KEYS[5], record, 1)
  redis.call('ZADD', KEYS[6], ARGV[7], ARGV[5])
  redis.call('ZADD', KEYS[7], 'NX', ARGV[7], ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', at - tonumber(ARGV[8]))
  redis.call('PEXPIRE', KEYS[7], ARGV[8])
end
if ARGV[9] == '1' then
  redis.call('ZADD', KEYS[8], 'NX', ARGV[7], ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', at - tonumber(ARGV[10]))
  redis.call('PEXPIRE', KEYS[8], ARGV[10])
end
if ARGV[12] == '1' then redis.call('DEL', KEYS[10]) end
if ARGV[11] ~= '' then
  redis.call('SET', KEYS[9], ARGV[13])
  redis.call('SET', KEYS[10], ARGV[11])
  redis.call('DEL', KEYS[8])
end
-- the permit last: Lua does not roll back, so an error above must not leave an allow uncounted
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('RPUSH', KEYS[3], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[3])
if ARGV[14] == '1' then redis.call('DEL', KEYS[1]) end
return 1
""")

# KEYS: inflight totals by-time; ARGV: plan ids. Reply: how many of them were unreadable.
DROP = LuaScript(_FUNCTIONS + """
return drop(KEYS[1], KEYS[2], KEYS[3], ARGV)
""")

# DROP while the decision lock is still the caller's. KEYS: inflight totals by-time lock; ARGV: token, plan ids.
# Reply: how many were unreadable, or -1 when the lock is no longer ours (nothing dropped).
DROP_LOCKED = LuaScript(_FUNCTIONS + """
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return -1 end
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
return drop(KEYS[1], KEYS[2], KEYS[3], ids)
""")

RELEASE_LOCK = LuaScript("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")


def to_units(notional: Decimal) -> int:
    """Notional in integer units of 1e-8 USDT, rounded up: the totals never undercount."""
    return int((notional * UNITS_PER_USDT).to_integral_value(rounding=ROUND_CEILING))


def from_units(units: int) -> Decimal:
    return Decimal(units).scaleb(-8)
