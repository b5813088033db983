"""Governor settings (etc/quantum/governor.env) and the limits the gates read."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from pydantic import Field

from shared.schema.fields import PositiveDec, StrictBool, format_decimal
from shared.sending import INFLIGHT_GRACE_MS
from shared.settings import CommonSettings

# An allowed open still counts after its permit expired, until its order can no longer be accepted (shared.sending).
INFLIGHT_GRACE_S = INFLIGHT_GRACE_MS // 1000


class GovernorSettings(CommonSettings):
    namespaces = (*CommonSettings.namespaces, "GOV_")
    metrics_port: int = Field(default=8044, ge=0, le=65535)
    gov_permit_ttl_sec: int = Field(default=60, ge=1, le=3600)
    gov_symbol_cooldown_seconds: float = Field(default=60.0, ge=0)
    gov_snapshot_max_age_sec: float = Field(default=10.0, gt=0)
    gov_max_open_positions: int = Field(default=10, ge=0)
    gov_max_notional_per_trade_usdt: PositiveDec = Decimal(200)
    gov_max_total_notional_usdt: PositiveDec = Decimal(2000)
    gov_max_exec_per_hour: int = Field(default=3, ge=0)
    gov_max_exec_per_5min: int = Field(default=2, ge=0)
    gov_auto_disarm: StrictBool = True
    gov_auto_disarm_trips: int = Field(default=3, ge=1)
    gov_auto_disarm_window_sec: int = Field(default=600, ge=1)


@dataclass(frozen=True)
class Limits:
    """What the gates compare against; times in milliseconds."""

    permit_ttl_s: int = 60
    symbol_cooldown_ms: int = 60_000
    snapshot_max_age_s: float = 10.0
    max_open_positions: int = 10
    max_notional_per_trade: Decimal = Decimal(200)
    max_total_notional: Decimal = Decimal(2000)
    max_exec_per_hour: int = 3
    max_exec_per_5min: int = 2
    auto_disarm: bool = True
    auto_disarm_trips: int = 3
    auto_disarm_window_ms: int = 600_000

    @property
    def inflight_expiry_ms(self) -> int:
        return (self.permit_ttl_s + INFLIGHT_GRACE_S) * 1000

    @classmethod
    def from_settings(cls, settings: GovernorSettings) -> "Limits":
        return cls(
            permit_ttl_s=settings.gov_permit_ttl_sec,
            symbol_cooldown_ms=int(settings.gov_symbol_cooldown_seconds * 1000),
            snapshot_max_age_s=settings.gov_snapshot_max_age_sec,
            max_open_positions=settings.gov_max_open_positions,
            max_notional_per_trade=settings.gov_max_notional_per_trade_usdt,
            max_total_notional=settings.gov_max_total_notional_usdt,
            max_exec_per_hour=settings.gov_max_exec_per_hour,
            max_exec_per_5min=settings.gov_max_exec_per_5min,
            auto_disarm=settings.gov_auto_disarm,
            auto_disarm_trips=settings.gov_auto_disarm_trips,
            auto_disarm_window_ms=settings.gov_auto_disarm_window_sec * 1000,
        )

    def summary(self) -> dict[str, object]:
        """The caps as the startup log line shows them."""
        return {
            "max_open_positions": self.max_open_positions,
            "max_notional_per_trade_usdt": format_decimal(self.max_notional_per_trade),
            "max_total_notional_usdt": format_decimal(self.max_total_notional),
            "symbol_cooldown_s": self.symbol_cooldown_ms / 1000,
            "max_exec_per_hour": self.max_exec_per_hour,
            "max_exec_per_5min": self.max_exec_per_5min,
            "snapshot_max_age_s": self.snapshot_max_age_s,
            "permit_ttl_s": self.permit_ttl_s,
            "auto_disarm": self.auto_disarm,
            "auto_disarm_trips": self.auto_disarm_trips,
            "auto_disarm_window_s": self.auto_disarm_window_ms // 1000,
        }
