"""Injected failures: for POST /fapi/v1/order, chosen by a seeded RNG; and outages of whole endpoints.

An outage answers every request to one endpoint ("GET /fapi/v1/premiumIndex") as Binance does when it will
not serve it, before anything is executed:
  service_unavailable  HTTP 503 {"code": -1001, "msg": "Service Unavailable."}
  overloaded           HTTP 503 {"code": -1008, "msg": "Request throttled by system-level protection. ..."}; order
                       placement only (ORDER_ENDPOINTS), and reduce-only / close-position orders are exempt, as on Binance
  rate_limited         HTTP 429 {"code": -1003, ...} with Retry-After
  ip_banned            HTTP 418 {"code": -1003, "msg": "Way too much request weight used; IP banned until ..."}
                       with Retry-After
  waf_blocked          HTTP 403 with an HTML page (the web application firewall; not JSON)
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum

SHARE_FIELDS = ("rate_limited", "unavailable_no_execute", "unknown_after_execute", "drop_connection")


class Outage(StrEnum):
    SERVICE_UNAVAILABLE = "service_unavailable"
    OVERLOADED = "overloaded"
    RATE_LIMITED = "rate_limited"
    IP_BANNED = "ip_banned"
    WAF_BLOCKED = "waf_blocked"


ENDPOINT = re.compile(r"(GET|POST|PUT|DELETE) /fapi/[^\s?#]+")  # a path: requests are matched on it, not their query
ORDER_ENDPOINTS = ("POST /fapi/v1/order",)  # the order placement the simulator serves (no batchOrders, no modify)


class Fault(StrEnum):
    NONE = "none"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE_NO_EXECUTE = "unavailable_no_execute"
    UNKNOWN_AFTER_EXECUTE = "unknown_after_execute"
    DROP_CONNECTION = "drop_connection"


@dataclass
class FaultConfig:
    latency_ms: int = 0
    unknown_after_execute: float = 0.0
    unavailable_no_execute: float = 0.0
    drop_connection: float = 0.0
    rate_limited: float = 0.0
    # True: the order executes and then the connection is closed; False: closed before executing
    drop_after_execute: bool = True
    # The Retry-After (s) of an injected rate limit (a real one says when its minute window ends); 0: no header, and
    # an injected ban lasts BAN_WITHOUT_RETRY_AFTER_S
    rate_limited_retry_after_s: int = 1
    # "METHOD /fapi/path" -> Outage: every request to that endpoint answered with that error, nothing executed
    outages: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


class FaultConfigError(ValueError):
    pass


def parse_config(body: dict, current: FaultConfig | None = None) -> FaultConfig:
    """Merge a JSON body into a config; unknown keys or bad shares raise FaultConfigError."""
    merged = (current or FaultConfig()).to_json()
    unknown = set(body) - set(merged)
    if unknown:
        raise FaultConfigError(f"unknown fault fields: {sorted(unknown)}")
    merged.update(body)
    config = FaultConfig(
        latency_ms=_int(merged["latency_ms"], "latency_ms"),
        rate_limited_retry_after_s=_int(merged["rate_limited_retry_after_s"], "rate_limited_retry_after_s"),
        drop_after_execute=_bool(merged["drop_after_execute"]),
        outages=_outages(merged["outages"]),
        **{name: _share(merged[name], name) for name in SHARE_FIELDS},
    )
    if sum(getattr(config, name) for name in SHARE_FIELDS) > 1.0 + 1e-9:
        raise FaultConfigError("fault shares must sum to at most 1")
    return config


def _int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or int(value) < 0:
        raise FaultConfigError(f"{name} must be a non-negative integer")
    return int(value)


def _bool(value) -> bool:
    if not isinstance(value, bool):
        raise FaultConfigError("drop_after_execute must be a boolean")
    return value


def _outages(value) -> dict[str, str]:
    if not isinstance(value, dict):
        raise FaultConfigError('outages must be an object {"METHOD /fapi/path": kind}')
    kinds = [kind.value for kind in Outage]
    for endpoint, kind in value.items():
        if not isinstance(endpoint, str) or not ENDPOINT.fullmatch(endpoint):
            raise FaultConfigError(f"outage endpoint {endpoint!r} is not 'METHOD /fapi/path' (GET, POST, PUT, DELETE; "
                                   "no query)")
        if kind not in kinds:
            raise FaultConfigError(f"outage kind {kind!r} for {endpoint} is not one of {kinds}")
        if kind == Outage.OVERLOADED and endpoint not in ORDER_ENDPOINTS:
            raise FaultConfigError(f"Binance throttles only order placement with -1008: {endpoint} is not one of "
                                   f"{list(ORDER_ENDPOINTS)}")
    return dict(value)


def _share(value, name: str) -> float:
    try:
        share = float(value)
    except (TypeError, ValueError):
        raise FaultConfigError(f"{name} must be a number in [0, 1]") from None
    if not 0.0 <= share <= 1.0:
        raise FaultConfigError(f"{name} must be a number in [0, 1]")
    return share


class FaultInjector:
    """Draws one fault per order request; the RNG restarts from the seed on every reconfigure."""

    def __init__(self, seed: int):
        self.seed = seed
        self.config = FaultConfig()
        self._rng = random.Random(seed)

    def configure(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(self.seed)

    def outage(self, method: str, path: str) -> Outage | None:
        kind = self.config.outages.get(f"{method} {path}")
        return Outage(kind) if kind is not None else None

    def draw(self) -> Fault:
        config = self.config
        roll = self._rng.random()
        for name in SHARE_FIELDS:
            share = getattr(config, name)
            if roll < share:
                return Fault(name)
            roll -= share
        return Fault.NONE
