"""Portfolio heat gate P2.6 settings (etc/quantum/portfolio-heat-gate.env).

P26_MODE is read by the apply layer too: shadow → it acts on harvest.proposal, enforce → on
harvest.calibrated. This daemon publishes harvest.calibrated in both modes.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field, ValidationInfo, field_validator

from shared.modes import P26Mode
from shared.settings import CommonSettings


class HeatGateSettings(CommonSettings):
    namespaces = (*CommonSettings.namespaces, "P26_")
    metrics_port: int = Field(default=8048, ge=0, le=65535)
    p26_mode: P26Mode = P26Mode.SHADOW
    p26_max_leverage: Decimal = Field(default=Decimal("5"), gt=0)
    p26_max_drawdown: Decimal = Field(default=Decimal("0.10"), gt=0, le=1)
    p26_leverage_weight: Decimal = Field(default=Decimal("0.5"), ge=0, le=1)
    p26_drawdown_weight: Decimal = Field(default=Decimal("0.3"), ge=0, le=1)
    p26_concentration_weight: Decimal = Field(default=Decimal("0.2"), ge=0, le=1)
    p26_cold_max: Decimal = Field(default=Decimal("0.25"), gt=0, lt=1)
    p26_warm_max: Decimal = Field(default=Decimal("0.65"), gt=0, le=1)
    p26_kill_score_critical: Decimal = Field(default=Decimal("0.8"), gt=0, le=1)
    p26_account_max_age_sec: float = Field(default=2.0, ge=0)
    p26_account_stale_sec: float = Field(default=30.0, ge=0)
    p26_snapshot_max_age_sec: float = Field(default=10.0, gt=0)

    @field_validator("p26_warm_max")
    @classmethod
    def _warm_above_cold(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        cold = info.data.get("p26_cold_max")
        if cold is not None and value <= cold:
            raise ValueError(f"must be greater than P26_COLD_MAX ({cold})")
        return value

    @field_validator("p26_account_stale_sec")
    @classmethod
    def _stale_after_fresh(cls, value: float, info: ValidationInfo) -> float:
        # A fallback window shorter than the cache age would never be used.
        fresh = info.data.get("p26_account_max_age_sec")
        if fresh is not None and value < fresh:
            raise ValueError(f"must be at least P26_ACCOUNT_MAX_AGE_SEC ({fresh})")
        return value
