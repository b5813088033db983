"""Settings read from the environment (what systemd's EnvironmentFile gives each daemon).

A bad or missing setting ends the process with exit code 2 and one line naming the variable;
secret values never appear in that line.
"""

from __future__ import annotations

import socket
import sys
from typing import TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.schema.fields import StrictBool

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
EXIT_CONFIG = 2

S = TypeVar("S", bound=BaseSettings)


class CommonSettings(BaseSettings):
    """What every daemon reads (etc/quantum/common.env)."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    redis_url: SecretStr = Field(default=SecretStr(DEFAULT_REDIS_URL))
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_enabled: StrictBool = True
    log_level: str = Field(default="INFO", pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR)$")
    quantum_instance: str = Field(default="0", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    stream_batch: int = Field(default=64, ge=1, le=10_000)
    stream_block_ms: int = Field(default=2000, ge=1, le=60_000)
    stream_claim_idle_ms: int = Field(default=30_000, ge=1)
    stream_max_deliveries: int = Field(default=5, ge=1, le=1000)
    stream_retention_hours: float = Field(default=72.0, gt=0)
    stream_group_start_id: str = Field(default="0", pattern=r"^(0|\$|\d+-\d+)$")

    def consumer_name(self, daemon: str) -> str:
        """Stable across restarts so a daemon finds its own pending entries again."""
        return f"{daemon}@{socket.gethostname()}#{self.quantum_instance}"


def variable_names(settings_cls: type[BaseSettings], exc: ValidationError) -> list[str]:
    prefix = settings_cls.model_config.get("env_prefix", "") or ""
    names = []
    for error in exc.errors(include_url=False, include_input=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        info = settings_cls.model_fields.get(field)
        alias = getattr(info, "validation_alias", None) if info else None
        names.append(alias.upper() if isinstance(alias, str) else f"{prefix}{field}".upper())
    return names


def error_line(settings_cls: type[BaseSettings], exc: ValidationError) -> str:
    """One line naming each bad variable and why, without the values."""
    parts = []
    for name, error in zip(variable_names(settings_cls, exc), exc.errors(include_url=False, include_input=False)):
        parts.append(f"{name}: {error['msg']}")
    return "configuration error: " + "; ".join(parts)


def load_settings(settings_cls: type[S], **overrides: object) -> S:
    """Build settings or exit 2 with one line on stderr."""
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        print(error_line(settings_cls, exc), file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
