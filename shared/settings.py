"""Settings read from the environment (what systemd's EnvironmentFile gives each daemon).

A bad or missing setting ends the process with exit code 2 and one line naming the variable;
secret values never appear in that line. Float settings are finite and bounded in every settings class.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from enum import Enum
from difflib import get_close_matches
from typing import Any, ClassVar, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.connection import parse_url

from shared.runtime.liveness import QUIET_MAX_S
from shared.schema.fields import StrictBool

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
EXIT_CONFIG = 2
# Float settings are times (seconds, hours): past this one is a typo, and near 1e308 seconds * 1000 overflows.
MAX_FLOAT_SETTING = 1e9

S = TypeVar("S", bound=BaseSettings)

# The longest a daemon waits at start for Redis (REDIS_STARTUP_WAIT_S) or the exchange (EXCHANGE_STARTUP_WAIT_S): both,
# and the wait for a fleet on another exchange to stop, fit in the units' TimeoutStartSec (shared.deploy); longer,
# systemd would cut the start short and the setting would not do what it says.
MAX_STARTUP_WAIT_S = 90.0


class FleetSettings(BaseSettings):
    """The base of every settings class: inf, nan and absurd floats are refused (they turn checks off or overflow)."""

    model_config = SettingsConfigDict(allow_inf_nan=False)
    # The prefixes that are this daemon's own (GOV_ for the governor): a variable under one of them that is not
    # a setting is a typo or a name of another version, and stops the daemon at start (unknown_variables).
    namespaces: ClassVar[tuple[str, ...]] = ()

    @field_validator("*", mode="after")
    @classmethod
    def _float_in_range(cls, value: Any) -> Any:
        if isinstance(value, float) and abs(value) > MAX_FLOAT_SETTING:
            raise ValueError(f"must be at most {MAX_FLOAT_SETTING:g}")
        return value


class CommonSettings(FleetSettings):
    """What every daemon reads (etc/quantum/common.env)."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)
    namespaces: ClassVar[tuple[str, ...]] = ("STREAM_", "METRICS_")  # not REDIS_: shells carry other tools' ones

    redis_url: SecretStr = Field(default=SecretStr(DEFAULT_REDIS_URL))
    redis_startup_wait_s: float = Field(default=60.0, ge=0, le=MAX_STARTUP_WAIT_S)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_enabled: StrictBool = True
    log_level: str = Field(default="INFO", pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR)$")
    quantum_instance: str = Field(default="0", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    stream_batch: int = Field(default=64, ge=1, le=10_000)
    stream_block_ms: int = Field(default=2000, ge=1, le=int(QUIET_MAX_S * 1000))  # a loop beats after each wait
    stream_claim_idle_ms: int = Field(default=30_000, ge=1)
    stream_max_deliveries: int = Field(default=5, ge=1, le=1000)
    stream_retention_hours: float = Field(default=72.0, gt=0)
    stream_group_start_id: str = Field(default="0", pattern=r"^(0|\$|\d+-\d+)$")

    @field_validator("redis_url")
    @classmethod
    def _a_redis_url(cls, value: SecretStr) -> SecretStr:
        """Checked as redis-py will read it, so a typo is one line at start, not a traceback at connect. The
        message never quotes the URL: it may hold the password."""
        try:
            parse_url(value.get_secret_value())
        except ValueError:
            raise ValueError("not a Redis URL: redis://[[user]:password@]host[:port][/db], rediss://…, "
                             "or unix:///path/to.sock?db=N") from None
        return value

    def consumer_name(self, daemon: str) -> str:
        """Stable across restarts so a daemon finds its own pending entries again."""
        return f"{daemon}@{socket.gethostname()}#{self.quantum_instance}"


def _variable(settings_cls: type[BaseSettings], error: Any) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    if field in settings_cls.model_fields:
        return _variable_name(settings_cls, field)
    return f"{settings_cls.model_config.get('env_prefix', '') or ''}{field}".upper()


def _message(settings_cls: type[BaseSettings], error: Any) -> str:
    """pydantic's message; a missing choice also lists what may be chosen, so the fix is in the line."""
    field = str(error["loc"][0]) if error["loc"] else ""
    choices = _choices(settings_cls.model_fields.get(field))
    if error["type"] == "missing" and choices:
        return f"required, no default: set it to one of {choices}"
    return str(error["msg"]).removeprefix("Value error, ")


def _choices(info: FieldInfo | None) -> str:
    kind = info.annotation if info else None
    if isinstance(kind, type) and issubclass(kind, Enum):
        return " | ".join(str(member.value) for member in kind)
    return ""


def error_line(settings_cls: type[BaseSettings], exc: ValidationError) -> str:
    """One line naming each bad variable and why, without the values."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{_variable(settings_cls, error)}: {_message(settings_cls, error)}" for error in errors]
    return "configuration error: " + "; ".join(parts)


# Variables of the earlier deployment (the seeds) that this fleet does not read. Set, each would be silently
# ignored (a 10 USD position cap quietly becoming the 200 USDT default, a Redis host quietly becoming localhost),
# so a daemon refuses to start naming what to set instead.
RETIRED = {
    "MAX_POSITION_SIZE_USD": "the per-trade cap is GOV_MAX_NOTIONAL_PER_TRADE_USDT (governor.env)",
    "MAX_OPEN_POSITIONS": "set GOV_MAX_OPEN_POSITIONS (governor.env)",
    "MAX_NOTIONAL_PER_TRADE_USDT": "set GOV_MAX_NOTIONAL_PER_TRADE_USDT (governor.env)",
    "REDIS_HOST": "set REDIS_URL=redis://HOST:PORT/DB (common.env)",
    "REDIS_PORT": "set REDIS_URL=redis://HOST:PORT/DB (common.env)",
}


def retired_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per retired variable set in `environ` (RETIRED)."""
    return [f"{name}: not read by this fleet; {hint}, and remove {name}"
            for name, hint in RETIRED.items() if environ.get(name, "").strip()]


def unknown_variables(settings_cls: type[FleetSettings], environ: Mapping[str, str]) -> list[str]:
    """One line per variable in the daemon's namespaces that it does not read (a typo such as
    GOV_MAX_OPEN_POSITION, or another version's GOV_ENABLE_AUTO_DISARM): ignored, it would leave the default
    in force without a word, as the retired variables would."""
    known = {_variable_name(settings_cls, field) for field in settings_cls.model_fields}
    lines = []
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(settings_cls.namespaces) and upper not in known:
            close = get_close_matches(upper, sorted(known), n=1)
            hint = f"did you mean {close[0]}?" if close else "see etc/quantum/ for the settings it reads"
            lines.append(f"{name}: not a setting of this daemon; {hint} Remove or rename it")
    return lines


def _variable_name(settings_cls: type[BaseSettings], field: str) -> str:
    info = settings_cls.model_fields[field]
    alias = info.validation_alias
    prefix = settings_cls.model_config.get("env_prefix", "") or ""
    return alias.upper() if isinstance(alias, str) else f"{prefix}{field}".upper()


def load_settings(settings_cls: type[S], **overrides: object) -> S:
    """Build settings or exit 2 with one line on stderr (a line per retired variable set, see RETIRED, and per
    unknown variable in the daemon's own namespaces, see unknown_variables)."""
    refused = retired_variables(os.environ)
    if issubclass(settings_cls, FleetSettings):
        refused += unknown_variables(settings_cls, os.environ)
    if refused:
        print("\n".join(refused), file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        print(error_line(settings_cls, exc), file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
