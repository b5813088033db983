"""Which exchange the fleet talks to, and with which credentials.

One setting, EXCHANGE_TARGET = simulator | testnet | mainnet, selects the target. It has no default:
only an explicit setting (or the seed alias BINANCE_USE_TESTNET=true) selects one.
There is no paper-trading mode and no fallback: an unreachable target is an error.
Credentials are stripped of surrounding whitespace wherever they come from (a CRLF env file leaves a
CR) and must then be letters and digits, as Binance issues them; a bad one is named, never echoed.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PrivateAttr, SecretStr, ValidationError, model_validator
from pydantic_settings import SettingsConfigDict

from shared.exchange.errors import ExchangeSettingsError, sanitize
from shared.exchange.sim_defaults import (
    SIM_DEFAULT_HOST,
    SIM_DEFAULT_PORT,
    SIM_DEV_API_KEY,
    SIM_DEV_API_SECRET,
)
from shared.settings import MAX_STARTUP_WAIT_S, FleetSettings

MAINNET_CONFIRM_PHRASE = "I_UNDERSTAND_THIS_TRADES_REAL_MONEY"
DEFAULT_SIM_URL = f"http://{SIM_DEFAULT_HOST}:{SIM_DEFAULT_PORT}"
TESTNET_ROOT_URL = "https://testnet.binancefuture.com"
MAINNET_ROOT_URL = "https://fapi.binance.com"
# One request takes at most a connect and a read of this each. Kept well inside what waits on a request: systemd's
# WatchdogSec (30 s; the watchdog is fed before and after every request) and the intent executor's claim on a plan
# (CLAIM_TTL_S, 60 s), which must outlast its send deadline (two requests + 1 s, intent_executor.resolve). Up to
# 120 s was allowed: a daemon's tick could outlast the watchdog and a claim could expire before the order was sent.
MAX_REQUEST_TIMEOUT_S = 10.0
MAX_RECV_WINDOW_MS = 60_000  # Binance refuses a larger recvWindow
CREDENTIAL_KEY_FILE = "binance_api_key"
CREDENTIAL_SECRET_FILE = "binance_api_secret"

# What Binance issues as API keys and secrets; anything else is a copy-and-paste accident.
_CREDENTIAL = re.compile(r"[A-Za-z0-9]+")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
# Seed-era flags that no longer select anything; when set they must agree with the target.
_LEGACY_TESTNET_FLAGS = ("TESTNET", "USE_TESTNET", "BINANCE_TESTNET")
TARGET_REQUIRED = ("EXCHANGE_TARGET is required, there is no default: set it to simulator | testnet | mainnet"
                   " (or the seed alias BINANCE_USE_TESTNET=true for testnet)")


class Target(str, enum.Enum):
    SIMULATOR = "simulator"
    TESTNET = "testnet"
    MAINNET = "mainnet"


def parse_bool(value: Any) -> bool | None:
    """true/false/1/0/yes/no, any case; anything else is refused (the seeds read "false" as true)."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected one of true/false/1/0/yes/no, got {str(value)[:24]!r}")


def parse_target(value: Any) -> Target | None:
    if value is None or isinstance(value, Target):
        return value
    text = str(value).strip().lower()
    try:
        return Target(text)
    except ValueError:
        allowed = "|".join(t.value for t in Target)
        raise ValueError(f"expected one of {allowed}, got {str(value)[:24]!r}") from None


def strip_credential(value: Any) -> Any:
    """Surrounding whitespace and line endings dropped, as a credential file's are."""
    if isinstance(value, SecretStr):
        return SecretStr(value.get_secret_value().strip())
    return value.strip() if isinstance(value, str) else value


StrictBool = Annotated[bool | None, BeforeValidator(parse_bool)]
TargetField = Annotated[Target | None, BeforeValidator(parse_target)]
Credential = Annotated[SecretStr, BeforeValidator(strip_credential)]


def _env(name: str, **kwargs: Any) -> Any:
    return Field(validation_alias=name, **kwargs)


