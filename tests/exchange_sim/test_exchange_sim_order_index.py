"""The open-order and clientOrderId indexes never disagree with a full scan of every order placed."""

import random
from decimal import Decimal

from microservices.exchange_sim import errors
from microservices.exchange_sim.engine import Engine
from microservices.exchange_sim.models import Account, Order
from microservices.exchange_sim.num import floor_step
from microservices.exchange_sim.settings import SimSettings
from microservices.exchange_sim.symbols import SYMBOLS

QUANTITIES = {"BTCUSDT": ["0.002", "0.003"], "ETHUSDT": ["0.01", "0.02", "0.05"], "TRXUSDT": ["20", "50"]}
CLIENT_IDS = ["plan-a", "plan-b", "plan-c", "plan-d"]
OPEN = ("NEW", "PARTIALLY_FILLED")


class FakeClock:
    def __init__(self, start: int = 1_700_000_000_000):
        self.now = start

    def __call__(self) -> int:
        return self.now


def _assert_matches_full_scan(account: Account) -> None:
    everything = sorted(account.orders.values(), key=lambda o: o.order_id)
    assert [o.order_id for o in account.open_orders()] == [o.order_id for o in everything if o.is_open]
    for symbol in QUANTITIES:
        expected = [o.order_id for o in everything if o.is_open and o.symbol == symbol]
        assert [o.order_id for o in account.open_orders(symbol)] == expected
    latest: dict[tuple[str, str], Order] = {}
    for order in everything:
        latest[(order.symbol, order.client_order_id)] = order
    for (symbol, client_id), order in latest.items():
        assert account.find_by_client_id(symbol, client_id) is order
    assert account.find_by_client_id("BTCUSDT", "never-used") is None


def _price(rng: random.Random, engine: Engine, symbol: str, low: float, high: float) -> str:
    factor = Decimal(str(round(rng.uniform(low, high), 4)))
    return str(floor_step(engine.prices.mark(symbol) * factor, SYMBOLS[symbol].tick_size))


def _new_order(rng: random.Random, engine: Engine, symbol: str) -> dict[str, str]:
    params = {"symbol": symbol, "side": rng.choice(["BUY", "SELL"]), "quantity": rng.choice(QUANTITIES[symbol])}
    if rng.random() < 0.7:
        params["newClientOrderId"] = rng.choice(CLIENT_IDS)
    if rng.random() < 0.2:
        params["reduceOnly"] = "true"
    if rng.random() < 0.25:
        return {**params, "type": "MARKET"}
    tif = rng.choice(["GTC", "GTC", "GTC", "IOC", "FOK", "GTX"])
    return {**params, "type": "LIMIT", "timeInForce": tif, "price": _price(rng, engine, symbol, 0.985, 1.015)}


def _cancel_params(rng: random.Random, engine: Engine, symbol: str) -> dict[str, str]:
    candidates = [o for o in engine.account.orders.values() if o.symbol == symbol]
    if not candidates:
        return {"symbol": symbol, "orderId": "1"}
    order = rng.choice(candidates)
    if rng.random() < 0.5:
        return {"symbol": symbol, "orderId": str(order.order_id)}
    return {"symbol": symbol, "origClientOrderId": order.client_order_id}


def _step(rng: random.Random, engine: Engine, clock: FakeClock, rejected: dict[int, int]) -> None:
    symbol = rng.choice(list(QUANTITIES))
    action = rng.choices(["place", "cancel", "cancel_all", "set_price", "resume", "wait", "sync"],
                            weights=[10, 3, 1, 2, 1, 2, 1])[0]
    try:
        if action == "place":
            engine.place(_new_order(rng, engine, symbol))
        elif action == "cancel":
            engine.cancel(_cancel_params(rng, engine, symbol))
        elif action == "cancel_all":
            engine.cancel_all({"symbol": symbol})
        elif action == "set_price":
            engine.set_price(symbol, Decimal(_price(rng, engine, symbol, 0.99, 1.01)))
        elif action == "resume":
            engine.set_frozen(symbol, False)
        elif action == "wait":
            clock.now += rng.randrange(0, 30_000)
        else:
            engine.sync()
    except errors.ApiError as exc:
        rejected[exc.code] = rejected.get(exc.code, 0) + 1


