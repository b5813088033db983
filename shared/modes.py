"""APPLY_MODE: whether plans reach the exchange. Read by the executor and the apply layer."""

from __future__ import annotations

from enum import Enum

from shared import keys
from shared.exchange.target import Target


class _AnyCase(str, Enum):
    """A setting's value in any case and with stray blanks ("Enforce", "DRY_RUN", the way quantum:mode shows it):
    the same one choice, never a second meaning."""

    @classmethod
    def _missing_(cls, value: object) -> "_AnyCase | None":
        if isinstance(value, str):
            return next((member for member in cls if member.value == value.strip().lower()), None)
        return None


class ApplyMode(_AnyCase):
    DRY_RUN = "dry_run"  # every gate runs; nothing is sent
    TESTNET = "testnet"  # orders go to the simulator or the Binance testnet
    LIVE = "live"  # orders go to mainnet (EXCHANGE_TARGET=mainnet, confirmed)


def mode_mismatch(mode: ApplyMode, target: Target) -> str | None:
    """APPLY_MODE and EXCHANGE_TARGET must agree, so no setting sends real orders by accident."""
    if mode is ApplyMode.LIVE and target is not Target.MAINNET:
        return f"APPLY_MODE=live needs EXCHANGE_TARGET=mainnet (it is {target.value})"
    if mode is ApplyMode.TESTNET and target is Target.MAINNET:
        return "APPLY_MODE=testnet with EXCHANGE_TARGET=mainnet would trade real money; use APPLY_MODE=live"
    return None


FLEET_MODE_DRY_RUN = "DRY_RUN"


def fleet_mode(mode: ApplyMode, target: Target) -> str:
    """What quantum:mode says (the executor writes it): the target, or DRY_RUN."""
    return FLEET_MODE_DRY_RUN if mode is ApplyMode.DRY_RUN else target.value.upper()


class P26Mode(_AnyCase):
    """Which exit proposals the apply layer executes; the heat gate publishes calibrated ones in both."""

    SHADOW = "shadow"  # execute the raw proposal; P2.6 only logs what it would change
    ENFORCE = "enforce"  # execute P2.6's calibrated proposal

    @property
    def input_stream(self) -> str:
        return keys.Stream.HARVEST_PROPOSAL if self is P26Mode.SHADOW else keys.Stream.HARVEST_CALIBRATED
