"""Apply layer settings (etc/quantum/apply-layer.env; APPLY_MODE and P26_MODE live in common.env)."""

from __future__ import annotations

from pydantic import Field

from shared.modes import ApplyMode, P26Mode
from shared.schema.fields import StrictBool
from shared.settings import CommonSettings

DEFAULT_SYMBOLS = (
    "BTCUSDT,ETHUSDT,TRXUSDT,LTCUSDT,LINKUSDT,SANDUSDT,MANAUSDT,GALAUSDT,XMRUSDT,SEIUSDT,STRKUSDT,TONUSDT,NEARUSDT,AVAXUSDT"
)


class ApplySettings(CommonSettings):
    metrics_port: int = Field(default=8043, ge=0, le=65535)
    # Required: only an explicit setting selects dry run or sending (common.env sets it).
    apply_mode: ApplyMode
    # Accepted so existing env files still load; it filters nothing: exits of any held position pass.
    apply_allowlist: str = Field(default=DEFAULT_SYMBOLS, pattern=r"^[A-Za-z0-9]+(,\s*[A-Za-z0-9]+)*$")
    apply_kill_switch: StrictBool = False
    p26_mode: P26Mode = P26Mode.SHADOW
