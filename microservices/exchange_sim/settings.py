"""Simulator settings, read from EXCHANGE_SIM_* environment variables."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from shared.exchange.sim_defaults import (
    SIM_DEFAULT_HOST,
    SIM_DEFAULT_PORT,
    SIM_DEV_API_KEY,
    SIM_DEV_API_SECRET,
)
from shared.settings import FleetSettings

ENV_PREFIX = "EXCHANGE_SIM_"


class SimSettings(FleetSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    host: str = SIM_DEFAULT_HOST
    port: int = Field(default=SIM_DEFAULT_PORT, ge=0, le=65535)
    api_key: str = Field(default=SIM_DEV_API_KEY, min_length=1)
    api_secret: SecretStr = SecretStr(SIM_DEV_API_SECRET)
    balance_usdt: Decimal = Field(default=Decimal("10000"), ge=0)
    seed: int = 42
    slippage_bps: Decimal = Field(default=Decimal("0"), ge=0, le=10000)
    taker_fee: Decimal = Field(default=Decimal("0.0004"), ge=0, lt=1)
    maker_fee: Decimal = Field(default=Decimal("0.0002"), ge=0, lt=1)
    price_tick_ms: int = Field(default=1000, gt=0)
    walk_bps_per_tick: Decimal = Field(default=Decimal("1.5"), ge=0, le=1000)
    weight_limit_per_minute: int = Field(default=2400, gt=0)
    order_limit_per_minute: int = Field(default=1200, gt=0)
    order_limit_per_10s: int = Field(default=300, gt=0)
    ban_after_429s: int = Field(default=10, ge=1)
    ban_seconds: int = Field(default=120, ge=1)
    default_leverage: int = Field(default=20, ge=1, le=125)
    klines_csv: Path | None = None
    log_level: str = Field(default="INFO", pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR)$")


def _env_name(error: dict) -> str:
    loc = error.get("loc") or ("?",)
    return ENV_PREFIX + str(loc[0]).upper()


def load_settings_or_exit() -> SimSettings:
    """Build settings from the environment; a bad value prints one line and exits 2."""
    try:
        settings = SimSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"exchange_sim: invalid {_env_name(first)}: {first.get('msg')}", file=sys.stderr)
        raise SystemExit(2) from None
    if settings.klines_csv is not None and not settings.klines_csv.exists():
        print(f"exchange_sim: invalid {ENV_PREFIX}KLINES_CSV: path does not exist", file=sys.stderr)
        raise SystemExit(2)
    return settings
