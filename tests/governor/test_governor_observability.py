"""What operators see: gauges for the switches, decision counters, one log line per decision, round trips."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import redis
from governor_support import Clock, close_plan, plan, snapshot
from prometheus_client import REGISTRY, generate_latest
from redis.connection import Connection
from structlog.testing import capture_logs

from microservices.governor.governor import Governor
from microservices.governor.settings import Limits
from shared import keys
from shared import snapshot as exchange_snapshot

MARKS = {"BTCUSDT": "80000"}


@pytest.fixture
def governor(r: redis.Redis) -> Governor:
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    return Governor(r, Limits(), clock=Clock())


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def decisions(allow: str, reason: str) -> float:
    return REGISTRY.get_sample_value("quantum_governor_decisions_total", {"allow": allow, "reason": reason}) or 0.0


@pytest.mark.parametrize("kill, execution, kill_gauge, enabled_gauge", [
    (None, None, 0, 1),
    ("1", None, 1, 1),
    ("0", "DISABLED", 0, 0),
    ("true", "ENABLED", 1, 1),
    ("banana", "PAUSED", 1, 0),
])
def test_the_switch_gauges_follow_the_keys(r: redis.Redis, governor: Governor, kill, execution, kill_gauge, enabled_gauge) -> None:
    for key, value in ((keys.KILL, kill), (keys.GOVERNOR_EXECUTION, execution)):
        if value is not None:
            r.set(key, value)

    governor.refresh_gauges()

    assert (gauge("quantum_governor_kill_switch"), gauge("quantum_governor_execution_enabled")) == (kill_gauge, enabled_gauge)


def test_a_decision_also_updates_the_gauges(r: redis.Redis, governor: Governor) -> None:
    governor.refresh_gauges()
    r.set(keys.KILL, "1")

    governor.handle(close_plan())

    assert gauge("quantum_governor_kill_switch") == 1


def test_decisions_are_counted_by_allow_and_reason(r: redis.Redis, governor: Governor) -> None:
    allowed_before, killed_before = decisions("true", "open_allowed"), decisions("false", "kill_switch")

    governor.handle(plan("a"))
    r.set(keys.KILL, "1")
    governor.handle(plan("b"))
    governor.handle(close_plan("c"))

    assert decisions("true", "open_allowed") - allowed_before == 1
    assert decisions("false", "kill_switch") - killed_before == 2


def test_the_exposition_passes_promtool(r: redis.Redis, governor: Governor) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'; .ci/run installs it when it can)")
    governor.handle(plan("a"))
    governor.refresh_gauges()
    text = generate_latest(REGISTRY).decode()

    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)

    assert "quantum_governor_decisions_total{" in text and "quantum_governor_auto_disarmed " in text
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_each_decision_is_one_permit_decision_line(governor: Governor) -> None:
    with capture_logs() as logs:
        governor.handle(plan("a"))
        governor.handle(plan("held", decision="HOLD"))

    lines = [line for line in logs if line["event"] == "PERMIT_DECISION"]
    assert len(lines) == 1
    assert {k: lines[0][k] for k in ("permit", "plan_id", "symbol", "allow", "reason")} == {
        "permit": "p32", "plan_id": "a", "symbol": "BTCUSDT", "allow": True, "reason": "open_allowed"}
    assert lines[0]["context"]["computed_notional"] == "80"


def test_an_unreadable_switch_is_logged_as_an_error_once(r: redis.Redis, governor: Governor) -> None:
    r.set(keys.KILL, "banana")

    with capture_logs() as logs:
        governor.handle(plan("a"))
        governor.handle(close_plan("b"))
        governor.refresh_gauges()

    errors = [line for line in logs if line["log_level"] == "error"]
    assert [(e["event"], e["what"], e["value"], e["treated_as"]) for e in errors] == [("unreadable_state", "kill", "banana", "on")]


class RoundTrips:
    """Counts what goes over the wire: one packed send is one round trip."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.count = 0
        original = Connection.send_packed_command

        def counted(connection, command, check_health=True):
            self.count += 1
            return original(connection, command, check_health)

        monkeypatch.setattr(Connection, "send_packed_command", counted)


@pytest.mark.parametrize("the_plan", [plan("a"), close_plan("b")], ids=["open", "close"])
def test_a_decision_is_one_read_and_one_write(governor: Governor, monkeypatch: pytest.MonkeyPatch, the_plan) -> None:
    trips = RoundTrips(monkeypatch)

    governor.handle(the_plan)

    assert trips.count == 2
