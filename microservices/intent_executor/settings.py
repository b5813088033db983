"""Intent executor settings (etc/quantum/intent-executor.env)."""

from __future__ import annotations

from pydantic import Field

from shared.modes import ApplyMode
from shared.schema.fields import StrictBool
from shared.settings import CommonSettings


class ExecutorSettings(CommonSettings):
    namespaces = (*CommonSettings.namespaces, "EXECUTOR_")
    metrics_port: int = Field(default=8046, ge=0, le=65535)
    apply_mode: ApplyMode  # required: only an explicit setting chooses dry run
    executor_permit_wait_ms: int = Field(default=3000, ge=1, le=55_000)
    executor_mark_max_age_s: float = Field(default=5.0, gt=0)
    executor_resolve_attempts: int = Field(default=4, ge=1, le=20)
    allow_upsize: StrictBool = False
