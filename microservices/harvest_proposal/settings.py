"""Harvest proposal settings (etc/quantum/harvest-proposal.env)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from decimal import Decimal, InvalidOperation

from pydantic import Field, field_validator

from shared.schema import Action
from shared.settings import CommonSettings

DEFAULT_LADDER = "1.0:PARTIAL_25,2.0:PARTIAL_50,3.0:PARTIAL_75"
LADDER_ACTIONS = frozenset({Action.PARTIAL_25, Action.PARTIAL_50, Action.PARTIAL_75, Action.FULL_CLOSE_PROPOSED})


@dataclass(frozen=True)
class Rung:
    """One take-profit rung: at `level` R, propose `action`. `label` is the level as configured."""

    label: str
    level: Decimal
    action: Action


def parse_ladder(text: str) -> tuple[Rung, ...]:
    """Rungs from `1.0:PARTIAL_25,2.0:PARTIAL_50`, sorted by level; malformed or duplicate levels are refused."""
    rungs = [_parse_rung(part.strip()) for part in text.split(",") if part.strip()]
    if not rungs:
        raise ValueError("must name at least one rung")
    levels = [rung.level for rung in rungs]
    if len(set(levels)) != len(levels):
        raise ValueError("rung levels must be distinct")
    return tuple(sorted(rungs, key=lambda rung: rung.level))


def _parse_rung(part: str) -> Rung:
    label, _, action_name = part.partition(":")
    try:
        level = Decimal(label.strip())
        action = Action(action_name.strip().upper())
    except (InvalidOperation, ValueError):
        raise ValueError(f"rung {part[:40]!r} is not <R level>:<action>") from None
    if not level.is_finite() or level <= 0:
        raise ValueError(f"rung level {label[:20]!r} must be a positive number")
    if action not in LADDER_ACTIONS:
        raise ValueError(f"rung action {action.value} is not a close action")
    return Rung(label.strip(), level, action)


class HarvestSettings(CommonSettings):
    namespaces = (*CommonSettings.namespaces, "HARVEST_")
    metrics_port: int = Field(default=8047, ge=0, le=65535)
    harvest_poll_sec: float = Field(default=1.0, gt=0, le=60)
    harvest_default_risk_pct: Decimal = Field(default=Decimal("0.01"), gt=0, lt=1)
    harvest_kill_score_critical: Decimal = Field(default=Decimal("0.8"), gt=0, le=1)
    harvest_loss_weight: Decimal = Field(default=Decimal("0.8"), ge=0, le=10)
    harvest_giveback_weight: Decimal = Field(default=Decimal("0.4"), ge=0, le=10)
    harvest_tp_ladder: str = DEFAULT_LADDER
    harvest_repropose_sec: float = Field(default=30.0, gt=0)
    harvest_snapshot_max_age_sec: float = Field(default=5.0, gt=0)
    harvest_state_ttl_sec: int = Field(default=7 * 24 * 3600, ge=60)

    @field_validator("harvest_tp_ladder")
    @classmethod
    def _ladder_parses(cls, value: str) -> str:
        parse_ladder(value)
        return value

    @cached_property
    def ladder(self) -> tuple[Rung, ...]:
        return parse_ladder(self.harvest_tp_ladder)

    @property
    def repropose_ms(self) -> int:
        return int(self.harvest_repropose_sec * 1000)
