"""Intent bridge settings (etc/quantum/intent-bridge.env)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field

from shared.settings import CommonSettings

DEFAULT_SYMBOLS = (
    "BTCUSDT,ETHUSDT,TRXUSDT,LTCUSDT,LINKUSDT,SANDUSDT,MANAUSDT,GALAUSDT,XMRUSDT,SEIUSDT,STRKUSDT,TONUSDT,NEARUSDT,AVAXUSDT"
)


class BridgeSettings(CommonSettings):
    namespaces = (*CommonSettings.namespaces, "BRIDGE_")
    metrics_port: int = Field(default=8041, ge=0, le=65535)
    bridge_allowlist: str = Field(default=DEFAULT_SYMBOLS, pattern=r"^[A-Za-z0-9]+(,\s*[A-Za-z0-9]+)*$")
    bridge_min_confidence: Decimal = Field(default=Decimal("0.6"), ge=0, le=1)
    # An intent is a market entry at a price of its moment: one that waited longer in the stream (a backlog, a
    # bridge started late on STREAM_GROUP_START_ID 0) is dead-lettered (intent_expired), never planned.
    bridge_intent_max_age_sec: float = Field(default=60.0, gt=0, le=86400)

    @property
    def intent_max_age_ms(self) -> int:
        return int(self.bridge_intent_max_age_sec * 1000)

    @property
    def allowlist(self) -> frozenset[str]:
        return frozenset(symbol.strip().upper() for symbol in self.bridge_allowlist.split(","))
