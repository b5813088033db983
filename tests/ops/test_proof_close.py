"""`quantum proof --close` closes every open whose result says it filled, and names what may be left open."""

from __future__ import annotations

import argparse
import json
from decimal import Decimal

from shared.cli import proof
from shared.exchange.errors import ExchangeUnavailable


class Unconfirmed:
    """The real client, except that order lookups fail (a 429 or a timeout at the wrong moment)."""

    def __init__(self, real) -> None:
        self.real = real

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def get_order(self, symbol: str, client_order_id: str):
        raise ExchangeUnavailable("HTTP 503: lookup failed")


def args(redis_url: str, out, **extra) -> argparse.Namespace:
    return argparse.Namespace(redis_url=redis_url, mainnet=False, plan=["BTCUSDT:0.002"], count=1, close=True,
                              timeout=20.0, out=str(out), **extra)


def test_an_open_the_exchange_could_not_confirm_is_closed_too(order_path, access, sim, redis_url, tmp_path) -> None:
    """Found in a review: only verified opens were closed, so a lookup that failed left a real position open
    (even with --mainnet --close), and nothing said so."""
    lines: list[str] = []

    code = proof.prove(order_path.client, Unconfirmed(access.client), [("BTCUSDT", "0.002")],
                       args(redis_url, tmp_path / "p.json"), lines.append)

    document = json.loads((tmp_path / "p.json").read_text())
    assert code == 1 and document["ok"] is False  # nothing was verified on the exchange
    assert any(line.startswith("Injected 1 close plans") for line in lines), lines
    held = sim.binance_client().futures_position_information(symbol="BTCUSDT")  # v3: open positions only
    assert all(Decimal(position["positionAmt"]) == 0 for position in held)
    assert document["possibly_open"] == []


def test_a_close_that_was_refused_is_named_as_maybe_open(order_path, access, sim, redis_url, tmp_path,
                                                        monkeypatch) -> None:
    lines: list[str] = []
    real_batch = proof.run_batch

    def halt_before_closing(client, exchange, batch, what, *rest):
        if batch[0].reduce_only:
            client.set("quantum:kill", "1")  # the closes are refused
        return real_batch(client, exchange, batch, what, *rest)

    monkeypatch.setattr(proof, "run_batch", halt_before_closing)
    proof.prove(order_path.client, access.client, [("BTCUSDT", "0.002")], args(redis_url, tmp_path / "p.json"),
                lines.append)

    assert json.loads((tmp_path / "p.json").read_text())["possibly_open"] == ["BTCUSDT"]
    assert any("MAY BE OPEN  BTCUSDT" in line for line in lines), lines


def test_only_an_order_filled_by_the_recorded_quantity_confirms_a_result() -> None:
    """Found in review: README calls a proof good when every order is FILLED with the quantity asked, but a
    PARTIALLY_FILLED or NEW order passed (exit 0)."""
    from shared.exchange.models import parse_order

    def order(status: str, executed: str):
        return parse_order({"symbol": "BTCUSDT", "orderId": 7, "clientOrderId": "qt-1", "side": "BUY", "status": status,
                            "origQty": "0.002", "executedQty": executed, "avgPrice": "88000"})

    result = {"order_id": "7", "client_order_id": "qt-1", "filled_qty": "0.002"}
    assert proof.order_problem(order("FILLED", "0.0020"), result) is None
    assert proof.order_problem(order("PARTIALLY_FILLED", "0.001"), result)[0] == "order_not_filled"
    assert proof.order_problem(order("NEW", "0"), result)[0] == "order_not_filled"
    assert proof.order_problem(order("FILLED", "0.003"), result)[0] == "filled_qty_mismatch"
