"""`quantum flatten SYMBOL|--all`: full-close plans for open positions, then their results.

Closes pass in reduce-only state (execution DISABLED) but not when halted (quantum:kill=1):
flatten says so up front rather than sending plans that must be refused.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from shared import keys, lua
from shared import snapshot as exchange_snapshot
from shared.cli.common import CommandError, add_redis_argument, fail, redis_from, wait_for_results
from shared.cli.up import format_result
from shared.schema import Action, Decision, Plan, Side
from shared.trading_state import read_switches

SNAPSHOT_MAX_AGE_S = 10.0


def register(commands: Any) -> None:
    parser = commands.add_parser("flatten", help="close open positions with reduce-only full-close plans")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("symbol", nargs="?", help="the symbol to close, e.g. BTCUSDT")
    target.add_argument("--all", action="store_true", help="close every open position")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the results (default 30)")
    add_redis_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _flatten(args)
    except CommandError as exc:
        return fail(str(exc))


def _flatten(args: argparse.Namespace) -> int:
    client = redis_from(args)
    kill, raw = lua.texts(client, [keys.KILL, keys.EXCHANGE_POSITIONS])
    if read_switches(kill, None).kill:  # as the fleet reads it: any on or unreadable value halts closes too
        raise CommandError(f"the fleet is halted (quantum:kill={kill!r}): closes are stopped too; "
                           "`quantum kill off` first")
    seen, _why = exchange_snapshot.checked(raw)
    if seen is None or seen.age_s(int(time.time() * 1000)) > SNAPSHOT_MAX_AGE_S:
        raise CommandError("no fresh exchange snapshot in Redis: is quantum-position-state-brain running?")
    plans = closing_plans(seen, None if args.all else args.symbol.upper(), int(time.time() * 1000))
    if not plans:
        print("nothing to flatten: no open position" + ("" if args.all else f" on {args.symbol.upper()}"))
        return 0
    since = client.xinfo_stream(keys.Stream.APPLY_RESULT)["last-generated-id"] if client.exists(keys.Stream.APPLY_RESULT) else "0"
    for plan in plans:
        client.xadd(keys.Stream.APPLY_PLAN, plan.to_fields())
        print(f"sent    {plan.plan_id}: {plan.side.value} {plan.qty} {plan.symbol} reduceOnly")
    results = wait_for_results(client, [p.plan_id for p in plans], args.timeout, since)
    return _report(plans, results)


def closing_plans(seen: exchange_snapshot.ExchangeSnapshot, symbol: str | None, now_ms: int) -> list[Plan]:
    symbols = sorted(seen.positions) if symbol is None else [symbol] if symbol in seen.positions else []
    return [
        Plan(plan_id=f"flatten-{s}-{now_ms}", decision=Decision.EXECUTE, symbol=s,
             side=Side.SELL if seen.amount(s) > 0 else Side.BUY, qty=abs(seen.amount(s)), reduce_only=True,
             action=Action.FULL_CLOSE_PROPOSED, source="flatten")
        for s in symbols
    ]


def _report(plans: list[Plan], results: dict[str, dict]) -> int:
    closed = 0
    for plan in plans:
        result = results.get(plan.plan_id)
        print(format_result(result) if result else f"TIMEOUT  {plan.plan_id}: no result yet (check `quantum status`)")
        closed += bool(result and result.get("executed") == "true")
    print(f"{closed}/{len(plans)} positions closed")
    return 0 if closed == len(plans) else 1
