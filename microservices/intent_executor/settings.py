"""Intent executor settings (etc/quantum/intent-executor.env)."""

from __future__ import annotations

from enum import Enum

from pydantic import Field

from shared.exchange.target import Target
from shared.schema.fields import StrictBool
from shared.settings import CommonSettings


class ApplyMode(str, Enum):
    DRY_RUN = "dry_run"  # every gate runs; nothing is sent
    TESTNET = "testnet"  # orders go to the simulator or the Binance testnet
    LIVE = "live"  # orders go to mainnet (EXCHANGE_TARGET=mainnet, confirmed)


class ExecutorSettings(CommonSettings):
    metrics_port: int = Field(default=8046, ge=0, le=65535)
    apply_mode: ApplyMode = ApplyMode.DRY_RUN
    executor_permit_wait_ms: int = Field(default=3000, ge=1, le=55_000)
    executor_mark_max_age_s: float = Field(default=5.0, gt=0)
    executor_resolve_attempts: int = Field(default=4, ge=1, le=20)
    allow_upsize: StrictBool = False


def mode_mismatch(mode: ApplyMode, target: Target) -> str | None:
    """APPLY_MODE and EXCHANGE_TARGET must agree, so no setting sends real orders by accident."""
    if mode is ApplyMode.LIVE and target is not Target.MAINNET:
        return f"APPLY_MODE=live needs EXCHANGE_TARGET=mainnet (it is {target.value})"
    if mode is ApplyMode.TESTNET and target is Target.MAINNET:
        return "APPLY_MODE=testnet with EXCHANGE_TARGET=mainnet would trade real money; use APPLY_MODE=live"
    return None


def fleet_mode(mode: ApplyMode, target: Target) -> str:
    """What quantum:mode says: the target, or DRY_RUN."""
    return "DRY_RUN" if mode is ApplyMode.DRY_RUN else target.value.upper()
