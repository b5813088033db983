"""The plans the bench sends, and the symbol lists it allowlists.

Every plan is the seed's operator plan as `redis-cli XADD` sends it (flat string fields), a BUY
MARKET open. With P33_OPEN_ON_POSITION=scale_in and the bench's caps every such plan on a
tradeable symbol executes; alternating sides would be refused side_mismatch by P3.3.
"""

from __future__ import annotations

import json
import urllib.request
from decimal import ROUND_UP, Decimal

# Allowlisted names the simulator does not list: P3.3 denies them unknown_symbol (after the
# allowlist, snapshot and rules lookups), the governor no_mark_price, the executor writes a refusal.
SYNTHETIC_FORMAT = "BENCH{:04d}USDT"


def sim_quantities(sim_url: str, notional_margin: Decimal = Decimal("1.5")) -> dict[str, Decimal]:
    """For each simulator symbol, the smallest MARKET quantity worth 1.5x its min notional."""
    info = _get_json(f"{sim_url}/fapi/v1/exchangeInfo")
    marks = {m["symbol"]: Decimal(m["markPrice"]) for m in _get_json(f"{sim_url}/fapi/v1/premiumIndex")}
    quantities = {}
    for symbol in info["symbols"]:
        filters = {f["filterType"]: f for f in symbol["filters"]}
        lot = filters["MARKET_LOT_SIZE"]
        step, min_qty = Decimal(lot["stepSize"]), Decimal(lot["minQty"])
        wanted = Decimal(filters["MIN_NOTIONAL"]["notional"]) * notional_margin / marks[symbol["symbol"]]
        qty = (wanted / step).to_integral_value(ROUND_UP) * step
        quantities[symbol["symbol"]] = max(qty, min_qty).normalize()
    return quantities


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def allowlist(size: int, real: list[str]) -> list[str]:
    """`size` names: real symbols first (BTCUSDT always), then synthetic ones."""
    names = ["BTCUSDT"] + [s for s in real if s != "BTCUSDT"]
    names = names[:size]
    names += [SYNTHETIC_FORMAT.format(i) for i in range(size - len(names))]
    return names


def plan_fields(plan_id: str, symbol: str, qty: Decimal | str, side: str = "BUY") -> dict[str, str]:
    return {"plan_id": plan_id, "decision": "EXECUTE", "symbol": symbol, "side": side, "type": "MARKET",
            "qty": str(qty), "reduceOnly": "false", "source": "bench"}
