"""The fleet's trading state from its two keys, read the same way by every part.

quantum:kill halts everything; quantum:governor:execution=DISABLED is reduce-only. Values
that are not what an operator would write fail safe: an unreadable kill means halted, an
unreadable execution value means reduce-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from shared.schema.fields import parse_bool

ENABLED = "ENABLED"
DISABLED = "DISABLED"


class TradingState(str, Enum):
    """NautilusTrader's three states: kill switch halts, DISABLED reduces only."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


@dataclass(frozen=True)
class Switches:
    kill: bool = False
    execution_enabled: bool = True
    invalid: Mapping[str, str] = field(default_factory=dict)  # switch -> unreadable raw value, treated as safe

    @property
    def trading(self) -> TradingState:
        if self.kill:
            return TradingState.HALTED
        return TradingState.ACTIVE if self.execution_enabled else TradingState.REDUCING


def parse_kill(raw: str | None) -> tuple[bool, bool]:
    """(on, readable): absent is off; a value that is not a boolean is on, as failing safe."""
    if raw is None:
        return False, True
    try:
        return parse_bool(raw), True
    except ValueError:
        return True, False


def parse_execution(raw: str | None) -> tuple[bool, bool]:
    """(enabled, readable): absent is enabled; anything but ENABLED/DISABLED is DISABLED."""
    word = None if raw is None else raw.strip().upper()
    if word is None or word == ENABLED:
        return True, True
    return False, word == DISABLED


def forced_dry_run(raw: str | None) -> bool:
    """quantum:apply:dry_run: any value but an explicit off (0, false, no, off, empty) forces dry run; an
    unreadable one (shared.lua.NOT_TEXT included) fails safe."""
    return raw is not None and raw.strip().lower() not in ("0", "false", "no", "off", "")


def read_switches(kill_raw: str | None, execution_raw: str | None) -> Switches:
    kill, kill_readable = parse_kill(kill_raw)
    enabled, execution_readable = parse_execution(execution_raw)
    invalid = {}
    if not kill_readable:
        invalid["kill"] = kill_raw
    if not execution_readable:
        invalid["execution"] = execution_raw
    return Switches(kill, enabled, invalid)
