"""`quantum flatten SYMBOL|--all`: full-close plans for open positions, their results, then what the exchange
shows: it exits 0 only when a snapshot fetched after the results shows the positions flat. A position larger than
one MARKET order may hold closes over rounds, each sent once the one before closed something.

Closes pass in reduce-only state (execution DISABLED) but not when halted (quantum:kill=1):
flatten says so up front rather than sending plans that must be refused.
"""

from __future__ import annotations

import argparse
import time
from decimal import Decimal, InvalidOperation
from typing import Any

from shared import keys, lua
from shared import snapshot as exchange_snapshot
from shared.cli.common import CommandError, add_redis_argument, fail, redis_from, wait_for_results
from shared.cli.up import format_result
from shared.schema import Action, Decision, Plan, Side
from shared.trading_state import read_switches

SNAPSHOT_MAX_AGE_S = 10.0
MAX_ROUNDS = 20  # a position closes by one MARKET order's maxQty a plan: 20 rounds close 20 x maxQty


def register(commands: Any) -> None:
    parser = commands.add_parser("flatten", help="close open positions with reduce-only full-close plans")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("symbol", nargs="?", help="the symbol to close, e.g. BTCUSDT")
    target.add_argument("--all", action="store_true", help="close every open position")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for the results, then for a snapshot after them (default 30 each; "
                             "each round of a position closed over several orders waits as long)")
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
    symbols, seen_after = [p.symbol for p in plans], None
    for round_no in range(1, MAX_ROUNDS + 1):
        results = _send(client, plans, args.timeout)
        # A close goes out at most one MARKET order's maxQty at a time (the executor cuts it): a plan whose order
        # was cut (executed for less than the plan asked) leaves the rest open, which the next round closes, as long
        # as the position is still the one being closed (same side, smaller). Anything else is left to the report.
        cut = {p.symbol: p for p in plans if _cut_short(p, results.get(p.plan_id))}
        if not cut or round_no == MAX_ROUNDS:
            break
        seen_after = _snapshot_after(client, int(time.time() * 1000) + exchange_snapshot.SURELY_SHOWN_MS, args.timeout)
        if seen_after is None:
            break
        plans = [p for p in closing_plans(seen_after, None, int(time.time() * 1000), round_no + 1)
                 if p.symbol in cut and p.side is cut[p.symbol].side and p.qty < cut[p.symbol].qty]
        if not plans:
            break  # the snapshot just read, after this round's results, is the one to report from
        seen_after = None
        print(f"round {round_no + 1}: {len(plans)} still open after a close cut to one order's maximum, closing more")
    return _confirm(client, symbols, args.all, int(time.time() * 1000) + exchange_snapshot.SURELY_SHOWN_MS,
                    wait_s=args.timeout, seen=seen_after)


def _cut_short(plan: Plan, result: dict | None) -> bool:
    """The plan's order executed for less than the plan asked (the executor cut the close to maxQty)."""
    if result is None or result.get("executed") != "true":
        return False
    try:
        return Decimal(result.get("qty") or "0") < plan.qty
    except InvalidOperation:
        return False


def _send(client, plans: list[Plan], timeout_s: float) -> dict[str, dict]:
    since = client.xinfo_stream(keys.Stream.APPLY_RESULT)["last-generated-id"] if client.exists(keys.Stream.APPLY_RESULT) else "0"
    for plan in plans:
        client.xadd(keys.Stream.APPLY_PLAN, plan.to_fields())
        print(f"sent    {plan.plan_id}: {plan.side.value} {plan.qty} {plan.symbol} reduceOnly")
    results = wait_for_results(client, [p.plan_id for p in plans], timeout_s, since)
    _report(plans, results)
    return results


def closing_plans(seen: exchange_snapshot.ExchangeSnapshot, symbol: str | None, now_ms: int,
                  round_no: int = 1) -> list[Plan]:
    symbols = sorted(seen.positions) if symbol is None else [symbol] if symbol in seen.positions else []
    suffix = "" if round_no == 1 else f"-{round_no}"
    return [
        Plan(plan_id=f"flatten-{s}-{now_ms}{suffix}", decision=Decision.EXECUTE, symbol=s,
             side=Side.SELL if seen.amount(s) > 0 else Side.BUY, qty=abs(seen.amount(s)), reduce_only=True,
             action=Action.FULL_CLOSE_PROPOSED, source="flatten")
        for s in symbols
    ]


def _report(plans: list[Plan], results: dict[str, dict]) -> None:
    for plan in plans:
        result = results.get(plan.plan_id)
        print(format_result(result) if result else f"TIMEOUT  {plan.plan_id}: no result yet (check `quantum status`)")


def _confirm(client, symbols: list[str], every: bool, after_ms: int, wait_s: float,
             seen: exchange_snapshot.ExchangeSnapshot | None = None) -> int:
    """Flat is what the exchange shows, not what the results say: a position that grew after the snapshot the
    plans were sized on, or one opened meanwhile (--all), is still open. Read the first snapshot fetched after the
    results (P3.3 publishes one every P33_POLL_SEC, 1 s by default; --timeout bounds the wait) and name what is
    left; 0 only when nothing is. `seen`: such a snapshot already read."""
    seen = seen or _snapshot_after(client, after_ms, wait_s)
    if seen is None:
        print(f"could not confirm: no exchange snapshot newer than the results within {wait_s:g}s "
              "(check `quantum status`)")
        return 1
    closed = sum(1 for symbol in symbols if not seen.amount(symbol))
    left = {s: seen.amount(s) for s in sorted(set(symbols) | (set(seen.positions) if every else set())) if seen.amount(s)}
    for symbol, amount in left.items():
        print(f"still open: {symbol} {amount} (run flatten again, or see `quantum status`)")
    print(f"{closed}/{len(symbols)} positions closed" + (f", {len(left)} still open" if left else ""))
    return 1 if left else 0


def _snapshot_after(client, after_ms: int, wait_s: float) -> exchange_snapshot.ExchangeSnapshot | None:
    """The first exchange snapshot fetched after `after_ms` (P3.3 publishes one every P33_POLL_SEC, 1 s by default),
    or None after `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        [raw] = lua.texts(client, [keys.EXCHANGE_POSITIONS])
        seen, _why = exchange_snapshot.checked(raw)
        if seen is not None and seen.fetched_at_ms > after_ms:
            return seen
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)  # deliberate: a CLI polling P3.3's SET of the snapshot, which notifies nobody
