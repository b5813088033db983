"""Builders shared by the governor tests: plans as redis-cli sends them, snapshots, a settable clock."""

from __future__ import annotations

from decimal import Decimal

from shared.schema import Plan
from shared.snapshot import SURELY_SHOWN_MS, ExchangeSnapshot, PositionState

NOW_MS = 1_769_463_652_000
NOW_S = NOW_MS / 1000
SHOWN_MS = SURELY_SHOWN_MS + 1  # a snapshot fetched this long after a result surely shows its fill


def result_marker(at_ms: int, outcome: str = "executed") -> str:
    """A plan's result marker as shared.results' FINISH writes it: when, its call's token, what the plan came to
    (executed, or the reason it did not)."""
    return f"{at_ms} 0123456789abcdef {outcome}"


def plan(plan_id: str = "test_open_005", symbol: str = "BTCUSDT", qty: str = "0.001", reduce_only: str = "false",
         **extra: str) -> Plan:
    """A plan parsed from flat fields, exactly as `redis-cli XADD ... reduceOnly false` delivers it."""
    fields = {"plan_id": plan_id, "decision": "EXECUTE", "symbol": symbol, "side": "BUY", "type": "MARKET",
              "qty": qty, "reduceOnly": reduce_only, "source": "test_manual", **extra}
    return Plan.from_fields(fields)


def close_plan(plan_id: str = "close_bt", symbol: str = "BTCUSDT", **extra: str) -> Plan:
    return plan(plan_id, symbol, qty="0.002", reduce_only="true", side="SELL", **extra)


def snapshot(positions: dict[str, str] | None = None, marks: dict[str, str] | None = None,
             fetched_at_ms: int = NOW_MS) -> ExchangeSnapshot:
    """positions: symbol -> signed amount (entry price 1); marks: symbol -> mark price."""
    held = {s: PositionState(s, Decimal(amount), Decimal(1)) for s, amount in (positions or {}).items()}
    return ExchangeSnapshot(fetched_at_ms, held, {s: Decimal(m) for s, m in (marks or {}).items()})


def positions_worth(count: int, each_usdt: str = "10") -> tuple[dict[str, str], dict[str, str]]:
    """`count` open positions on symbols POS0USDT..., each worth `each_usdt` at a mark of 1."""
    symbols = [f"POS{i}USDT" for i in range(count)]
    return {s: each_usdt for s in symbols}, {s: "1" for s in symbols}


class Clock:
    """The injected clock: seconds, moved by tests."""

    def __init__(self, now_s: float = NOW_S):
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds
