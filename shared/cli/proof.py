"""`quantum proof`: end-to-end execution proof through the real fleet.

Injects small test opens into apply.plan, waits for each plan's result, confirms every
executed order on the exchange by its client order id, optionally closes them again with
reduce-only plans, and writes a machine-readable proof. ops/verify_execution_e2e.py runs
the same code, so both print the same lines. Exit 0 only when every plan executed and
every order was confirmed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis

from shared import keys
from shared.cli.common import CommandError, add_redis_argument, fail, load_fleet_env, redis_from, wait_for_results
from shared.exchange.client import ExchangeClient
from shared.exchange.errors import ExchangeError, ExchangeSettingsError
from shared.exchange.models import OrderResult
from shared.exchange.target import Target, load_exchange_settings
from shared.logging import redact_text
from shared.schema.fields import format_decimal, parse_decimal

DEFAULT_OUT = "/tmp/execution_proof.json"
DEFAULT_COUNT = 3
# Opens that clear each symbol's minimum notional (simulator and Binance filters) with margin,
# and stay far below the governor's default per-trade cap of 200 USDT.
TEST_OPENS: tuple[tuple[str, str], ...] = (
    ("BTCUSDT", "0.002"), ("ETHUSDT", "0.01"), ("TRXUSDT", "100"),
    ("LINKUSDT", "2"), ("AVAXUSDT", "2"), ("NEARUSDT", "20"),
)
# An order the exchange refused or dropped proves nothing.
DEAD_ORDER_STATUSES = frozenset({"REJECTED", "EXPIRED", "CANCELED", "EXPIRED_IN_MATCH"})


@dataclass
class TestPlan:
    plan_id: str
    symbol: str
    side: str
    qty: str
    reduce_only: bool
    message_id: str = ""

    def fields(self) -> dict[str, str]:
        return {"plan_id": self.plan_id, "decision": "EXECUTE", "symbol": self.symbol, "side": self.side,
                "type": "MARKET", "qty": self.qty, "reduceOnly": "true" if self.reduce_only else "false",
                "source": "execution_proof"}


@dataclass
class Proof:
    verified: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    planned: int = 0
    executed: list[tuple[TestPlan, dict[str, str]]] = field(default_factory=list)  # results saying a fill
    unanswered: list[TestPlan] = field(default_factory=list)  # no result in time: its order may still fill

    def fail(self, plan: TestPlan, stage: str, reason: str, detail: str = "") -> None:
        self.failures.append({"plan_id": plan.plan_id, "symbol": plan.symbol, "stage": stage,
                              "reason": reason, "detail": detail})


def register(commands: Any) -> None:
    parser = commands.add_parser("proof", help="inject test plans, confirm their orders on the exchange, write a proof")
    add_proof_arguments(parser)
    parser.set_defaults(run=run)


def add_proof_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT,
                        help=f"test opens to inject, 1..{len(TEST_OPENS)} (default {DEFAULT_COUNT})")
    parser.add_argument("--plan", action="append", default=[], metavar="SYMBOL:QTY",
                        help="a test open to use instead of the built-in ones (repeatable)")
    parser.add_argument("--close", action="store_true", help="close the test positions again with reduce-only plans")
    parser.add_argument("--mainnet", action="store_true",
                        help="allow the proof when the fleet or this command trades on mainnet: real orders, real money")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"proof file (default {DEFAULT_OUT}; '-' prints it to stdout)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the results (default 30)")
    add_redis_argument(parser)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Entry point of ops/verify_execution_e2e.py: the command without the `quantum` front."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_proof_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    # With --out - the proof owns stdout, so the narration moves to stderr.
    say = _printer(sys.stderr if args.out == "-" else sys.stdout)
    try:
        load_fleet_env()  # the fleet's exchange settings too; redis_from resolves the Redis the same way
        opens = requested_opens(args.plan, args.count)
        client = redis_from(args)
        exchange = ExchangeClient(load_exchange_settings())
        return prove(client, exchange, opens, args, say)
    except (CommandError, ExchangeSettingsError) as exc:
        return fail(str(exc))
    except (ExchangeError, redis.RedisError) as exc:
        return fail(redact_text(f"{type(exc).__name__}: {exc}"))


def _printer(stream: Any) -> Callable[[str], None]:
    return lambda line: print(line, file=stream, flush=True)


def requested_opens(plans: list[str], count: int) -> list[tuple[str, str]]:
    if plans:
        return [_parse_plan(text) for text in plans]
    if not 1 <= count <= len(TEST_OPENS):
        raise CommandError(f"--count must be 1..{len(TEST_OPENS)} (or name the opens with --plan SYMBOL:QTY)")
    return list(TEST_OPENS)


def _parse_plan(text: str) -> tuple[str, str]:
    symbol, _, qty = text.partition(":")
    try:
        valid = symbol.isalnum() and Decimal(qty) > 0
    except ArithmeticError:
        valid = False
    if not valid:
        raise CommandError(f"--plan wants SYMBOL:QTY such as BTCUSDT:0.002, got {text!r}")
    return symbol.upper(), qty


def prove(client: redis.Redis, exchange: ExchangeClient, opens: list[tuple[str, str]], args: argparse.Namespace,
          say: Callable[[str], None]) -> int:
    mode = client.get(keys.MODE) or "unknown"
    endpoint = f"{exchange.root_url}/fapi"
    say(f"Redis: {redact_text(args.redis_url)}")
    say(f"Exchange: {exchange.target.value} {endpoint} (fleet mode {mode})")
    if (exchange.target is Target.MAINNET or mode == Target.MAINNET.value.upper()) and not args.mainnet:
        raise CommandError("the fleet trades on mainnet: the proof would open real positions with real money; "
                           "pass --mainnet (and --close) to mean it")
    proof = Proof()
    stamp = int(time.time() * 1000)
    chosen = choose_opens(exchange, opens, len(opens) if args.plan else args.count, say)
    batch = [TestPlan(f"proof-{stamp}-{n}", symbol, "BUY", qty, False) for n, (symbol, qty) in enumerate(chosen, 1)]
    run_batch(client, exchange, batch, "test plans", "orders", args.timeout, proof, say)
    filled = list(proof.executed)
    may_be_open = [plan.symbol for plan in proof.unanswered]  # no result in time: the order may still fill
    if args.close and filled:  # every open whose result says it filled, verified on the exchange or not
        closes = [close_plan_for(plan, result) for plan, result in filled]
        run_batch(client, exchange, closes, "close plans (reduce-only)", "close orders", args.timeout, proof, say)
        closed = {plan.plan_id for plan, _result in proof.executed[len(filled):]}
        may_be_open += [plan.symbol for plan in closes if plan.plan_id not in closed]
    if args.close:
        for symbol in may_be_open:
            say(f"  MAY BE OPEN  {symbol}: check `quantum status`, then `quantum flatten {symbol}`")
    document = proof_document(proof, mode, exchange, endpoint)
    if args.close:
        document["possibly_open"] = may_be_open
    save_proof(document, args.out, say)
    return 0 if document["ok"] else 1


def choose_opens(exchange: ExchangeClient, opens: list[tuple[str, str]], count: int,
                 say: Callable[[str], None]) -> list[tuple[str, str]]:
    """The first `count` opens on symbols without a position: P3.3 denies an open on an open position."""
    held = {position.symbol for position in exchange.positions()}
    chosen = []
    for symbol, qty in opens:
        if len(chosen) == count:
            break
        if symbol in held:
            say(f"Skipping {symbol}: a position is open there (P3.3 denies opens on an open position)")
        else:
            chosen.append((symbol, qty))
    if not chosen:
        raise CommandError("every test symbol has an open position; close one or name others with --plan SYMBOL:QTY")
    return chosen


def run_batch(client: redis.Redis, exchange: ExchangeClient, batch: list[TestPlan], what: str, orders: str,
              timeout: float, proof: Proof, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Inject, wait, verify; the verified orders of this batch."""
    since = inject(client, batch)
    proof.planned += len(batch)
    say(f"Injected {len(batch)} {what}")
    for plan in batch:
        say(f"  {plan.plan_id}  {plan.side} {plan.qty} {plan.symbol} reduceOnly={str(plan.reduce_only).lower()}"
            f"  message {plan.message_id}")
    results = wait_for_results(client, [plan.plan_id for plan in batch], timeout, since)
    verified = [order for plan in batch if (order := check_plan(exchange, plan, results.get(plan.plan_id), timeout,
                                                                 proof, say)) is not None]
    proof.verified.extend(verified)
    say(f"{len(verified)}/{len(batch)} {orders} verified on the exchange")
    return verified


