"""The executor's Redis scripts, and the keys and arguments each takes.

Every step of a plan that must be atomic is one script call: the look-ahead (claim, sending mark,
markers, and the taking when both permits are already there), the taking once they arrive (both
permits single-use, the trading state, snapshot and ledger read, and the order marker written only
when both allow the plan's digest), and letting go of what the executor holds.
"""

from __future__ import annotations

from shared import keys, permits, results, sending
from shared.lua import SAFE_READS, LuaScript
from shared.orders import client_order_id_for
from shared.permits import PermitKind
from shared.schema import Plan

CLAIM_TTL_S = 60
PERMIT_KINDS = (PermitKind.P32, PermitKind.P33)
_TAKE_FUNCTION = permits.TAKE_FUNCTION + sending.MARK_FUNCTION + SAFE_READS + """
local function allows(raw, digest)
  if not raw then return false end
  local ok, permit = pcall(cjson.decode, raw)
  return ok and type(permit) == 'table' and permit.allow == true and permit.plan_digest == digest
end
-- KEYS from `at`: order-marker p32-used p32 p33-used p33 kill execution force-dry-run positions ledger
-- ARGV from `arg`: used-ttl-s order-marker-value marker-ttl-s attempt plan-digest
-- sending, plan_id: the symbol's sending hash and the plan's field in it. Once the marker says an order may be
-- out, the plan's sending mark lasts as long as the marker: reconcile must not heal the symbol's ledger under
-- an order whose fill the executor will record when it learns the outcome, however long that takes.
local function take(at, arg, sending, plan_id)
  local won32, raw32 = take_permit(KEYS[at + 1], KEYS[at + 2], ARGV[arg], ARGV[arg + 3])
  local won33, raw33 = take_permit(KEYS[at + 3], KEYS[at + 4], ARGV[arg], ARGV[arg + 3])
  local marked = 0
  if won32 == 1 and won33 == 1 and allows(raw32, ARGV[arg + 4]) and allows(raw33, ARGV[arg + 4]) then
    local now = redis.call('TIME')  -- the marker says when: a lookup believes "no such order" only later
    local marker = ARGV[arg + 1] .. ' ' .. now[1] .. string.format('%03d', math.floor(now[2] / 1000))
    marker = marker .. '\\n' .. raw32 .. '\\n' .. raw33  -- and carries the permits, for a later attempt's result
    redis.call('SET', KEYS[at], marker, 'EX', ARGV[arg + 2])
    mark_sending(sending, plan_id, tonumber(ARGV[arg + 2]))
    marked = 1
  end
  return {won32, raw32, won33, raw33, text_of(KEYS[at + 5]), text_of(KEYS[at + 6]),
          text_of(KEYS[at + 7]), text_of(KEYS[at + 8]), fields_of(KEYS[at + 9]), marked}
end
"""
# The claim must still be ours: a call that reaches Redis late (a client retry after a lost reply, a
# long wait) must not take permits for a plan another executor has since claimed, or finished.
# KEYS[11] claim KEYS[12] symbol's sending hash KEYS[13] result marker; ARGV[6] consumer ARGV[7] claim-ttl-s
# ARGV[8] plan-id. Taking renews the claim and the plan's sending mark for the send. A plan that has its result
# meanwhile (the runtime gave up on it elsewhere) is not taken: nothing may be sent for it any more.
_CLAIM_STILL_OURS = """
if redis.call('EXISTS', KEYS[13]) == 1 then return 'HAS_RESULT' end
if redis.call('GET', KEYS[11]) ~= ARGV[6] then return 'CLAIM_LOST' end
"""
_RENEW = """
redis.call('EXPIRE', KEYS[11], ARGV[7])
mark_sending(KEYS[12], ARGV[8], tonumber(ARGV[7]))
"""
# Takes both permits (permits.TAKE_FUNCTION, as permits.consume_all) and reads what sending needs.
# When both were taken and both allow, it writes the order marker: from here an order may be sent, so a
# restart looks the order up by its client order id instead of sending anything.
TAKE = LuaScript(_TAKE_FUNCTION + _CLAIM_STILL_OURS + _RENEW + """
return take(1, 1, KEYS[12], ARGV[8])
""")
# TAKE, only once both permits exist (else an empty reply, nothing taken): run right after each wake-up.
TAKE_WHEN_BOTH = LuaScript(_TAKE_FUNCTION + _CLAIM_STILL_OURS + """
if redis.call('EXISTS', KEYS[3]) == 0 or redis.call('EXISTS', KEYS[5]) == 0 then return {} end
""" + _RENEW + """
return take(1, 1, KEYS[12], ARGV[8])
""")
CLAIM_LOST, HAS_RESULT = "CLAIM_LOST", "HAS_RESULT"
# KEYS: claim symbol-sending order-marker; ARGV: consumer plan-id. Only what is still ours is let go, and the
# sending mark only while no order may be out: with a marker and no result, reconcile waits for the result.
RELEASE = LuaScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
end
return 1
""")
# KEYS: result-marker claim symbol-sending, then TAKE's; ARGV: consumer claim-ttl-s plan-id, then TAKE's, then
# whether it may take now (1; 0 for a plan to look up on the exchange first).
# Reply: the result marker (0 when the plan has no result), claim holder, earlier marker, p32 present, p33 present,
# and when this executor holds the
# claim of a plan with both permits present and nothing sent yet, what TAKE replies (taken in the same call).
# Earlier marker: an order marker written by another attempt (nil if none): this attempt's own marker (the
# client sent the call again after a lost reply) is not a sign of an earlier order.
LOOK_AHEAD = LuaScript(_TAKE_FUNCTION + """
local result_marker = text_of(KEYS[1])  -- a key of another type (by hand) still says the plan ended
local has_result = result_marker and 1 or 0
redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2])
local holder = redis.call('GET', KEYS[2])
local ours = holder == ARGV[1]
if ours then  -- possibly from before a restart: renewed, and the plan marked as being sent (unless it has ended:
  redis.call('EXPIRE', KEYS[2], ARGV[2])  -- a duplicate must not hold reconcile off the symbol)
  if has_result == 0 then mark_sending(KEYS[3], ARGV[3], tonumber(ARGV[2])) end
