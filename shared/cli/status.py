"""`quantum status`: daemons and their lag, trading state, positions and PnL, last results."""

from __future__ import annotations

import argparse
import time
from decimal import Decimal
from typing import Any

import redis

from shared import fleet, keys, ledger, lua
from shared import snapshot as exchange_snapshot
from shared.cli.common import CommandError, add_redis_argument, fail, redis_from
from shared.cli.up import format_result
from shared.freshness import stored_ms
from shared.redis_conn import wrong_type
from shared.runtime import maintenance
from shared.trading_state import forced_dry_run, read_switches

GROUPS = (
    (keys.Stream.TRADE_INTENT, keys.Group.INTENT_BRIDGE),
    (keys.Stream.APPLY_PLAN, keys.Group.GOVERNOR),
    (keys.Stream.APPLY_PLAN, keys.Group.POSITION_STATE_BRAIN),
    (keys.Stream.APPLY_PLAN, keys.Group.INTENT_EXECUTOR),
    (keys.Stream.HARVEST_PROPOSAL, keys.Group.PORTFOLIO_HEAT_GATE),
    (keys.Stream.HARVEST_PROPOSAL, keys.Group.APPLY_LAYER),
    (keys.Stream.HARVEST_CALIBRATED, keys.Group.APPLY_LAYER),
    (keys.Stream.APPLY_RESULT, keys.Group.RECONCILE),
)
STALE_AFTER_MS = 10_000


def register(commands: Any) -> None:
    parser = commands.add_parser("status", help="daemons, lag, trading state, positions, last results")
    parser.add_argument("--results", type=int, default=8, help="how many recent results to show (default 8)")
    add_redis_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        client = redis_from(args)
    except CommandError as exc:
        return fail(str(exc))
    for section in (daemons(client), trading_state(client), streams(client), positions(client), results(client, args.results)):
        print("\n".join(section) + "\n")
    return 0


def daemons(client: redis.Redis) -> list[str]:
    now_ms = int(time.time() * 1000)
    beats = [_fields(client, key) | {"key": key} for key in client.scan_iter(keys.heartbeat_pattern(), count=200)]
    lines = ["DAEMON                  STATE     PID      LAST BEAT"]
    for spec in fleet.FLEET:
        own = [b for b in beats if b.get("daemon") == spec.name]
        if not own and not spec.demo:  # a dev-only daemon that is not running is not a fault
            lines.append(f"{spec.name:<23} DOWN")
        for beat in own:
            beat_ms = stored_ms(beat.get("ts_ms"))
            if beat_ms is None:
                lines.append(f"{spec.name:<23} {'?':<9} {beat.get('pid', '?'):<8} unreadable beat {beat['key']}")
                continue
            age = now_ms - beat_ms
            state = "up" if age < STALE_AFTER_MS else "STALE"
            lines.append(f"{spec.name:<23} {state:<9} {beat.get('pid', '?'):<8} {age / 1000:.1f}s ago")
    return lines


def trading_state(client: redis.Redis) -> list[str]:
    """The switches as the fleet reads them (shared.trading_state): an unreadable value is shown with what it
    counts as, which is the safe side (halted, reduce-only, dry run forced)."""
    kill, execution, mode, disarmed, forced = lua.texts(
        client, [keys.KILL, keys.GOVERNOR_EXECUTION, keys.MODE, keys.GOVERNOR_DISARMED, keys.FORCE_DRY_RUN])
    switches = read_switches(kill, execution)
    unreadable = {name: f" (unreadable value {raw!r}: counts as {what})" for name, raw, what in (
        ("kill", switches.invalid.get("kill"), "on"), ("execution", switches.invalid.get("execution"), "DISABLED"))
        if raw is not None}
    lines = ["TRADING STATE",
             f"  kill switch      {'ON (halted)' if switches.kill else 'off'}{unreadable.get('kill', '')}",
             f"  execution        {'ENABLED' if switches.execution_enabled else 'DISABLED (reduce-only)'}"
             f"{unreadable.get('execution', '')}",
             f"  mode             {mode or 'unknown'}"
             f"{' (dry run FORCED by quantum:apply:dry_run=' + repr(forced) + ')' if forced_dry_run(forced) else ''}"]
    if disarmed:
        lines.append(f"  auto-disarmed    {disarmed}")
    mismatches = [keys.symbol_from_key(k) for k in client.scan_iter(keys.reconcile_mismatch_pattern(), count=200)]
    lines.append(f"  reconcile holds  {', '.join(sorted(mismatches)) or 'none'}")
    return lines


def streams(client: redis.Redis) -> list[str]:
    lines = ["STREAM / GROUP                                         LAG    PENDING",
             f"  dead letters: {client.xlen(keys.Stream.DEAD_LETTER) if client.exists(keys.Stream.DEAD_LETTER) else 0}"]
    for stream, group in GROUPS:
        name = f"{stream.removeprefix('quantum:stream:')} / {group}"
        try:
            state = maintenance.group_state(client, stream, group)
        except redis.ResponseError:  # no such stream yet (or not a stream)
            lines.append(f"  {name:<52} no stream yet")
            continue
        if state is None:
            lines.append(f"  {name:<52} no group yet (its daemon creates it when it starts)")
            continue
        lag = f"≥{state.lag}" if state.lag_at_least else str(state.lag)
        lines.append(f"  {name:<52} {lag:<6} {state.pending}")
    return lines


def positions(client: redis.Redis) -> list[str]:
    [raw] = lua.texts(client, [keys.EXCHANGE_POSITIONS])
    seen, why = exchange_snapshot.checked(raw)
    if seen is None:
        return [f"POSITIONS  (exchange snapshot {why}: position-state-brain writes it again within a second)" if why
                else "POSITIONS  (no exchange snapshot yet: is position-state-brain running?)"]
    age = seen.age_s(int(time.time() * 1000))
    lines = [f"POSITIONS  (exchange snapshot {age:.1f}s old)",
             "  SYMBOL        AMOUNT          ENTRY          MARK           UNREALIZED PNL  LEDGER"]
    total = Decimal(0)
    for symbol, position in sorted(seen.positions.items()):
        mark = seen.mark(symbol) or position.entry_price
        pnl = (mark - position.entry_price) * position.amount
        total += pnl
        entry = ledger.read_entry(client, symbol)
        booked = f"unreadable ({entry.error})" if entry.error else ledger.amount(entry.position)
        lines.append(f"  {symbol:<13} {position.amount!s:<15} {position.entry_price!s:<14} {mark!s:<14} "
                     f"{pnl:>+.4f}{'':<7} {booked}")
    lines.append(f"  total unrealized PnL {total:+.4f} USDT over {len(seen.positions)} positions")
    return lines


def results(client: redis.Redis, count: int) -> list[str]:
    entries = client.xrevrange(keys.Stream.APPLY_RESULT, count=count) if count else []
    if not entries:
        return ["LAST RESULTS  none"]
    return ["LAST RESULTS"] + [f"  {format_result(fields)}" for _, fields in reversed(entries)]


def _fields(client: redis.Redis, key: str) -> dict[str, str]:
    try:
        return client.hgetall(key)
    except redis.ResponseError as exc:
        if not wrong_type(exc):
            raise
        return {}
