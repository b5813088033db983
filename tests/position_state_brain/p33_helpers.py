"""Builders shared by the P3.3 tests: plans, rules, snapshots and a controllable clock."""

from __future__ import annotations

from decimal import Decimal

from microservices.position_state_brain.gates import GatePolicy, OpenOnPosition
from microservices.exchange_sim.testing import SimHandle
from shared.exchange.client import ExchangeClient
from shared.exchange.filters import SymbolRules
from shared.ledger import LedgerPosition
from shared.schema import Plan
from shared.snapshot import ExchangeSnapshot, PositionState

D = Decimal
NOW_MS = 1_769_442_764_520
ALLOWLIST = frozenset({"BTCUSDT", "ETHUSDT", "TRXUSDT"})


def rules(symbol: str = "BTCUSDT", step: str = "0.001") -> SymbolRules:
    return SymbolRules(
        symbol=symbol, status="TRADING", tick_size=D("0.1"), min_price=D("1"), max_price=D("1000000"),
        min_qty=D(step), max_qty=D("1000"), step_size=D(step), market_min_qty=D(step), market_max_qty=D("120"),
        market_step_size=D(step), min_notional=D("100"), quantity_precision=3, price_precision=2,
    )


def policy(**overrides) -> GatePolicy:
    values = dict(allowlist=ALLOWLIST, stale_threshold_s=10.0, qty_tolerance_steps=1, cooldown_s=15.0,
                  open_on_position=OpenOnPosition.DENY)
    return GatePolicy(**{**values, **overrides})


def plan(**fields: str) -> Plan:
    """A plan as redis-cli sends it: flat string fields."""
    base = {"plan_id": "p1", "decision": "EXECUTE", "symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
            "qty": "0.001", "reduceOnly": "false", "source": "test"}
    return Plan.from_fields({**base, **fields})


def close_plan(side: str, qty: str, symbol: str = "BTCUSDT") -> Plan:
    return plan(symbol=symbol, side=side, qty=qty, reduceOnly="true")


def snapshot(positions: dict[str, str] | None = None, fetched_at_ms: int = NOW_MS) -> ExchangeSnapshot:
    held = {s: PositionState(s, D(a), D("88000")) for s, a in (positions or {}).items()}
    return ExchangeSnapshot(fetched_at_ms, held, {"BTCUSDT": D("88000"), "ETHUSDT": D("2920")})


def ledger(symbol: str, amount: str) -> LedgerPosition:
    return LedgerPosition(symbol, D(amount), D("88000"))


class FakeClock:
    """Epoch seconds that move only when told to."""

    def __init__(self, now_s: float):
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def sim_env(handle: SimHandle) -> dict[str, str]:
    return {"EXCHANGE_TARGET": "simulator", "EXCHANGE_SIM_URL": handle.base_url,
            "EXCHANGE_SIM_API_KEY": handle.api_key, "EXCHANGE_SIM_API_SECRET": handle.api_secret}


def count_requests(client: ExchangeClient) -> list[str]:
    """Every HTTP request the client sends from now on, as 'METHOD /path'."""
    session = client._client.session
    seen: list[str] = []
    original = session.request

    def counting(method, url, *args, **kwargs):
        seen.append(f"{method.upper()} /{url.split('?')[0].split('/', 3)[-1]}")
        return original(method, url, *args, **kwargs)

    session.request = counting
    return seen
