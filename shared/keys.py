"""Every Redis stream and key name the fleet uses. No other module builds a key string.

Names marked "contract" are fixed by DESIGN.md (operators and other programs use them);
the rest are internal to the fleet and may change between releases.
"""

from __future__ import annotations

PREFIX = "quantum:"


class Stream:
    """Stream names (contract)."""

    TRADE_INTENT = "quantum:stream:trade.intent"
    APPLY_PLAN = "quantum:stream:apply.plan"
    APPLY_RESULT = "quantum:stream:apply.result"
    HARVEST_PROPOSAL = "quantum:stream:harvest.proposal"
    HARVEST_CALIBRATED = "quantum:stream:harvest.calibrated"
    DEAD_LETTER = "quantum:stream:dead_letter"
    # Internal: reconcile heal and adoption events.
    RECONCILE_EVENT = "quantum:stream:reconcile.event"


class Group:
    """Consumer group names, one per reading daemon and stream."""

    INTENT_BRIDGE = "intent-bridge"
    GOVERNOR = "governor"
    POSITION_STATE_BRAIN = "position-state-brain"
    INTENT_EXECUTOR = "intent-executor"
    PORTFOLIO_HEAT_GATE = "portfolio-heat-gate"
    APPLY_LAYER = "apply-layer"
    RECONCILE = "reconcile"


# Trading-state keys (contract).
KILL = "quantum:kill"
# "1" forces dry run fleet-wide at once, whatever APPLY_MODE says (it can only make things safer).
FORCE_DRY_RUN = "quantum:apply:dry_run"
GOVERNOR_EXECUTION = "quantum:governor:execution"
MODE = "quantum:mode"

# Internal: the filter cache and exchange snapshots shared by the fleet.
EXCHANGE_FILTERS = "quantum:exchange:filters"
EXCHANGE_POSITIONS = "quantum:exchange:positions"
EXCHANGE_MARK_PRICES = "quantum:exchange:mark_prices"


def permit_p32(plan_id: str) -> str:
    """Governor permit for a plan (contract)."""
    return f"quantum:permit:p32:{plan_id}"


def permit_p33(plan_id: str) -> str:
    """Position-state-brain permit for a plan (contract)."""
    return f"quantum:permit:p33:{plan_id}"


def permit_used(kind: str, plan_id: str) -> str:
    """Internal: set once when a permit is consumed; the permit itself stays readable until its TTL.
    Value: the attempt that took it (shared.permits.new_attempt)."""
    return f"quantum:permit:used:{kind}:{plan_id}"


def permit_ready(plan_id: str) -> str:
    """Internal: a list that receives "p32"/"p33" when a permit is issued, so waiters block, not poll."""
    return f"quantum:permit:ready:{plan_id}"


def p33_permitted_open(plan_id: str) -> str:
    """Internal: an open P3.3 permitted, written with its permit and kept for as long as P3.3 counts it as a
    position on its way (the permit's TTL and a grace), so a restarted P3.3 recovers it even after the
    permit itself expired. Value: JSON {symbol, side, at_ms}."""
    return f"quantum:p33:open:{plan_id}"


def cooldown_last_exec(symbol: str) -> str:
    """Millisecond timestamp of the last executed order on a symbol (contract)."""
    return f"quantum:cooldown:last_exec_ts:{symbol}"


def position_ledger(symbol: str) -> str:
    """The fleet's own record of a position, a hash (contract)."""
    return f"quantum:position:ledger:{symbol}"


def position_ledger_pattern() -> str:
    return "quantum:position:ledger:*"


def plan_result_marker(plan_id: str) -> str:
    """Internal: set once when a plan's terminal result has been written."""
    return f"quantum:plan:result:{plan_id}"


def plan_order_marker(plan_id: str) -> str:
    """Internal: set before an order for a plan is sent; its presence means 'outcome may be unknown'.
    Value: the client order id, a space, the executor attempt that wrote it."""
    return f"quantum:plan:order:{plan_id}"


