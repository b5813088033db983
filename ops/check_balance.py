#!/usr/bin/env python3
"""Account check: wallet, available balance, unrealized PnL, open positions and their notional.

    check_balance.py [--json]

Reads the exchange the fleet is configured for (EXCHANGE_TARGET and credentials from the
environment, else /etc/quantum/common.env as the daemons get it). Prints no credential.

Remote: add --host HOST [-p PORT] [-i KEY] [-o SSH_OPTION]... [--remote-python PY]
[--env NAME[=VALUE]]... to run it on HOST over ssh (ops/remote_run.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

PROG = "check_balance.py"
CENT = Decimal("0.01")


def main(argv: list[str]) -> int:
    if any(arg == "--host" or arg.startswith("--host=") for arg in argv):
        # Imported only here: a run on the remote host has no ops/ directory beside it.
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import remote_run

        return remote_run.rerun(__file__, argv)
    # Imported after the --host check: the operator's machine need not have the fleet installed.
    try:
        from shared.cli.common import CommandError
        from shared.exchange.errors import ExchangeError, ExchangeSettingsError
        from shared.logging import redact_text
    except ImportError:  # a local run by a python without the fleet: its venv's, if there is one
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import remote_run

        return remote_run.in_fleet_python(__file__, argv, PROG)
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    try:
        report = read_report()
    except (CommandError, ExchangeError, ExchangeSettingsError) as exc:
        print(f"{PROG}: {redact_text(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2, default=str) if args.json else "\n".join(table(report)))
    return 0


def read_report() -> dict[str, Any]:
    from shared.cli.common import load_fleet_env
    from shared.exchange.client import ExchangeClient
    from shared.exchange.target import load_exchange_settings

    load_fleet_env()
    exchange = ExchangeClient(load_exchange_settings())
    account = exchange.account()
    positions = [position_row(p) for p in sorted(exchange.positions(), key=lambda p: p.symbol)]
    return {
        "target": exchange.target.value,
        "endpoint": f"{exchange.root_url}/fapi",
        "wallet_balance": account.total_wallet_balance,
        "available_balance": account.available_balance,
        "unrealized_pnl": account.total_unrealized_profit,
        "margin_balance": account.total_margin_balance,
        "positions": positions,
        "total_notional": sum((row["notional"] for row in positions), Decimal(0)),
    }


def position_row(position: Any) -> dict[str, Any]:
    mark = position.mark_price or position.entry_price
    # Exposure is the size of the position whatever its side, so shorts count positive.
    notional = abs(position.notional) if position.notional is not None else abs(position.amount) * mark
    return {
        "symbol": position.symbol,
        "side": "LONG" if position.amount > 0 else "SHORT",
        "amount": position.amount,
        "entry_price": position.entry_price,
        "mark_price": mark,
        "notional": notional,
        "unrealized_pnl": position.unrealized_pnl,
    }


def money(value: Decimal) -> str:
    return f"{value.quantize(CENT):,}"


def pnl(value: Decimal) -> str:
    rounded = value.quantize(CENT)
    # A loss that rounds to nothing is shown as +0.00, not -0.00.
    return f"{rounded if rounded else abs(rounded):+,}"


def plain(value: Decimal) -> str:
    """As the exchange would print it, without trailing zeros."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


COLUMNS = (("SYMBOL", "<12"), ("SIDE", "<6"), ("AMOUNT", ">12"), ("ENTRY", ">14"), ("MARK", ">16"),
           ("NOTIONAL", ">12"), ("UNREALIZED PNL", ">15"))


def row_text(cells: list[str]) -> str:
    return "  " + "  ".join(f"{cell:{spec}}" for cell, (_, spec) in zip(cells, COLUMNS))


def table(report: dict[str, Any]) -> list[str]:
    lines = [
        f"Exchange: {report['target']} {report['endpoint']}",
        f"  Wallet balance     {money(report['wallet_balance']):>16} USDT",
        f"  Available balance  {money(report['available_balance']):>16} USDT",
        f"  Unrealized PnL     {pnl(report['unrealized_pnl']):>16} USDT",
        f"  Margin balance     {money(report['margin_balance']):>16} USDT",
        "",
        f"Open positions: {len(report['positions'])}",
    ]
    if report["positions"]:
        lines.append(row_text([name for name, _ in COLUMNS]))
        lines += [position_line(row) for row in report["positions"]]
    lines.append(f"Total notional: {money(report['total_notional'])} USDT")
    return lines


def position_line(row: dict[str, Any]) -> str:
    return row_text([row["symbol"], row["side"], plain(abs(row["amount"])), plain(row["entry_price"]),
                     plain(row["mark_price"]), money(row["notional"]), pnl(row["unrealized_pnl"])])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
