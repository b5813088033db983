import random
from decimal import Decimal

import pytest

from microservices.exchange_sim.num import fixed, places


def _fixed_by_definition(value: Decimal, decimals: int) -> str:
    shown = max(decimals, places(value)) if value != 0 else decimals
    return format(value.quantize(Decimal(1).scaleb(-shown)), "f")


@pytest.mark.parametrize(("value", "decimals", "text"), [
    ("0", 2, "0.00"), ("-0", 1, "-0.0"), ("0E-12", 0, "0"), ("1.5", 2, "1.50"), ("0.123", 2, "0.123"),
    ("1E+3", 1, "1000.0"), ("100", 0, "100"), ("-0.10", 1, "-0.1"), ("88000.00", 2, "88000.00"),
    ("0.00001000", 5, "0.00001"), ("2920.123456789", 5, "2920.123456789"),
])
def test_fixed_keeps_at_least_the_places_asked_and_never_drops_digits(value, decimals, text):
    assert fixed(Decimal(value), decimals) == text


def test_fixed_matches_its_definition():
    rng = random.Random(7)
    for _ in range(5000):
        digits = rng.randrange(-10**rng.randrange(1, 20), 10**rng.randrange(1, 20))
        value = Decimal(digits).scaleb(-rng.randrange(0, 16))
        decimals = rng.randrange(0, 10)
        assert fixed(value, decimals) == _fixed_by_definition(value, decimals), (value, decimals)
