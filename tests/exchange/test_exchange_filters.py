import json
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from pathlib import Path

import pytest

from shared.exchange.filters import (
    FilterReason,
    SymbolRules,
    parse_exchange_info,
    round_price,
    round_qty_down,
    round_to_step,
    to_decimal,
    validate_order,
)

D = Decimal
SAMPLE = json.loads((Path(__file__).parent / "exchange_info_sample.json").read_text())


@pytest.fixture(scope="module")
def rules() -> dict[str, SymbolRules]:
    return parse_exchange_info(SAMPLE)


def test_parse_reads_every_filter_as_exact_decimal(rules):
    btc = rules["BTCUSDT"]

    assert (btc.tick_size, btc.min_price, btc.max_price) == (D("0.10"), D("261.10"), D("809484"))
    assert (btc.min_qty, btc.max_qty, btc.step_size) == (D("0.001"), D("1000"), D("0.001"))
    assert (btc.market_min_qty, btc.market_max_qty, btc.market_step_size) == (D("0.001"), D("120"), D("0.001"))
    assert (btc.min_notional, btc.quantity_precision, btc.price_precision) == (D("100"), 3, 2)
    assert btc.status == "TRADING" and btc.trading


def test_parse_falls_back_to_lot_size_when_market_lot_size_is_absent(rules):
    old = rules["OLDUSDT"]

    assert old.lot(market=True) == old.lot(market=False) == (D("1"), D("1000000"), D("1"))


def test_parse_rejects_malformed_numbers_naming_the_symbol():
    payload = {"symbols": [{"symbol": "BADUSDT", "status": "TRADING",
                            "filters": [{"filterType": "LOT_SIZE", "minQty": "x", "maxQty": "1", "stepSize": "1"}]}]}

    with pytest.raises(ValueError, match="BADUSDT"):
        parse_exchange_info(payload)


def test_to_decimal_refuses_floats():
    with pytest.raises(TypeError):
        to_decimal(0.1)


@pytest.mark.parametrize(
    ("symbol", "qty", "market", "expected"),
    [
        ("BTCUSDT", "0.0023", True, "0.002"),
        ("BTCUSDT", "0.0029999", True, "0.002"),
        ("BTCUSDT", "0.002", True, "0.002"),
        ("BTCUSDT", "0.0009", True, "0.000"),
        ("BTCUSDT", "-0.0023", True, "-0.002"),
        ("ETHUSDT", "1.23456", False, "1.234"),
        ("TRXUSDT", "631.9", True, "631"),
        ("TRXUSDT", "1000.00", True, "1000"),
    ],
)
def test_round_qty_down_to_step(rules, symbol, qty, market, expected):
    result = round_qty_down(rules[symbol], D(qty), market=market)

    assert str(result) == expected


@pytest.mark.parametrize(
    ("value", "step", "rounding", "expected"),
    [
        ("1234", "10", ROUND_DOWN, "1230"),
        ("0.37", "0.5", ROUND_DOWN, "0.0"),
        ("0.0023", "0.00100000", ROUND_DOWN, "0.002"),
        ("5", "0", ROUND_DOWN, "5"),
    ],
)
def test_round_to_step_never_uses_scientific_notation(value, step, rounding, expected):
    assert str(round_to_step(D(value), D(step), rounding)) == expected


@pytest.mark.parametrize(
    ("symbol", "price", "rounding", "expected"),
    [
        ("BTCUSDT", "87964.34", None, "87964.3"),
        ("BTCUSDT", "87964.35", None, "87964.4"),
        ("BTCUSDT", "87964.39", ROUND_DOWN, "87964.3"),
        ("BTCUSDT", "87964.31", ROUND_UP, "87964.4"),
        ("TRXUSDT", "0.2912345", None, "0.29123"),
    ],
)
def test_round_price_to_tick(rules, symbol, price, rounding, expected):
    kwargs = {} if rounding is None else {"rounding": rounding}

    assert str(round_price(rules[symbol], D(price), **kwargs)) == expected


@pytest.mark.parametrize(
    ("symbol", "qty", "mark", "reduce_only", "market", "reason"),
    [
        ("BTCUSDT", "0.002", "87964.30", False, True, None),
        ("BTCUSDT", "0.001", "88000", False, True, FilterReason.BELOW_MIN_NOTIONAL),
        ("BTCUSDT", "0.001", "88000", True, True, None),
        ("BTCUSDT", "0.000", "88000", True, True, FilterReason.BELOW_MIN_QTY),
        ("BTCUSDT", "121", "88000", False, True, FilterReason.ABOVE_MAX_QTY),
        ("BTCUSDT", "121", "88000", True, True, FilterReason.ABOVE_MAX_QTY),
        ("BTCUSDT", "121", "88000", False, False, None),
        ("BTCUSDT", "1001", "88000", False, False, FilterReason.ABOVE_MAX_QTY),
        ("TRXUSDT", "18", "0.29", False, True, None),
        ("TRXUSDT", "17", "0.29", False, True, FilterReason.BELOW_MIN_NOTIONAL),
        ("TRXUSDT", "17", "0.29", True, True, None),
        ("TRXUSDT", "5000001", "0.29", False, True, FilterReason.ABOVE_MAX_QTY),
        ("TRXUSDT", "5000001", "0.29", False, False, None),
        ("OLDUSDT", "100", "1", True, True, FilterReason.SYMBOL_NOT_TRADING),
    ],
)
def test_validate_order(rules, symbol, qty, mark, reduce_only, market, reason):
    verdict = validate_order(rules[symbol], D(qty), D(mark), reduce_only=reduce_only, market=market)

    assert (verdict.reason if verdict else None) is reason


def test_min_notional_verdict_carries_the_numbers(rules):
    verdict = validate_order(rules["BTCUSDT"], D("0.001"), D("88000"), reduce_only=False)

    assert verdict.detail["notional"] == D("88.000")
    assert verdict.detail["min_notional"] == D("100")
    assert verdict.as_fields()["reason"] == "below_min_notional"


def test_validate_refuses_a_non_positive_mark_price_for_opens(rules):
    with pytest.raises(ValueError):
        validate_order(rules["BTCUSDT"], D("0.002"), D("0"), reduce_only=False)


def test_rules_round_trip_through_json(rules):
    btc = rules["BTCUSDT"]

    assert SymbolRules.from_json_dict(json.loads(json.dumps(btc.to_json_dict()))) == btc
