"""Binance error bodies: {"code": N, "msg": "..."} with the HTTP status real Binance uses."""

from __future__ import annotations

from decimal import Decimal


class ApiError(Exception):
    """An error answered to the client exactly as Binance would."""

    def __init__(self, code: int, msg: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = headers or {}

    def body(self) -> dict:
        return {"code": self.code, "msg": self.msg}


BAN_WITHOUT_RETRY_AFTER_S = 300  # an injected ban whose Retry-After is configured as none (0)


def too_many_requests(limit: int, retry_after_s: int) -> ApiError:
    msg = (
        f"Too much request weight used; current limit is {limit} request weight per 1 MINUTE. "
        "Please use the websocket for live updates to avoid polling the API."
    )
    return ApiError(-1003, msg, 429, _retry_after(retry_after_s))


def ip_banned(until_ms: int, retry_after_s: int) -> ApiError:
    msg = (f"Way too much request weight used; IP banned until {until_ms}. "
           "Please use WebSocket Streams for live updates to avoid bans.")
    return ApiError(-1003, msg, 418, _retry_after(retry_after_s))


def _retry_after(seconds: int) -> dict[str, str]:
    """The Retry-After header, or none for 0: Binance's futures docs do not promise one, so clients are tested without."""
    return {"Retry-After": str(seconds)} if seconds > 0 else {}


def too_many_orders(limit: int, interval: str) -> ApiError:
    return ApiError(-1015, f"Too many new orders; current limit is {limit} orders per {interval}.", 429)


def timestamp_outside_window() -> ApiError:
    return ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")


def outside_engine_window() -> ApiError:
    return ApiError(-5028, "Timestamp for this request is outside of the ME recvWindow.")


def timestamp_ahead() -> ApiError:
    return ApiError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")


def bad_signature() -> ApiError:
    return ApiError(-1022, "Signature for this request is not valid.")


def mandatory_missing(name: str) -> ApiError:
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def one_of_missing(first: str, second: str) -> ApiError:
    return ApiError(-1102, f"Param '{first}' or '{second}' must be sent, but both were empty/null!")


def param_not_required(name: str) -> ApiError:
    return ApiError(-1106, f"Parameter '{name}' sent when not required.")


def bad_precision() -> ApiError:
    return ApiError(-1111, "Precision is over the maximum defined for this asset.")


def invalid_tif() -> ApiError:
    return ApiError(-1115, "Invalid timeInForce.")


def invalid_order_type() -> ApiError:
    return ApiError(-1116, "Invalid orderType.")


def invalid_side() -> ApiError:
    return ApiError(-1117, "Invalid side.")


def invalid_interval() -> ApiError:
    return ApiError(-1120, "Invalid interval.")


def invalid_symbol() -> ApiError:
    return ApiError(-1121, "Invalid symbol.")


def invalid_listen_key() -> ApiError:
    msg = "This listenKey does not exist. Please use `POST /fapi/v1/listenKey` to recreate `listenKey`"
    return ApiError(-1125, msg)


def invalid_param(name: str) -> ApiError:
    return ApiError(-1130, f"Data sent for parameter '{name}' is not valid.")


def invalid_resp_type() -> ApiError:
    return ApiError(-1136, "Invalid newOrderRespType.")


def unknown_order_sent() -> ApiError:
    return ApiError(-2011, "Unknown order sent.")


def order_does_not_exist() -> ApiError:
    return ApiError(-2013, "Order does not exist.")


def api_key_format_invalid() -> ApiError:
    return ApiError(-2014, "API-key format invalid.", 401)


def rejected_api_key(ip: str) -> ApiError:
    return ApiError(-2015, f"Invalid API-key, IP, or permissions for action, request ip: {ip}", 401)


def margin_insufficient() -> ApiError:
    return ApiError(-2019, "Margin is insufficient.")


def reduce_only_rejected() -> ApiError:
    return ApiError(-2022, "ReduceOnly Order is rejected.")


def price_greater_than_max() -> ApiError:
    return ApiError(-4002, "Price greater than max price.")


def qty_not_positive() -> ApiError:
    return ApiError(-4003, "Quantity less than or equal to zero.")


def qty_below_min() -> ApiError:
    return ApiError(-4004, "Quantity less than min quantity.")


def qty_above_max() -> ApiError:
    return ApiError(-4005, "Quantity greater than max quantity.")


def price_below_min() -> ApiError:
    return ApiError(-4013, "Price less than min price.")


def price_not_tick() -> ApiError:
    return ApiError(-4014, "Price not increased by tick size.")


def bad_client_order_id() -> ApiError:
    return ApiError(-4015, "Client order id is not valid.")


def limit_price_too_high(cap: str) -> ApiError:
    return ApiError(-4016, f"Limit price can't be higher than {cap}.")


def qty_not_step() -> ApiError:
    return ApiError(-4023, "Qty not increased by step size.")


def limit_price_too_low(floor: str) -> ApiError:
    return ApiError(-4024, f"Limit price can't be lower than {floor}.")


def invalid_leverage(value: str) -> ApiError:
    return ApiError(-4028, f"Leverage {value} is not valid")


def leverage_below_margin() -> ApiError:
    return ApiError(-2028, "Leverage is smaller than permitted: insufficient margin balance.")


def no_need_margin_type() -> ApiError:
    return ApiError(-4046, "No need to change margin type.")


def margin_type_open_orders() -> ApiError:
    return ApiError(-4047, "Margin type cannot be changed if there exists open orders.")


def margin_type_position() -> ApiError:
    return ApiError(-4048, "Margin type cannot be changed if there exists position.")


def no_need_position_side() -> ApiError:
    return ApiError(-4059, "No need to change position side.")


def invalid_position_side() -> ApiError:
    return ApiError(-4060, "Invalid position side.")


def position_side_mismatch() -> ApiError:
    return ApiError(-4061, "Order's position side does not match user's setting.")


def position_side_open_orders() -> ApiError:
    return ApiError(-4067, "Position side cannot be changed if there exists open orders.")


def position_side_position() -> ApiError:
    return ApiError(-4068, "Position side cannot be changed if there exists position.")


def duplicate_client_order_id() -> ApiError:
    return ApiError(-4116, "clientOrderId is duplicated.")


def use_algo_endpoint() -> ApiError:
    msg = "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead."
    return ApiError(-4120, msg)


def min_notional(notional: Decimal | str) -> ApiError:
    return ApiError(-4164, f"Order's notional must be no smaller than {notional} (unless you choose reduce only).")


def unknown_after_execute() -> ApiError:
    return ApiError(-1000, "Unknown error, please check your request or try again later.", 503)


def service_unavailable() -> ApiError:
    return ApiError(-1001, "Service Unavailable.", 503)


def order_throttled() -> ApiError:
    # The wording since 2025-10-23 (before: "Server is currently overloaded with other requests. ...").
    msg = "Request throttled by system-level protection. Reduce-only/close-position orders are exempt. Please try again."
    return ApiError(-1008, msg, 503)


# Not a Binance JSON error: the firewall in front of the API answers with a page of its own.
WAF_PAGE = ("<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01 Transitional//EN\">\n<HTML><HEAD><TITLE>ERROR: The "
            "request could not be satisfied</TITLE></HEAD><BODY><H1>403 ERROR</H1><H2>The request could not be "
            "satisfied.</H2>Request blocked.</BODY></HTML>\n")