def inject(client: redis.Redis, batch: list[TestPlan]) -> str:
    """XADD every plan; returns the result-stream id to read results from."""
    since = _last_result_id(client)
    for plan in batch:
        plan.message_id = client.xadd(keys.Stream.APPLY_PLAN, plan.fields())
    return since


def _last_result_id(client: redis.Redis) -> str:
    """Results are read from here on, so a result that lands before we start waiting is not missed."""
    if not client.exists(keys.Stream.APPLY_RESULT):
        return "0"
    return client.xinfo_stream(keys.Stream.APPLY_RESULT)["last-generated-id"]


def check_plan(exchange: ExchangeClient, plan: TestPlan, result: dict[str, str] | None, timeout: float, proof: Proof,
               say: Callable[[str], None]) -> dict[str, Any] | None:
    if result is None:
        say(f"  FAILED   {plan.plan_id}: no result within {timeout:g}s (is the fleet running? `quantum status`)")
        proof.fail(plan, "result", "no_result", f"no result within {timeout:g}s")
        proof.unanswered.append(plan)
        return None
    if result.get("executed") != "true":
        say(f"  REFUSED  {plan.plan_id}: {result.get('reason')}: {result.get('detail', '')}")
        proof.fail(plan, "result", result.get("reason") or "not_executed", result.get("detail", ""))
        return None
    proof.executed.append((plan, result))
    say(f"  FILLED   {plan.plan_id}: order {result.get('order_id')} {result.get('filled_qty')} @ {result.get('avg_price')}")
    return verify_order(exchange, plan, result, proof, say)


