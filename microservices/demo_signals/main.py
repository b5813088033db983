"""demo-signals: a stand-in signal producer for `quantum up`, writing trade intents on a timer.

Each tick it picks a symbol with no open position, prices it at the published mark, and
sends one intent with a stop and a take-profit, as the seed's AI engine did.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from decimal import Decimal

from pydantic import Field

from shared import keys, snapshot
from shared.runtime import daemon
from shared.schema import format_decimal
from shared.settings import CommonSettings, load_settings

NAME = "demo-signals"


class DemoSettings(CommonSettings):
    namespaces = (*CommonSettings.namespaces, "DEMO_")
    demo_interval_sec: float = Field(default=3.0, gt=0)
    # BTCUSDT is left to the operator's own `quantum plan` tries.
    demo_symbols: str = "ETHUSDT,TRXUSDT,LINKUSDT,AVAXUSDT,LTCUSDT,NEARUSDT"
    demo_rest_sec: float = Field(default=90.0, ge=0)
    demo_size_usd: Decimal = Field(default=Decimal("180"), gt=0)
    demo_stop_pct: Decimal = Field(default=Decimal("0.01"), gt=0, lt=1)
    demo_take_profit_pct: Decimal = Field(default=Decimal("0.02"), gt=0)
    demo_seed: int | None = None


def intent_for(symbol: str, mark: Decimal, settings: DemoSettings, rng: random.Random) -> dict[str, str]:
    side = rng.choice(("BUY", "SELL"))
    direction = Decimal(1) if side == "BUY" else Decimal(-1)
    return {
        "symbol": symbol, "side": side, "position_size_usd": format_decimal(settings.demo_size_usd),
        "leverage": "5", "entry_price": format_decimal(mark),
        "stop_loss": format_decimal(mark * (1 - direction * settings.demo_stop_pct)),
        "take_profit": format_decimal(mark * (1 + direction * settings.demo_take_profit_pct)),
        "confidence": f"{rng.uniform(0.62, 0.95):.2f}", "timestamp": datetime.now(UTC).isoformat(), "source": "demo",
    }


def tick(ctx: daemon.DaemonContext, settings: DemoSettings, rng: random.Random) -> None:
    seen = snapshot.read(ctx.redis)
    if seen is None:
        return
    symbols = [s.strip() for s in settings.demo_symbols.split(",")]
    last_exec = ctx.redis.mget([keys.cooldown_last_exec(s) for s in symbols])
    rested_before_ms = int(time.time() * 1000 - settings.demo_rest_sec * 1000)
    free = [s for s, last in zip(symbols, last_exec)
            if s not in seen.positions and seen.mark(s) and int(last or 0) < rested_before_ms]
    if not free:
        return
    symbol = rng.choice(free)
    fields = intent_for(symbol, seen.mark(symbol), settings, rng)
    ctx.redis.xadd(keys.Stream.TRADE_INTENT, fields)
    ctx.log.info("demo_intent", symbol=symbol, side=fields["side"], entry_price=fields["entry_price"])


def main() -> int:
    settings = load_settings(DemoSettings)
    ctx = daemon.start(NAME, settings)
    rng = random.Random(settings.demo_seed)
    return daemon.run_timer(ctx, settings.demo_interval_sec, lambda: tick(ctx, settings, rng))
