"""Apply layer settings (etc/quantum/apply-layer.env; APPLY_MODE and P26_MODE live in common.env)."""

from __future__ import annotations

from pydantic import Field, model_validator

from shared.modes import ApplyMode, P26Mode
from shared.schema.fields import StrictBool
from shared.settings import CommonSettings

DEFAULT_SYMBOLS = (
    "BTCUSDT,ETHUSDT,TRXUSDT,LTCUSDT,LINKUSDT,SANDUSDT,MANAUSDT,GALAUSDT,XMRUSDT,SEIUSDT,STRKUSDT,TONUSDT,NEARUSDT,AVAXUSDT"
)


class ApplySettings(CommonSettings):
    namespaces = (*CommonSettings.namespaces, "APPLY_")
    metrics_port: int = Field(default=8043, ge=0, le=65535)
    # Required: only an explicit setting selects dry run or sending (common.env sets it).
    apply_mode: ApplyMode
    # Accepted so existing env files still load; it filters nothing: exits of any held position pass.
    apply_allowlist: str = Field(default=DEFAULT_SYMBOLS, pattern=r"^[A-Za-z0-9]+(,\s*[A-Za-z0-9]+)*$")
    apply_kill_switch: StrictBool = False
    # Twice HARVEST_REPROPOSE_SEC (30): a stop still hit always has a proposal younger than this.
    apply_proposal_max_age_sec: float = Field(default=60.0, gt=0, le=3600)
    # P26_MODE=enforce: a proposal the heat gate has not calibrated this long after it was added is planned as
    # proposed (microservices.apply_layer.bypass). Below the maximum age, or it would only ever be refused as expired.
    apply_calibration_wait_sec: float = Field(default=15.0, gt=0)
    p26_mode: P26Mode = P26Mode.SHADOW

    @model_validator(mode="after")
    def _wait_below_max_age(self) -> "ApplySettings":
        if self.apply_calibration_wait_sec >= self.apply_proposal_max_age_sec:
            raise ValueError(f"APPLY_CALIBRATION_WAIT_SEC ({self.apply_calibration_wait_sec:g}) must be below "
                             f"APPLY_PROPOSAL_MAX_AGE_SEC ({self.apply_proposal_max_age_sec:g})")
        return self

    @property
    def proposal_max_age_ms(self) -> int:
        return int(self.apply_proposal_max_age_sec * 1000)

    @property
    def calibration_wait_ms(self) -> int:
        return int(self.apply_calibration_wait_sec * 1000)