end
local marker = redis.call('GET', KEYS[4])
local earlier = marker and string.sub(marker, 1, #ARGV[5] + 1) ~= ARGV[5] .. ' ' and marker or false
local seen = {result_marker or 0, holder, earlier, redis.call('EXISTS', KEYS[6]), redis.call('EXISTS', KEYS[8])}
if ARGV[9] == '1' and has_result == 0 and ours and not earlier and seen[4] == 1 and seen[5] == 1 then
  for _, reply in ipairs(take(4, 4, KEYS[3], ARGV[3])) do seen[#seen + 1] = reply end
end
return seen
""")


# KEYS: claim order-marker; ARGV: consumer claim-ttl-s. A plan about to be given up is claimed first, so that
# no other executor takes its permits meanwhile (TAKE re-checks the claim) and what the marker says stays true.
# Reply: {the other consumer's name} while it holds the claim (nothing done); else {nil, the order marker or nil}.
CLAIM_TO_END = LuaScript("""
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {holder} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {false, redis.call('GET', KEYS[2])}
""")


def take_keys(plan: Plan) -> list[str]:
    return [keys.plan_order_marker(plan.plan_id), *permits.consume_keys(plan.plan_id, PERMIT_KINDS),
            keys.KILL, keys.GOVERNOR_EXECUTION, keys.FORCE_DRY_RUN, keys.EXCHANGE_POSITIONS, keys.position_ledger(plan.symbol)]


def take_args(plan: Plan, attempt: str) -> list[object]:
    marker = f"{client_order_id_for(plan.plan_id)} {attempt}"  # what may have been sent, and by which attempt
    return [permits.USED_MARKER_TTL_S, marker, results.RESULT_MARKER_TTL_S, attempt, plan.digest]


def claimed_take(plan: Plan, attempt: str, consumer: str) -> tuple[list[str], list[object]]:
    """KEYS and ARGV of TAKE and TAKE_WHEN_BOTH: TAKE's, then the claim that must still be ours."""
    return ([*take_keys(plan), keys.plan_claim(plan.plan_id), keys.executor_sending(plan.symbol),
             keys.plan_result_marker(plan.plan_id)],
            [*take_args(plan, attempt), consumer, CLAIM_TTL_S, plan.plan_id])



def look_ahead_call(plan: Plan, attempt: str, consumer: str, take_now: bool) -> tuple[list[str], list[object]]:
    """KEYS and ARGV of LOOK_AHEAD."""
    return ([keys.plan_result_marker(plan.plan_id), keys.plan_claim(plan.plan_id), keys.executor_sending(plan.symbol),
             *take_keys(plan)],
            [consumer, CLAIM_TTL_S, plan.plan_id, *take_args(plan, attempt), int(take_now)])


def release_keys(plan: Plan) -> list[str]:
    """KEYS of RELEASE: what the executor holds while working on a plan, and the order marker that decides
    whether its sending mark may go."""
    return [keys.plan_claim(plan.plan_id), keys.executor_sending(plan.symbol), keys.plan_order_marker(plan.plan_id)]