def plan_claim(plan_id: str) -> str:
    """Internal: which executor instance is working on a plan (short TTL)."""
    return f"quantum:plan:claim:{plan_id}"


def bridge_intent(plan_id: str) -> str:
    """Internal: set when the intent bridge has turned an intent into its plan."""
    return f"quantum:bridge:intent:{plan_id}"


def governor_opens(symbol: str) -> str:
    """Internal: sorted set of opens the governor allowed on a symbol (score: ms), for rate limits."""
    return f"quantum:governor:opens:{symbol}"


GOVERNOR_INFLIGHT = "quantum:governor:inflight"  # hash plan_id -> JSON of allowed opens not yet settled
GOVERNOR_INFLIGHT_TOTALS = "quantum:governor:inflight:totals"  # hash: their notional (1e-8 units), count per symbol
GOVERNOR_INFLIGHT_BY_TIME = "quantum:governor:inflight:by_time"  # sorted set plan_id -> allowed at (ms), for expiry
GOVERNOR_RATE_TRIPS = "quantum:governor:rate_trips"  # sorted set of rate-limit denials, for auto-disarm
GOVERNOR_LOCK = "quantum:governor:lock"  # serialises open decisions across governor instances
# Internal: the Redis server the fleet last saw (run_id) and since when (ms); see shared.incarnation.
REDIS_INCARNATION = "quantum:redis:incarnation"
GOVERNOR_DISARMED = "quantum:governor:auto_disarmed"  # why and when the governor disarmed itself
P33_INSTANCE = "quantum:p33:instance"  # the one running position-state-brain (shared.runtime.liveness.SoleInstance)
HARVEST_INSTANCE = "quantum:harvest:instance"  # the one running harvest-proposal (the same)


def executor_sending(symbol: str) -> str:
    """Internal: plans on this symbol the executor may be sending (hash: plan id -> Redis ms until which it
    counts; shared.sending); reconcile waits for them."""
    return f"quantum:executor:sending:{symbol}"


def reconcile_mismatch(symbol: str) -> str:
    """Internal: a ledger/exchange disagreement reconcile has seen (hash: first_seen_ms, amounts)."""
    return f"quantum:reconcile:mismatch:{symbol}"


def reconcile_mismatch_pattern() -> str:
    return "quantum:reconcile:mismatch:*"


def apply_proposal(proposal_id: str) -> str:
    """Internal: what became of a proposal, written once (shared.proposals): planned or skipped by the apply layer,
    or superseded by harvest before it proposed the rung again."""
    return f"quantum:apply:proposal:{proposal_id}"


HARVEST_TRACKED = "quantum:harvest:tracked"  # set of symbols with a harvest lifecycle record


def harvest_position(symbol: str) -> str:
    """Internal: harvest's record of a position's lifecycle (hash: fingerprint, peak R, rungs done, attempts, the
    pending rung)."""
    return f"quantum:harvest:position:{symbol}"


def harvest_proposed(proposal_id: str) -> str:
    """Internal: set once when a proposal is published, so the same situation is proposed once."""
    return f"quantum:harvest:proposed:{proposal_id}"


P26_EQUITY_HWM = "quantum:p26:equity_hwm"  # highest account equity seen, for the drawdown component


def p26_calibrated(proposal_id: str) -> str:
    """Internal: set once when a proposal's calibrated form has been published."""
    return f"quantum:p26:calibrated:{proposal_id}"


def heartbeat(daemon: str) -> str:
    """Internal: a daemon's liveness record (hash: pid, ts, state)."""
    return f"quantum:daemon:heartbeat:{daemon}"


def heartbeat_pattern() -> str:
    return "quantum:daemon:heartbeat:*"


def consumer_owner(consumer: str) -> str:
    """Internal: the one process running under a consumer name (shared.runtime.liveness.ConsumerOwner)."""
    return f"quantum:daemon:owner:{consumer}"


def symbol_from_key(key: str) -> str:
    """The trailing symbol of a per-symbol key such as the ledger or cooldown key."""
    return key.rsplit(":", 1)[-1]