class ExchangeSettings(FleetSettings):
    """Read from the environment; after validation `target`, `api_key`, `api_secret`, `root_url` are resolved."""

    model_config = SettingsConfigDict(extra="ignore", hide_input_in_errors=True, env_ignore_empty=True)

    exchange_target: TargetField = _env("EXCHANGE_TARGET", default=None)
    binance_use_testnet: StrictBool = _env("BINANCE_USE_TESTNET", default=None)
    legacy_testnet: StrictBool = _env("TESTNET", default=None)
    legacy_use_testnet: StrictBool = _env("USE_TESTNET", default=None)
    legacy_binance_testnet: StrictBool = _env("BINANCE_TESTNET", default=None)
    paper_trading: StrictBool = _env("PAPER_TRADING", default=None)
    mainnet_confirm: str | None = _env("EXCHANGE_MAINNET_CONFIRM", default=None)
    binance_api_key: Credential | None = _env("BINANCE_API_KEY", default=None)
    binance_api_secret: Credential | None = _env("BINANCE_API_SECRET", default=None)
    binance_testnet_api_key: Credential | None = _env("BINANCE_TESTNET_API_KEY", default=None)
    binance_testnet_api_secret: Credential | None = _env("BINANCE_TESTNET_API_SECRET", default=None)
    sim_api_key: Credential = _env("EXCHANGE_SIM_API_KEY", default=SecretStr(SIM_DEV_API_KEY))
    sim_api_secret: Credential = _env("EXCHANGE_SIM_API_SECRET", default=SecretStr(SIM_DEV_API_SECRET))
    sim_url: str = _env("EXCHANGE_SIM_URL", default=DEFAULT_SIM_URL)
    credentials_directory: Path | None = _env("CREDENTIALS_DIRECTORY", default=None)
    request_timeout_s: float = _env("EXCHANGE_REQUEST_TIMEOUT_S", default=5.0, gt=0, le=MAX_REQUEST_TIMEOUT_S)
    # How long after its timestamp the exchange may accept a signed request: an order the executor could not
    # see the end of is believed absent only this long after it was sent (intent_executor.resolve).
    recv_window_ms: int = _env("EXCHANGE_RECV_WINDOW_MS", default=5000, ge=1, le=MAX_RECV_WINDOW_MS)
    filters_refresh_s: float = _env("EXCHANGE_FILTERS_REFRESH_S", default=300.0, gt=0)
    weight_limit_1m: int = _env("EXCHANGE_WEIGHT_LIMIT_1M", default=2400, gt=0)
    startup_wait_s: float = _env("EXCHANGE_STARTUP_WAIT_S", default=60.0, ge=0, le=MAX_STARTUP_WAIT_S)

    _target: Target = PrivateAttr(default=Target.SIMULATOR)
    _api_key: SecretStr = PrivateAttr(default=SecretStr(""))
    _api_secret: SecretStr = PrivateAttr(default=SecretStr(""))

    @model_validator(mode="after")
    def _resolve(self) -> ExchangeSettings:
        # Runs after field parsing, so a failure's input is this model, whose repr masks the secrets.
        check_no_paper_mode(self.paper_trading)
        from shared.sending import check_within_grace  # shared.sending reads these settings' type

        check_within_grace(self.request_timeout_s, self.recv_window_ms)
        self._target = resolve_target(self.exchange_target, self.binance_use_testnet)
        check_legacy_flags(self._target, self._legacy_flags())
        if self._target is Target.MAINNET:
            check_mainnet_confirmation(self.mainnet_confirm)
        self._api_key, self._api_secret = self._credentials()
        return self

    @property
    def target(self) -> Target:
        return self._target

    @property
    def api_key(self) -> SecretStr:
        return self._api_key

    @property
    def api_secret(self) -> SecretStr:
        return self._api_secret

    @property
    def root_url(self) -> str:
        """Scheme and host of the futures REST API (python-binance appends /fapi/v1/...)."""
        if self._target is Target.SIMULATOR:
            return self.sim_url.rstrip("/")
        return TESTNET_ROOT_URL if self._target is Target.TESTNET else MAINNET_ROOT_URL

    def describe(self) -> str:
        """Safe one-line description for startup logs."""
        return f"target={self._target.value} url={self.root_url}"

    def _legacy_flags(self) -> dict[str, bool | None]:
        values = (self.legacy_testnet, self.legacy_use_testnet, self.legacy_binance_testnet)
        return dict(zip(_LEGACY_TESTNET_FLAGS, values))

    def _credentials(self) -> tuple[SecretStr, SecretStr]:
        if self._target is Target.SIMULATOR:
            check_url("EXCHANGE_SIM_URL", self.sim_url)
            return (check_credential("EXCHANGE_SIM_API_KEY", self.sim_api_key),
                    check_credential("EXCHANGE_SIM_API_SECRET", self.sim_api_secret))
        target = self._target
        key = _credential_file(self.credentials_directory, CREDENTIAL_KEY_FILE) or pick_credential(
            "BINANCE_API_KEY", self.binance_api_key, "BINANCE_TESTNET_API_KEY",
            self.binance_testnet_api_key, target)
        secret = _credential_file(self.credentials_directory, CREDENTIAL_SECRET_FILE) or pick_credential(
            "BINANCE_API_SECRET", self.binance_api_secret, "BINANCE_TESTNET_API_SECRET",
            self.binance_testnet_api_secret, target)
        return key, secret


