"""Portfolio heat in [0, 1]: pure functions of the exposure (snapshot + account) and the settings.

    leverage      = clamp(total_notional / equity / P26_MAX_LEVERAGE, 0, 1)     equity <= 0 counts as 1
    drawdown      = clamp((equity_hwm - equity) / equity_hwm / P26_MAX_DRAWDOWN, 0, 1)
    concentration = largest position notional / total notional                 0 when flat
    heat          = clamp(0.5 * leverage + 0.3 * drawdown + 0.2 * concentration, 0, 1), 4 places
                    (weights P26_LEVERAGE_WEIGHT, P26_DRAWDOWN_WEIGHT, P26_CONCENTRATION_WEIGHT)

notional: |amount| * mark from the exchange snapshot; equity: the account's total_margin_balance
(wallet + unrealised PnL); equity_hwm: the highest equity seen, kept in Redis.

Buckets: COLD when heat < P26_COLD_MAX (0.25), WARM when heat < P26_WARM_MAX (0.65), else HOT.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from microservices.portfolio_heat_gate.settings import HeatGateSettings
from shared.schema import HeatBucket
from shared.snapshot import ExchangeSnapshot

ZERO = Decimal(0)
ONE = Decimal(1)
PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class Exposure:
    total_notional: Decimal
    largest_notional: Decimal
    equity: Decimal
    equity_hwm: Decimal


@dataclass(frozen=True)
class HeatReading:
    heat: Decimal
    bucket: HeatBucket
    leverage: Decimal
    drawdown: Decimal
    concentration: Decimal
    exposure: Exposure


def clamp(value: Decimal) -> Decimal:
    return max(ZERO, min(ONE, value))


def exposure_from(seen: ExchangeSnapshot, equity: Decimal, equity_hwm: Decimal) -> Exposure:
    notionals = [seen.notional(symbol) for symbol in seen.positions]
    return Exposure(sum(notionals, ZERO), max(notionals, default=ZERO), equity, max(equity_hwm, equity))


def leverage_component(exposure: Exposure, settings: HeatGateSettings) -> Decimal:
    if exposure.equity <= 0:
        return ONE if exposure.total_notional > 0 else ZERO
    return clamp(exposure.total_notional / exposure.equity / settings.p26_max_leverage)


def drawdown_component(exposure: Exposure, settings: HeatGateSettings) -> Decimal:
    if exposure.equity_hwm <= 0:
        return ZERO
    drawdown = (exposure.equity_hwm - exposure.equity) / exposure.equity_hwm
    return clamp(drawdown / settings.p26_max_drawdown)


def concentration_component(exposure: Exposure) -> Decimal:
    if exposure.total_notional <= 0:
        return ZERO
    return clamp(exposure.largest_notional / exposure.total_notional)


def bucket_for(heat: Decimal, settings: HeatGateSettings) -> HeatBucket:
    if heat < settings.p26_cold_max:
        return HeatBucket.COLD
    if heat < settings.p26_warm_max:
        return HeatBucket.WARM
    return HeatBucket.HOT


def portfolio_heat(exposure: Exposure, settings: HeatGateSettings) -> HeatReading:
    leverage = leverage_component(exposure, settings)
    drawdown = drawdown_component(exposure, settings)
    concentration = concentration_component(exposure)
    weighted = (settings.p26_leverage_weight * leverage + settings.p26_drawdown_weight * drawdown
                + settings.p26_concentration_weight * concentration)
    heat = clamp(weighted).quantize(PLACES)
    return HeatReading(heat, bucket_for(heat, settings), leverage.quantize(PLACES), drawdown.quantize(PLACES),
                       concentration.quantize(PLACES), exposure)