def test_indexes_follow_every_status_change():
    rng = random.Random(20240611)
    clock = FakeClock()
    engine = Engine(SimSettings(seed=42, balance_usdt=Decimal("100000")), clock)
    rejected: dict[int, int] = {}
    for _ in range(1500):
        _step(rng, engine, clock, rejected)
        _assert_matches_full_scan(engine.account)

    orders = engine.account.orders.values()
    assert {o.status for o in orders} == {"NEW", "FILLED", "CANCELED", "EXPIRED"}
    assert any(o.status == "EXPIRED" and o.executed_qty > 0 for o in orders)  # went through PARTIALLY_FILLED
    assert any(o.status == "FILLED" and o.type == "LIMIT" and o.update_time > o.time for o in orders)  # rested
    assert rejected.get(-4116, 0) > 0  # clientOrderId reused while the earlier order was open
    reused = {(o.symbol, o.client_order_id) for o in orders if o.client_order_id in CLIENT_IDS}
    assert len(reused) < sum(o.client_order_id in CLIENT_IDS for o in orders)  # ...and accepted once it closed

    engine.reset()
    assert engine.account.open_orders() == [] and engine.account.find_by_client_id("BTCUSDT", "plan-a") is None


def test_resting_reduce_only_orders_expire_out_of_the_index():
    clock = FakeClock()
    engine = Engine(SimSettings(seed=42), clock)
    engine.set_price("ETHUSDT", Decimal("2920"))
    steps = [
        {"side": "BUY", "type": "MARKET", "quantity": "0.02"},
        {"side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.02", "price": "2950",
         "reduceOnly": "true"},
        {"side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01", "price": "2960",
         "reduceOnly": "true"},
        {"side": "SELL", "type": "MARKET", "quantity": "0.015", "reduceOnly": "true"},
    ]
    for params in steps:
        engine.place({"symbol": "ETHUSDT", **params})
        _assert_matches_full_scan(engine.account)
    first, second = engine.account.open_orders("ETHUSDT")
    engine.set_price("ETHUSDT", Decimal("2970"))  # both cross, but only 0.005 is left to close
    _assert_matches_full_scan(engine.account)
    assert (first.status, first.executed_qty) == ("EXPIRED", Decimal("0.005"))
    assert (second.status, second.executed_qty) == ("EXPIRED", 0)
    assert engine.account.open_orders() == []


def test_open_orders_endpoint_agrees_with_all_orders(sim, client):
    sim.set_price("BTCUSDT", "88000")
    sim.set_price("ETHUSDT", "2920")
    limit = {"type": "LIMIT", "timeInForce": "GTC"}
    client.futures_create_order(symbol="BTCUSDT", side="BUY", quantity="0.002", price="87000", newClientOrderId="b-1",
                                **limit)
    client.futures_create_order(symbol="BTCUSDT", side="BUY", quantity="0.002", price="86000", newClientOrderId="b-2",
                                **limit)
    client.futures_create_order(symbol="ETHUSDT", side="SELL", quantity="0.01", price="3000", newClientOrderId="e-1",
                                **limit)
    client.futures_create_order(symbol="ETHUSDT", side="SELL", quantity="0.01", price="3050", **limit)
    client.futures_create_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="IOC", quantity="0.002",
                                price="80000")
    client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    sim.set_price("BTCUSDT", "86500")  # fills b-1, leaves b-2 resting
    client.futures_cancel_order(symbol="ETHUSDT", origClientOrderId="e-1")
    reused = client.futures_create_order(symbol="ETHUSDT", side="SELL", quantity="0.01", price="3100",
                                         newClientOrderId="e-1", **limit)
    client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.01")

    def open_ids(symbol=None):
        rows = client.futures_get_open_orders(**({"symbol": symbol} if symbol else {}))
        return [o["orderId"] for o in rows]

    def scanned_ids(symbol=None):
        return [o["orderId"] for o in sim.orders() if o["status"] in OPEN and symbol in (None, o["symbol"])]

    assert [o["clientOrderId"] for o in client.futures_get_open_orders(symbol="BTCUSDT")] == ["b-2"]
    assert client.futures_get_order(symbol="ETHUSDT", origClientOrderId="e-1")["orderId"] == reused["orderId"]
    for symbol in (None, "BTCUSDT", "ETHUSDT"):
        assert open_ids(symbol) == scanned_ids(symbol)
    assert len(open_ids()) == 3

    client.futures_cancel_all_open_orders(symbol="ETHUSDT")
    sim.set_price("BTCUSDT", "85000")
    assert open_ids() == scanned_ids() == []
    assert {o["status"] for o in sim.orders()} == {"FILLED", "CANCELED", "EXPIRED"}
