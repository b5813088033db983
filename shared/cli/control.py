"""`quantum kill on|off`, `quantum execution enable|disable`, `quantum plan open|close SYMBOL SIDE QTY`."""

from __future__ import annotations

import argparse
import time
from typing import Any

from shared import keys, results
from shared.cli.common import CommandError, add_redis_argument, fail, in_redis, redis_from, wait_for_results
from shared.cli.up import format_result
from shared.schema import EntryError, Plan


def register(commands: Any) -> None:
    kill = commands.add_parser("kill", help="halt all execution, opens and closes (quantum:kill)")
    kill.add_argument("state", choices=["on", "off"])
    add_redis_argument(kill)
    kill.set_defaults(run=_guard(run_kill))

    execution = commands.add_parser("execution", help="enable opens, or disable them (reduce-only)")
    execution.add_argument("state", choices=["enable", "disable"])
    add_redis_argument(execution)
    execution.set_defaults(run=_guard(run_execution))

    dry_run = commands.add_parser("dry-run", help="force dry run fleet-wide at once (quantum:apply:dry_run), or lift it")
    dry_run.add_argument("state", choices=["on", "off"])
    add_redis_argument(dry_run)
    dry_run.set_defaults(run=_guard(run_dry_run))

    plan = commands.add_parser("plan", help="send one MARKET plan and print its result")
    plan.add_argument("kind", choices=["open", "close"], help="close sends reduceOnly=true")
    plan.add_argument("symbol")
    plan.add_argument("side", type=str.upper, choices=["BUY", "SELL"])
    plan.add_argument("qty")
    plan.add_argument("--leverage", help="open only: the symbol's leverage, set before the order (whole number 1-125)")
    plan.add_argument("--plan-id", help="default: cli-<symbol>-<ms>")
    plan.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for the result (default 20)")
    add_redis_argument(plan)
    plan.set_defaults(run=_guard(run_plan))


def _guard(command):
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except CommandError as exc:
            return fail(str(exc))

    return run


def run_kill(args: argparse.Namespace) -> int:
    redis_from(args).set(keys.KILL, "1" if args.state == "on" else "0")
    print(("kill switch ON: all execution halted" if args.state == "on" else "kill switch OFF") + in_redis(args))
    return 0


def run_execution(args: argparse.Namespace) -> int:
    client = redis_from(args)
    if args.state == "enable":
        client.set(keys.GOVERNOR_EXECUTION, "ENABLED")
        client.delete(keys.GOVERNOR_DISARMED)
        print("execution ENABLED: opens and closes pass the gates" + in_redis(args))
    else:
        client.set(keys.GOVERNOR_EXECUTION, "DISABLED")
        print("execution DISABLED: reduce-only, closes still pass" + in_redis(args))
    return 0


def run_dry_run(args: argparse.Namespace) -> int:
    client = redis_from(args)
    if args.state == "on":
        client.set(keys.FORCE_DRY_RUN, "1")
        print("dry run FORCED: every plan runs the gates and nothing is sent" + in_redis(args))
    else:
        client.delete(keys.FORCE_DRY_RUN)
        print("dry run lifted: APPLY_MODE decides again" + in_redis(args))
    return 0


def run_plan(args: argparse.Namespace) -> int:
    client = redis_from(args)
    plan_id = args.plan_id or f"cli-{args.symbol.lower()}-{int(time.time() * 1000)}"
    fields = {"plan_id": plan_id, "decision": "EXECUTE", "symbol": args.symbol, "side": args.side, "type": "MARKET",
              "qty": args.qty, "reduceOnly": "true" if args.kind == "close" else "false", "source": "quantum_cli"}
    if args.leverage is not None:
        if args.kind == "close":
            raise CommandError("--leverage is for opens: a close never changes it")
        fields["leverage"] = args.leverage
    try:
        Plan.from_fields(fields)
    except EntryError as exc:
        raise CommandError(f"invalid plan: {exc}") from None
    if results.has_result(client, plan_id):  # the executor would dead-letter it (duplicate_plan), sending nothing
        raise CommandError(f"plan {plan_id} already has its result: a plan_id is used once, choose another")
    since = client.xinfo_stream(keys.Stream.APPLY_RESULT)["last-generated-id"] if client.exists(keys.Stream.APPLY_RESULT) else "0"
    client.xadd(keys.Stream.APPLY_PLAN, fields)
    print(f"sent    {plan_id}: {args.kind} {args.side} {args.qty} {args.symbol.upper()}")
    result = wait_for_results(client, [plan_id], args.timeout, since).get(plan_id)
    if result is None:
        raise CommandError(f"no result for {plan_id} within {args.timeout:g}s: is the fleet running? (`quantum status`)")
    print(format_result(result))
    return 0 if result.get("executed") == "true" else 1