def verify_order(exchange: ExchangeClient, plan: TestPlan, result: dict[str, str], proof: Proof,
                 say: Callable[[str], None]) -> dict[str, Any] | None:
    client_order_id = result.get("client_order_id") or ""
    try:
        order = exchange.get_order(plan.symbol, client_order_id)
    except (ExchangeError, ValueError) as exc:
        return _unverified(plan, proof, say, "exchange_error", redact_text(str(exc)))
    problem = order_problem(order, result)
    if problem is not None:
        return _unverified(plan, proof, say, *problem)
    say(f"  verified {order.symbol} orderId={order.order_id} clientOrderId={order.client_order_id} "
        f"status={order.status} executedQty={format_decimal(order.executed_qty)} avgPrice={format_decimal(order.avg_price)}")
    return order_entry(order, plan)


def order_problem(order: OrderResult | None, result: dict[str, str]) -> tuple[str, str] | None:
    """Why the exchange's order does not confirm the result, or None when it does."""
    if order is None:
        return "order_not_found", f"no order with clientOrderId {result.get('client_order_id')} on the exchange"
    if str(order.order_id) != result.get("order_id"):
        return "order_id_mismatch", f"result says {result.get('order_id')}, exchange says {order.order_id}"
    if order.status in DEAD_ORDER_STATUSES:
        return "order_not_live", f"exchange status {order.status}"
    # What README calls a good proof (found in review: a PARTIALLY_FILLED or NEW order passed, exit 0): filled, by the
    # quantity the fleet recorded.
    if order.status != "FILLED":
        return "order_not_filled", f"exchange status {order.status}"
    if _decimal_or_none(result.get("filled_qty")) != order.executed_qty:
        return "filled_qty_mismatch", (f"result says {result.get('filled_qty')}, exchange executedQty "
                                       f"{format_decimal(order.executed_qty)}")
    return None


def _decimal_or_none(text: str | None) -> Decimal | None:
    try:
        return parse_decimal(text)
    except ValueError:  # absent or not a number: no quantity recorded
        return None


def _unverified(plan: TestPlan, proof: Proof, say: Callable[[str], None], reason: str, detail: str) -> None:
    say(f"  FAILED   {plan.plan_id}: {reason}: {detail}")
    proof.fail(plan, "exchange", reason, detail)
    return None


def order_entry(order: OrderResult, plan: TestPlan) -> dict[str, Any]:
    return {"symbol": order.symbol, "orderId": order.order_id, "clientOrderId": order.client_order_id,
            "side": order.side.value, "status": order.status, "executedQty": format_decimal(order.executed_qty),
            "avgPrice": format_decimal(order.avg_price), "reduceOnly": plan.reduce_only,
            "timestamp": order.update_time_ms, "plan_id": plan.plan_id, "message_id": plan.message_id}


def close_plan_for(plan: TestPlan, result: dict[str, str]) -> TestPlan:
    """The reduce-only close of what an open's result says filled."""
    side = "SELL" if plan.side == "BUY" else "BUY"
    return TestPlan(f"{plan.plan_id}-close", plan.symbol, side, result.get("filled_qty") or plan.qty, True)


def proof_document(proof: Proof, mode: str, exchange: ExchangeClient, endpoint: str) -> dict[str, Any]:
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "mode": mode,
        "target": exchange.target.value,
        "endpoint": endpoint,
        "stream": keys.Stream.APPLY_PLAN,
        "result_stream": keys.Stream.APPLY_RESULT,
        "plans_injected": proof.planned,
        "verified_orders": proof.verified,
        "failures": proof.failures,
        "ok": not proof.failures and len(proof.verified) == proof.planned,
    }


def save_proof(document: dict[str, Any], out: str, say: Callable[[str], None]) -> None:
    text = json.dumps(document, indent=2) + "\n"
    if out == "-":
        sys.stdout.write(text)
        return
    path = Path(out)
    path.write_text(text, encoding="utf-8")
    say(f"Proof saved to: {path}")