def resolve_target(explicit: Target | None, use_testnet: bool | None) -> Target:
    """EXCHANGE_TARGET wins; BINANCE_USE_TESTNET=true alone means testnet; neither, or disagreement, is an error."""
    if explicit is None:
        if use_testnet:
            return Target.TESTNET
        raise ValueError(TARGET_REQUIRED)
    if use_testnet is not None and use_testnet != (explicit is Target.TESTNET):
        raise ValueError(
            f"EXCHANGE_TARGET={explicit.value} disagrees with BINANCE_USE_TESTNET={str(use_testnet).lower()};"
            " unset BINANCE_USE_TESTNET (EXCHANGE_TARGET is the one setting)"
        )
    return explicit


def check_no_paper_mode(paper_trading: bool | None) -> None:
    if paper_trading:
        raise ValueError("PAPER_TRADING=true is not supported: there is no paper mode; "
                         "use EXCHANGE_TARGET=simulator")


def check_legacy_flags(target: Target, flags: dict[str, bool | None]) -> None:
    for name, value in flags.items():
        if value is not None and value != (target is Target.TESTNET):
            raise ValueError(f"{name}={str(value).lower()} disagrees with EXCHANGE_TARGET={target.value};"
                             f" unset {name} (EXCHANGE_TARGET is the one setting)")


def check_mainnet_confirmation(confirm: str | None) -> None:
    if confirm != MAINNET_CONFIRM_PHRASE:
        raise ValueError(f"EXCHANGE_TARGET=mainnet requires EXCHANGE_MAINNET_CONFIRM={MAINNET_CONFIRM_PHRASE}")


def check_url(name: str, url: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{name} must be an http:// or https:// URL")


def pick_credential(
    name: str, value: SecretStr | None, alias: str, alias_value: SecretStr | None, target: Target
) -> SecretStr:
    """The primary variable, or the seed-era testnet alias; never a testnet-named variable for mainnet."""
    if value is not None and alias_value is not None and value.get_secret_value() != alias_value.get_secret_value():
        raise ValueError(f"{name} and {alias} are both set and differ; set only {name}")
    if value is not None:
        return check_credential(name, value)
    if alias_value is not None and target is Target.MAINNET:
        raise ValueError(f"{alias} cannot be used with EXCHANGE_TARGET=mainnet; set {name}")
    if alias_value is not None:
        return check_credential(alias, alias_value)
    raise ValueError(f"{name} is required for EXCHANGE_TARGET={target.value}"
                     f" (or $CREDENTIALS_DIRECTORY/{name.lower()})")


# The real exchange's credentials: only daemons that talk to the exchange are given them (shared.deploy unsets them
# for the others, whatever env file holds them).
REAL_CREDENTIAL_VARIABLES = ("BINANCE_API_KEY", "BINANCE_API_SECRET", "BINANCE_TESTNET_API_KEY",
                             "BINANCE_TESTNET_API_SECRET")
# What deploy/install.sh writes into the credential file until the operator puts the secret there.
CREDENTIAL_PLACEHOLDER = "REPLACE_WITH_YOUR_BINANCE_API_SECRET"


def _credential_file(directory: Path | None, filename: str) -> SecretStr | None:
    """systemd LoadCredential=: $CREDENTIALS_DIRECTORY/<filename>, when present and filled in. Still the install's
    placeholder, it counts as absent: the env file's variable (the documented fallback) is read, and without one
    the error names both places."""
    if directory is None:
        return None
    path = directory / filename
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read credential file {path}: {exc.strerror}") from None
    if text == CREDENTIAL_PLACEHOLDER:
        return None
    return check_credential(f"credential file {path}", SecretStr(text))


def check_credential(source: str, value: SecretStr) -> SecretStr:
    """A key or secret as Binance issues it; the error names where it came from, never what it holds."""
    text = value.get_secret_value()
    if not text:
        raise ValueError(f"{source} is empty")
    if not _CREDENTIAL.fullmatch(text):
        raise ValueError(f"{source} must be letters and digits only, as Binance issues it"
                         " (look for quotes, spaces or line breaks inside it)")
    return value


def settings_error_line(exc: ValidationError, prefix: str = "invalid exchange settings") -> str:
    """One line naming the offending variable(s); inputs are never echoed, so secrets cannot leak."""
    parts = [_describe_error(err) for err in exc.errors(include_input=False, include_url=False)]
    return sanitize(f"{prefix}: " + "; ".join(parts), max_chars=600)


def _describe_error(err: Any) -> str:
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    names = ".".join(str(part) for part in err.get("loc", ()))
    return f"{names}: {message}" if names else message


def load_exchange_settings(**overrides: Any) -> ExchangeSettings:
    """Settings from the environment; invalid settings raise ExchangeSettingsError with one safe line."""
    try:
        return ExchangeSettings(**overrides)
    except ValidationError as exc:
        raise ExchangeSettingsError(settings_error_line(exc)) from None
