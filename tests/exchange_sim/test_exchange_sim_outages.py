"""Outages of one endpoint (POST /_sim/faults {"outages": {...}}): each answered on the wire as Binance
answers when it will not serve a request, before anything is read or executed, and only for that endpoint."""

from __future__ import annotations

import httpx
import pytest

THROTTLED = "Request throttled by system-level protection. Reduce-only/close-position orders are exempt. Please try again."


def outage(sim, endpoint: str, kind: str, retry_after_s: int = 1) -> None:
    sim.set_faults(outages={endpoint: kind}, rate_limited_retry_after_s=retry_after_s)


def premium_index(sim) -> httpx.Response:
    return httpx.get(f"{sim.base_url}/fapi/v1/premiumIndex", params={"symbol": "BTCUSDT"}, timeout=10)


@pytest.mark.parametrize("kind, status, code, msg", [
    ("service_unavailable", 503, -1001, "Service Unavailable."),
    ("rate_limited", 429, -1003, "Too much request weight used; current limit is"),
    ("ip_banned", 418, -1003, "Way too much request weight used; IP banned until"),
])
def test_each_json_outage_is_binances_error_body(sim, kind, status, code, msg) -> None:
    outage(sim, "GET /fapi/v1/premiumIndex", kind, retry_after_s=7)

    response = premium_index(sim)

    assert response.status_code == status
    assert response.json()["code"] == code and response.json()["msg"].startswith(msg)
    assert response.headers.get("Retry-After") == ("7" if status in (418, 429) else None)


def test_a_ban_names_when_it_ends_in_ms(sim) -> None:
    outage(sim, "GET /fapi/v1/premiumIndex", "ip_banned", retry_after_s=120)
    before = httpx.get(f"{sim.base_url}/fapi/v1/time", timeout=10).json()["serverTime"]

    msg = premium_index(sim).json()["msg"]

    until = int(msg.split("banned until ")[1].split(".")[0])
    assert before + 120_000 <= until <= before + 125_000


def test_the_firewall_answers_with_a_page_not_json(sim) -> None:
    outage(sim, "GET /fapi/v1/premiumIndex", "waf_blocked")

    response = premium_index(sim)

    assert response.status_code == 403 and response.headers["Content-Type"].startswith("text/html")
    assert "403 ERROR" in response.text and "X-MBX-USED-WEIGHT-1M" not in response.headers  # not the API's answer
    with pytest.raises(ValueError):
        response.json()


def order(signed, client_order_id: str, **extra: str):
    return signed("POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.002",
                                             "newClientOrderId": client_order_id, "newOrderRespType": "RESULT", **extra})


def test_a_throttled_order_endpoint_executes_nothing(sim, signed) -> None:
    outage(sim, "POST /fapi/v1/order", "overloaded")

    response = order(signed, "down-1")

    assert response.status_code == 503 and response.json() == {"code": -1008, "msg": THROTTLED}
    assert sim.orders() == []


def test_orders_that_reduce_exposure_are_exempt_from_throttling(sim, signed) -> None:
    assert order(signed, "open-1").status_code == 200
    outage(sim, "POST /fapi/v1/order", "overloaded")

    closed = order(signed, "close-1", side="SELL", reduceOnly="true")

    assert closed.status_code == 200 and closed.json()["status"] == "FILLED"
    assert order(signed, "open-2").json()["code"] == -1008


def test_only_order_placement_can_be_throttled(sim) -> None:
    response = httpx.post(f"{sim.base_url}/_sim/faults", json={"outages": {"GET /fapi/v1/premiumIndex": "overloaded"}},
                          timeout=10)

    assert response.status_code == 400 and "only order placement" in response.text


def test_only_the_named_endpoint_and_method_are_down_until_cleared(sim, signed) -> None:
    outage(sim, "POST /fapi/v1/order", "service_unavailable")

    assert premium_index(sim).status_code == 200
    assert signed("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "none"}).json()["code"] == -2013

    sim.set_faults(outages={})
    placed = signed("POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                               "quantity": "0.002", "newClientOrderId": "up-1"})
    assert placed.status_code == 200 and [o["clientOrderId"] for o in sim.orders()] == ["up-1"]


def test_a_reset_ends_every_outage(sim) -> None:
    outage(sim, "GET /fapi/v1/premiumIndex", "service_unavailable")

    sim.reset()

    assert premium_index(sim).status_code == 200 and sim.faults()["outages"] == {}


@pytest.mark.parametrize("outages, error", [
    ({"/fapi/v1/premiumIndex": "overloaded"}, "is not 'METHOD /fapi/path'"),
    ({"GET /_sim/price": "overloaded"}, "is not 'METHOD /fapi/path'"),
    ({"GET /fapi/v1/premiumIndex?symbol=BTCUSDT": "service_unavailable"}, "no query"),
    ({"GET /fapi/v1/premiumIndex": "down"}, "is not one of"),
    (["GET /fapi/v1/premiumIndex"], "outages must be an object"),
])
def test_a_malformed_outage_is_refused_with_its_reason(sim, outages, error) -> None:
    response = httpx.post(f"{sim.base_url}/_sim/faults", json={"outages": outages}, timeout=10)

    assert response.status_code == 400 and error in response.text
    assert sim.faults()["outages"] == {}
