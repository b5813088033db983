"""Whether a symbol's ledger must be healed: pure, from the two amounts, the clock and the record.

The exchange is the truth. A difference larger than the tolerance that has lasted past the
grace period, while no plan on the symbol is in flight, is healed by adopting the exchange.
An unreadable ledger is a difference of unknown size: always a mismatch, healed the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum

from shared.ledger import disagrees


class Verdict(str, Enum):
    AGREE = "agree"
    NEW_MISMATCH = "new_mismatch"
    WAITING = "waiting"  # inside the grace period, or a plan is in flight
    HEAL = "heal"


class HealKind(str, Enum):
    QTY_MISMATCH = "qty_mismatch"
    EXTERNAL_POSITION = "external_position"  # opened outside the fleet: no ledger at all
    EXTERNAL_CLOSE = "external_close"  # closed outside the fleet: the exchange is flat
    LEDGER_UNREADABLE = "ledger_unreadable"  # the ledger key holds what does not parse (a typo, a comma decimal)


@dataclass(frozen=True)
class Observation:
    symbol: str
    exchange_amt: Decimal
    ledger_amt: Decimal | None  # None: no ledger entry, or an unreadable one
    tolerance: Decimal
    ledger_unreadable: bool = False

    @property
    def diff(self) -> Decimal | None:
        """None when the ledger is unreadable: the size of the difference is unknown."""
        if self.ledger_unreadable:
            return None
        return abs(self.exchange_amt - (self.ledger_amt or Decimal(0)))

    @property
    def agrees(self) -> bool:
        if self.ledger_unreadable:
            return False
        return not disagrees(self.exchange_amt, self.ledger_amt or Decimal(0), self.tolerance)

    @property
    def kind(self) -> HealKind:
        if self.ledger_unreadable:
            return HealKind.LEDGER_UNREADABLE
        if self.ledger_amt is None:
            return HealKind.EXTERNAL_POSITION
        return HealKind.EXTERNAL_CLOSE if self.exchange_amt == 0 else HealKind.QTY_MISMATCH


def decide(observation: Observation, first_seen_ms: int | None, in_flight: bool, now_ms: int, grace_ms: int) -> Verdict:
    if observation.agrees:
        return Verdict.AGREE
    if first_seen_ms is None:
        return Verdict.HEAL if grace_ms == 0 and not in_flight else Verdict.NEW_MISMATCH
    if in_flight or now_ms - first_seen_ms < grace_ms:
        return Verdict.WAITING
    return Verdict.HEAL
