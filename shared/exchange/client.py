"""ExchangeClient: the fleet's only door to Binance USD-M futures (or the local simulator).

Built on python-binance's synchronous Client. Every library error is translated at this boundary
(shared.exchange.translate); results are small Decimal-valued dataclasses (shared.exchange.models).
One instance per thread: the underlying requests.Session is not thread-safe.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import requests
from binance.client import Client
from binance.exceptions import BinanceAPIException, BinanceRequestException

from shared.exchange.errors import (
    ExchangeError,
    ExchangeRejected,
    ExchangeStartupError,
    OutcomeUnknown,
    RateLimited,
    refuses_credentials,
    sanitize,
)
from shared.exchange.models import (
    AccountSummary,
    AssetBalance,
    LeverageResult,
    MarkPrice,
    OrderResult,
    Position,
    PositionSide,
    Side,
    check_client_order_id,
    format_decimal,
    parse_account,
    parse_balance,
    parse_leverage,
    parse_mark_price,
    parse_open_positions,
    parse_order,
)
from shared.exchange.session import ApiSession
from shared.exchange.target import ExchangeSettings, Target, load_exchange_settings
from shared.exchange.translate import LIBRARY_ERRORS, translate
from shared.schema.fields import MAX_LEVERAGE

ORDER_DOES_NOT_EXIST = -2013
INVALID_TIMESTAMP = -1021  # outside recvWindow, or ahead of the server: our clock offset has drifted
RATE_LIMIT_PAUSE_S = 1.0  # the shortest pause after a rate limit
BAN_MIN_S = 120.0  # a 418 that says neither how long nor until when: Binance's bans last 2 minutes to 3 days
MINUTE_MS = 60_000
RATE_LIMIT_WAIT_MAX_S = 2.0  # a read waits out this much of a rate limit's Retry-After; longer, it is refused
WEIGHT_WINDOW_S = 60.0  # X-MBX-USED-WEIGHT-1M counts the current minute
PARSE_ERRORS = (KeyError, TypeError, ValueError, InvalidOperation, AttributeError)

T = TypeVar("T")


class _DecimalClient(Client):
    """python-binance Client whose JSON numbers parse to Decimal, so no price ever passes through float,
    sending through an ApiSession (shared.exchange.session): requests without its per-call cookie,
    auth, hook and redirect handling, which cost half of an order's client CPU."""

    def _init_session(self) -> requests.Session:
        session = ApiSession()
        session.headers.update(self._get_headers())
        return session

    @staticmethod
    def _handle_response(response: Any) -> Any:
        if not (200 <= response.status_code < 300):
            raise BinanceAPIException(response, response.status_code, response.text)
        if response.text == "":
            return {}
        try:
            return json.loads(response.text, parse_float=Decimal)
        except ValueError:
            raise BinanceRequestException(f"Invalid Response: {response.text[:200]}") from None


def build_binance_client(settings: ExchangeSettings) -> Client:
    """A python-binance Client aimed at the configured target, without the constructor's network ping."""
    client = _DecimalClient(
        settings.api_key.get_secret_value(),
        settings.api_secret.get_secret_value(),
        ping=False,
        testnet=settings.target is Target.TESTNET,
    )
    client.REQUEST_TIMEOUT = settings.request_timeout_s
    client.REQUEST_RECVWINDOW = settings.recv_window_ms  # python-binance's own default is 10,000
    if settings.target is Target.SIMULATOR:
        # Instance attributes shadow the class URLs; v1/v2/v3 paths are appended to FUTURES_URL.
        client.FUTURES_URL = f"{settings.root_url}/fapi"
        client.FUTURES_DATA_URL = f"{settings.root_url}/futures/data"
    return client


@dataclass(frozen=True)
class SelfTestReport:
    target: str
    root_url: str
    server_time_ms: int
    clock_offset_ms: int
    symbol_count: int
    wallet_balance: Decimal
    available_balance: Decimal


