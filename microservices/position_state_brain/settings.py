"""Position-state brain settings (etc/quantum/position-state-brain.env)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator

from microservices.position_state_brain.gates import GatePolicy, OpenOnPosition
from shared.settings import CommonSettings

DEFAULT_ALLOWLIST = (
    "BTCUSDT,ETHUSDT,TRXUSDT,LTCUSDT,LINKUSDT,SANDUSDT,MANAUSDT,GALAUSDT,XMRUSDT,SEIUSDT,STRKUSDT,TONUSDT,"
    "NEARUSDT,AVAXUSDT"
)
_SYMBOL = re.compile(r"^[A-Z0-9]{2,24}$")


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def parse_allowlist(text: str) -> frozenset[str]:
    """A comma-separated list of symbols, any case, blanks ignored; empty or malformed is refused."""
    symbols = [part.strip().upper() for part in text.split(",") if part.strip()]
    if not symbols:
        raise ValueError("must name at least one symbol")
    malformed = [s for s in symbols if not _SYMBOL.match(s)]
    if malformed:
        raise ValueError(f"not a symbol: {malformed[0][:24]!r}")
    return frozenset(symbols)


class PositionStateSettings(CommonSettings):
    namespaces = (*CommonSettings.namespaces, "P33_")
    metrics_port: int = Field(default=8045, ge=0, le=65535)
    # A plain string: pydantic-settings would try to parse a list field from the environment as JSON.
    # It limits opens only: closes of a position the exchange shows pass on any symbol (gates.symbol_allowed).
    p33_allowlist: str = DEFAULT_ALLOWLIST
    p33_poll_sec: float = Field(default=1.0, gt=0, le=60)
    p33_stale_threshold_sec: float = Field(default=10.0, gt=0)
    p33_cooldown_sec: float = Field(default=15.0, ge=0)
    p33_permit_ttl: int = Field(default=60, ge=1, le=86_400)
    # In common.env: reconcile reads it too, and heals every difference P3.3 holds a symbol for.
    p33_qty_tolerance_steps: int = Field(default=1, ge=0)
    p33_open_on_position: Annotated[OpenOnPosition, BeforeValidator(_lower)] = OpenOnPosition.DENY

    @field_validator("p33_allowlist")
    @classmethod
    def _allowlist_parses(cls, value: str) -> str:
        parse_allowlist(value)
        return value

    @property
    def allowlist(self) -> frozenset[str]:
        return parse_allowlist(self.p33_allowlist)

    @property
    def stale_below_poll(self) -> bool:
        """A threshold under the poll interval denies plans between refreshes (useful only to force stale)."""
        return self.p33_stale_threshold_sec < self.p33_poll_sec

    def policy(self) -> GatePolicy:
        return GatePolicy(
            allowlist=self.allowlist,
            stale_threshold_s=self.p33_stale_threshold_sec,
            qty_tolerance_steps=self.p33_qty_tolerance_steps,
            cooldown_s=self.p33_cooldown_sec,
            open_on_position=self.p33_open_on_position,
        )