class ExchangeClient:
    def __init__(self, settings: ExchangeSettings, binance_client: Client | None = None,
                 monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 alive: Callable[[], object] = lambda: None, wall: Callable[[], float] = time.time) -> None:
        self._settings = settings
        # Called before and after each request (a daemon feeds systemd's watchdog): a tick of several requests to a
        # slow exchange is progress, not a hang, however long they take together.
        self._alive = alive
        self._client = binance_client if binance_client is not None else build_binance_client(settings)
        self._secrets = (settings.api_key.get_secret_value(), settings.api_secret.get_secret_value())
        self._used_weight: int | None = None
        self._weight_seen_at = float("-inf")  # when the exchange last said the used weight (monotonic)
        self._monotonic = monotonic
        self._wall = wall  # python-binance's clock (time.time): with the offset, the exchange's time
        self._sleep = sleep
        self._quiet_until = float("-inf")  # after a rate limit: no request before this (monotonic)

    def __repr__(self) -> str:
        return f"ExchangeClient({self._settings.describe()})"

    @property
    def target(self) -> Target:
        return self._settings.target

    @property
    def root_url(self) -> str:
        return self._settings.root_url

    @property
    def recv_window_ms(self) -> int:
        """How long after its timestamp the exchange still accepts a signed request (recvWindow, as sent)."""
        return int(self._client.REQUEST_RECVWINDOW)

    def server_time(self) -> int:
        """Exchange time in epoch milliseconds."""
        return self._request("server_time", self._client.futures_time, lambda p: int(p["serverTime"]))

    def sync_clock(self) -> int:
        """Align signed-request timestamps with the exchange (avoids -1021); returns server time in ms."""
        server_ms = self.server_time()
        # python-binance stamps requests with time.time(); the offset must be against that clock.
        self._client.timestamp_offset = server_ms - int(time.time() * 1000)
        return server_ms

    def exchange_info(self) -> dict[str, Any]:
        """Raw exchangeInfo body, for FilterCache's fetcher."""
        return self._request("exchange_info", self._client.futures_exchange_info, _as_dict)

    def mark_price(self, symbol: str) -> MarkPrice:
        return self._request("mark_price", self._client.futures_mark_price, parse_mark_price, symbol=symbol)

    def mark_prices(self) -> dict[str, MarkPrice]:
        """premiumIndex for every symbol in one request."""
        return self._request("mark_prices", self._client.futures_mark_price, _mark_price_map)

    def create_market_order(
        self,
        symbol: str,
        side: Side | str,
        qty: Decimal,
        reduce_only: bool,
        client_order_id: str,
        position_side: PositionSide | str | None = None,
    ) -> OrderResult:
        """MARKET order answered with its fill (newOrderRespType=RESULT). Ambiguity raises OutcomeUnknown."""
        params = market_order_params(symbol, side, qty, reduce_only, client_order_id, position_side)
        return self._request("create_market_order", self._client.futures_create_order, parse_order,
                             side_effect=True, **params)

    def get_order(self, symbol: str, client_order_id: str) -> OrderResult | None:
        """The order with this client order id, or None when the exchange says it does not exist (-2013)."""
        check_client_order_id(client_order_id)
        try:
            return self._request("get_order", self._client.futures_get_order, parse_order,
                                 symbol=symbol, origClientOrderId=client_order_id)
        except ExchangeRejected as exc:
            if exc.code == ORDER_DOES_NOT_EXIST:
                return None
            raise

    def cancel_order(self, symbol: str, client_order_id: str) -> OrderResult:
        check_client_order_id(client_order_id)
        return self._request("cancel_order", self._client.futures_cancel_order, parse_order,
                             side_effect=True, symbol=symbol, origClientOrderId=client_order_id)

    def positions(self) -> list[Position]:
        """Non-zero positions on every symbol, one positionRisk request."""
        return self._request("positions", self._client.futures_position_information, parse_open_positions)

    def account(self) -> AccountSummary:
        return self._request("account", self._client.futures_account, parse_account)

    def hedge_mode(self) -> bool:
        """Whether the account holds long and short positions apart (dualSidePosition), which the fleet does not
        trade: its orders are one-way (positionSide BOTH) and it reads a symbol's position as one net amount."""
        return self._request("position_mode", self._client.futures_get_position_mode, _dual_side)

    def balance(self) -> dict[str, AssetBalance]:
        return self._request("balance", self._client.futures_account_balance, _balance_map)

    def set_leverage(self, symbol: str, leverage: int) -> LeverageResult:
        if not 1 <= int(leverage) <= MAX_LEVERAGE:
            raise ValueError(f"leverage must be 1..{MAX_LEVERAGE}, got {leverage}")
        return self._request("set_leverage", self._client.futures_change_leverage, parse_leverage,
                             symbol=symbol, leverage=int(leverage))

    def self_test(self) -> SelfTestReport:
        """Server time, exchangeInfo, account, position mode; any failure raises ExchangeStartupError naming the step."""
        server_ms = self._startup_step("server_time", self.sync_clock)
        info = self._startup_step("exchange_info", self.exchange_info)
        if not info.get("symbols"):
            raise self._startup_error("exchange_info", "exchangeInfo lists no symbols")
        account = self._startup_step("account", self.account)
        if self._startup_step("position_mode", self.hedge_mode):
            # Every close would be refused (-4061) and the positions misread: said at start, not found in trading.
            raise self._startup_error("position_mode", "the account is in hedge mode (dualSidePosition=true); the fleet"
                                      " trades one-way mode only: switch the account to one-way mode",
                                      misconfigured=True)
        return SelfTestReport(
            target=self.target.value, root_url=self.root_url, server_time_ms=server_ms,
            clock_offset_ms=int(self._client.timestamp_offset), symbol_count=len(info["symbols"]),
            wallet_balance=account.total_wallet_balance, available_balance=account.available_balance,
        )

    def _startup_step(self, step: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except ExchangeError as exc:
            error = self._startup_error(step, f"{type(exc).__name__}: {exc}", misconfigured=refuses_credentials(exc))
            error.retryable = exc.retryable
        raise error

    def _startup_error(self, step: str, detail: str, misconfigured: bool = False) -> ExchangeStartupError:
        return ExchangeStartupError(self.target.value, step, sanitize(f"url={self.root_url} {detail}", self._secrets),
                                    misconfigured)

    @property
    def used_weight(self) -> int | None:
        """The exchange's X-MBX-USED-WEIGHT-1M from the last answer: the whole IP's use, all daemons."""
        return self._used_weight

    def can_spend(self, weight: int, reserve: float = 0.25) -> bool:
        """Whether a request of this weight keeps `reserve` of the limit free for orders and lookups. The weight is
        counted per minute: a figure older than that says nothing of now (found in review: a client that rarely
        asks kept the figure of a busy minute and never asked again)."""
        fresh = self._monotonic() - self._weight_seen_at < WEIGHT_WINDOW_S
        used = (self._used_weight or 0) if fresh else 0
        return used + weight <= self._settings.weight_limit_1m * (1 - reserve)

    def _note_weight(self) -> None:
        headers = getattr(getattr(self._client, "response", None), "headers", None)
        header = headers.get("X-MBX-USED-WEIGHT-1M") if isinstance(headers, Mapping) else None
        if isinstance(header, str) and header.isdigit():
            self._used_weight = int(header)
            self._weight_seen_at = self._monotonic()

    def _request(
        self, operation: str, call: Callable[..., Any], parse: Callable[[Any], T],
        side_effect: bool = False, **params: Any,
    ) -> T:
        """One request, unless a rate limit asked us to wait: Binance bans the IP (418, minutes to days) of a
        client that keeps sending after a 429, so until its Retry-After is over nothing is sent. A read waits out
        up to RATE_LIMIT_WAIT_MAX_S of it; an order never waits (the executor's lookups rely on an order being
        signed at once when it is sent); else the request is refused here, unsent (RateLimited: nothing
        happened on the exchange)."""
        quiet_s = self._quiet_until - self._monotonic()
        if 0 < quiet_s <= RATE_LIMIT_WAIT_MAX_S and not side_effect:
            self._sleep(quiet_s)  # deliberate: the wait Binance asked for (Retry-After); nothing to block on
            quiet_s = self._quiet_until - self._monotonic()
        if quiet_s > 0:
            raise RateLimited(f"{operation}: not sent: backing off after a rate limit, {quiet_s:.1f} s more",
                              retry_after_s=quiet_s)
        self._alive()
        try:
            payload = call(**params)
        except LIBRARY_ERRORS as exc:
            self._note_weight()
            error = translate(exc, operation, side_effect, self._secrets)
        else:
            self._note_weight()
            return self._parse(operation, parse, payload, side_effect)
        finally:
            self._alive()
        if isinstance(error, RateLimited):
            self._quiet_until = self._monotonic() + self._quiet_s(error)
        if isinstance(error, ExchangeRejected) and error.code == INVALID_TIMESTAMP and operation != "server_time":
            self._resync_clock()
        # Raised outside the except block so no __context__ keeps the library's signed URL.
        raise error

    def _quiet_s(self, error: RateLimited) -> float:
        """How long to send nothing after a rate limit: its Retry-After; else a ban's end as its message names it (or
        BAN_MIN_S); else the rest of the exchange's minute, when its weight and order windows start again. Binance's
        futures docs do not promise a Retry-After (found in review: one second, then every request met the same
        limit again, the way to a ban that stops closes too)."""
        if error.retry_after_s:
            return max(error.retry_after_s, RATE_LIMIT_PAUSE_S)
        now_ms = self._wall() * 1000 + int(getattr(self._client, "timestamp_offset", 0) or 0)
        if error.banned:
            left_s = (error.banned_until_ms - now_ms) / 1000 if error.banned_until_ms is not None else BAN_MIN_S
        else:
            left_s = (MINUTE_MS - now_ms % MINUTE_MS) / 1000
        return max(left_s, RATE_LIMIT_PAUSE_S)

    def _resync_clock(self) -> None:
        """After a -1021 the offset taken at start no longer holds (the host's clock stepped or drifted): this
        request stays refused (nothing was executed), the next ones are signed on the exchange's time again.
        Before, only a restart re-synced, so every order was refused until then."""
        try:
            self.sync_clock()
        except ExchangeError:
            pass  # the next -1021 tries again

    def _parse(self, operation: str, parse: Callable[[Any], T], payload: Any, side_effect: bool) -> T:
        try:
            return parse(payload)
        except PARSE_ERRORS as exc:
            text = sanitize(f"{operation}: malformed response: {type(exc).__name__}: {exc}", self._secrets)
        # An order the exchange accepted but we cannot read may still have executed.
        raise OutcomeUnknown(text) if side_effect else ExchangeError(text)


def market_order_params(
    symbol: str,
    side: Side | str,
    qty: Decimal,
    reduce_only: bool,
    client_order_id: str,
    position_side: PositionSide | str | None = None,
) -> dict[str, str]:
    """Request parameters for a MARKET order; hedge-mode orders (LONG/SHORT) must not send reduceOnly."""
    if not isinstance(qty, Decimal) or qty <= 0:
        raise ValueError(f"quantity must be a positive Decimal, got {qty!r}")
    params = {
        "symbol": symbol, "side": Side(side).value, "type": "MARKET", "quantity": format_decimal(qty),
        "newClientOrderId": check_client_order_id(client_order_id), "newOrderRespType": "RESULT",
    }
    hedge_side = PositionSide(position_side) if position_side is not None else PositionSide.BOTH
    if hedge_side is PositionSide.BOTH:
        params["reduceOnly"] = "true" if reduce_only else "false"
    else:
        params["positionSide"] = hedge_side.value
    return params


def _dual_side(payload: Any) -> bool:
    value = _as_dict(payload)["dualSidePosition"]
    if not isinstance(value, bool):
        raise TypeError(f"dualSidePosition is not a JSON boolean: {value!r}")
    return value


def _as_dict(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, Mapping):
        raise TypeError(f"expected a JSON object, got {type(payload).__name__}")
    return dict(payload)


def _mark_price_map(payload: Any) -> dict[str, MarkPrice]:
    entries = payload if isinstance(payload, list) else [payload]
    return {m.symbol: m for m in map(parse_mark_price, entries)}


def _balance_map(payload: Any) -> dict[str, AssetBalance]:
    return {b.asset: b for b in map(parse_balance, payload)}


def open_exchange(settings: ExchangeSettings | None = None) -> tuple[ExchangeClient, SelfTestReport]:
    """Settings, client and startup self-test; raises ExchangeSettingsError or ExchangeStartupError."""
    client = ExchangeClient(settings if settings is not None else load_exchange_settings())
    return client, client.self_test()
