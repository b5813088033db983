"""Only an explicit setting selects dry run or sending, and only an explicit one selects the exchange:
without APPLY_MODE or EXCHANGE_TARGET the apply layer exits 2 with one line naming the variable and its values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from microservices.apply_layer.settings import ApplySettings
from shared import keys
from shared.modes import ApplyMode
from shared.settings import EXIT_CONFIG, load_settings

ROOT = Path(__file__).resolve().parents[2]
MODE_REQUIRED = "APPLY_MODE: required, no default: set it to one of dry_run | testnet | live"
TARGET_REQUIRED = "EXCHANGE_TARGET is required, there is no default: set it to simulator | testnet | mainnet"
# Whatever the developer's shell has set must not decide these tests.
CLEARED = ("APPLY_MODE", "EXCHANGE_", "BINANCE_", "TESTNET", "USE_TESTNET", "PAPER_TRADING")


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith(CLEARED):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(("value", "mode"), [("dry_run", ApplyMode.DRY_RUN), ("testnet", ApplyMode.TESTNET),
                                             ("live", ApplyMode.LIVE), ("DRY_RUN", ApplyMode.DRY_RUN),
                                             (" Testnet ", ApplyMode.TESTNET)])
def test_an_explicit_apply_mode_is_read(clean_env, monkeypatch, value, mode) -> None:
    monkeypatch.setenv("APPLY_MODE", value)

    settings = load_settings(ApplySettings)

    assert settings.apply_mode is mode


@pytest.mark.parametrize("value", ["Enforce", "ENFORCE", "enforce"])
def test_p26_mode_is_read_alike_in_any_case_by_the_apply_layer_and_the_heat_gate(clean_env, monkeypatch, value) -> None:
    """Seen by review: the heat gate lowered P26_MODE and the apply layer did not, so P26_MODE=Enforce left one
    daemon enforcing and the other exiting 2."""
    from microservices.portfolio_heat_gate.settings import HeatGateSettings
    from shared.modes import P26Mode

    monkeypatch.setenv("APPLY_MODE", "dry_run")
    monkeypatch.setenv("P26_MODE", value)

    assert load_settings(ApplySettings).p26_mode is load_settings(HeatGateSettings).p26_mode is P26Mode.ENFORCE


@pytest.mark.parametrize(("value", "complaint"), [(None, MODE_REQUIRED), ("", "dry_run"), ("dryrun", "dry_run")])
def test_a_missing_or_unknown_apply_mode_exits_2_with_one_line_naming_it(clean_env, monkeypatch, capsys, value,
                                                                          complaint) -> None:
    if value is not None:
        monkeypatch.setenv("APPLY_MODE", value)

    with pytest.raises(SystemExit) as exited:
        load_settings(ApplySettings)

    lines = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == EXIT_CONFIG
    assert len(lines) == 1 and "APPLY_MODE" in lines[0] and complaint in lines[0], lines


def daemon_env(redis_url: str, settings: dict[str, str]) -> dict[str, str]:
    inherited = {name: value for name, value in os.environ.items() if not name.upper().startswith(CLEARED)}
    return {**inherited, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url, "METRICS_PORT": "0", **settings}


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        ({"EXCHANGE_TARGET": "simulator"}, MODE_REQUIRED),
        ({"APPLY_MODE": "dry_run"}, TARGET_REQUIRED),
        ({"APPLY_MODE": "dry_run", "BINANCE_USE_TESTNET": "false"}, TARGET_REQUIRED),
        ({"APPLY_MODE": "dry_run", "EXCHANGE_TARGET": ""}, TARGET_REQUIRED),
    ],
    ids=["no-apply-mode", "no-target", "testnet-alias-false", "empty-target"],
)
def test_the_daemon_without_an_explicit_mode_or_target_exits_2_with_one_line(r, redis_url, settings, line) -> None:
    done = subprocess.run([sys.executable, "-m", "microservices.apply_layer"], env=daemon_env(redis_url, settings),
                          capture_output=True, text=True, timeout=60)

    lines = done.stderr.strip().splitlines()
    assert done.returncode == EXIT_CONFIG, done.stderr
    assert len(lines) == 1 and line in lines[0], lines


@pytest.mark.parametrize(("own", "executor_mode", "forced"), [
    (ApplyMode.DRY_RUN, "TESTNET", True),  # the seed's rollback: APPLY_MODE=dry_run in apply-layer.env alone
    (ApplyMode.DRY_RUN, "DRY_RUN", False),
    (ApplyMode.DRY_RUN, None, False),  # no executor running (the fleet restarting): its own start applies its mode
    (ApplyMode.TESTNET, "TESTNET", False),
    (ApplyMode.TESTNET, "DRY_RUN", False),  # the executor's dry run stands
])
def test_a_dry_run_given_to_the_apply_layer_alone_holds_fleet_wide(r, own, executor_mode, forced) -> None:
    """Found in review: the seed's rollback recipe set APPLY_MODE=dry_run for the apply layer and restarted it; the
    apply layer logged a warning and the fleet went on trading. The stricter mode now wins through the switch, judged
    on running executors' heartbeats: quantum:mode outlives its executor (a stale TESTNET there, the fleet restarting
    into dry run, must not force the switch, which would then hold after a later switch back)."""
    from structlog.testing import capture_logs

    from microservices.apply_layer.apply import honour_own_dry_run
    from shared.logging import get_logger

    r.set(keys.MODE, "TESTNET")  # what an executor that ran before wrote: it stays
    if executor_mode is not None:
        beat(r, "intent-executor@h#0", mode=executor_mode)

    with capture_logs() as logs:
        assert honour_own_dry_run(r, own, get_logger(component="apply_layer")) is forced

    assert (r.get(keys.FORCE_DRY_RUN) == "1") is forced
    assert any(line["event"] == "apply_mode_dry_run_forced_fleet_wide" for line in logs) is forced


def beat(r, consumer: str, ttl_s: int = 30, **fields: str) -> None:
    """A heartbeat as shared.runtime.liveness writes it; ttl_s below 20: its process stopped beating a while ago."""
    r.hset(keys.heartbeat(consumer), mapping={"daemon": consumer.split("@")[0], "pid": "1", **fields})
    r.expire(keys.heartbeat(consumer), ttl_s)


@pytest.mark.parametrize(("fields", "ttl_s", "forced"), [
    ({}, 30, True),  # an executor of an earlier version says no mode: read as sending
    ({"mode": "TESTNET"}, 5, False),  # a crashed executor's heartbeat, not renewed for 25 s: not running
])
def test_an_executor_without_a_mode_sends_and_a_stale_heartbeat_is_no_executor(r, fields, ttl_s, forced) -> None:
    from microservices.apply_layer.apply import honour_own_dry_run
    from shared.logging import get_logger

    beat(r, "intent-executor@h#0", ttl_s=ttl_s, **fields)

    assert honour_own_dry_run(r, ApplyMode.DRY_RUN, get_logger(component="apply_layer")) is forced
    assert (r.get(keys.FORCE_DRY_RUN) == "1") is forced


def test_an_executor_that_starts_sending_after_the_apply_layer_is_met_by_its_next_look(r) -> None:
    """Found in review: the one look at start missed an executor still starting (or crash-looping); the apply layer
    looks again every few seconds while its own dry run is not yet in force."""
    from microservices.apply_layer.apply import OwnDryRun
    from shared.logging import get_logger

    now = [0.0]
    own = OwnDryRun(r, ApplyMode.DRY_RUN, get_logger(component="apply_layer"), monotonic=lambda: now[0])
    own.check()
    assert r.get(keys.FORCE_DRY_RUN) is None and not own.done

    beat(r, "intent-executor@h#0", mode="TESTNET")
    now[0] += 1
    own.maybe_check()
    assert r.get(keys.FORCE_DRY_RUN) is None  # not yet: looked again every RECHECK_S
    now[0] += OwnDryRun.RECHECK_S
    own.maybe_check()
    assert r.get(keys.FORCE_DRY_RUN) == "1" and own.done


def test_a_group_another_running_apply_layer_reads_is_kept(r) -> None:
    """Found in review: XINFO's consumer idle time (before Redis 7.2, since the last entry delivered) took a live
    instance on a quiet stream for gone, and its group was destroyed under it. Running readers come from heartbeats."""
    from microservices.apply_layer.apply import other_readers

    proposal, calibrated = keys.Stream.HARVEST_PROPOSAL, keys.Stream.HARVEST_CALIBRATED
    beat(r, "apply-layer@h#0", p26_mode="enforce")  # this process: reads calibrated now
    assert other_readers(r, proposal, "apply-layer@h#0") == []
    beat(r, "apply-layer@other#0", p26_mode="shadow")  # another host, still in shadow: reads harvest.proposal
    beat(r, "apply-layer@old#0")  # an earlier version says no mode: it may read either
    beat(r, "apply-layer@gone#0", ttl_s=5, p26_mode="shadow")  # stopped beating: not running

    assert other_readers(r, proposal, "apply-layer@h#0") == [keys.heartbeat("apply-layer@old#0"),
                                                               keys.heartbeat("apply-layer@other#0")]
    assert other_readers(r, calibrated, "apply-layer@h#0") == [keys.heartbeat("apply-layer@old#0")]


def test_the_tick_runs_every_step_but_stops_at_once_when_redis_is_unavailable() -> None:
    """Each step runs whatever the others met (the trading rules refresh whatever the bypass met); a Redis that does
    not answer stops the tick at once (found in review: each further step waited its own timeouts, and together they
    outlasted systemd's watchdog)."""
    import redis as redis_py

    from microservices.apply_layer.main import run_steps

    ran: list[str] = []

    def fails(name: str, error: Exception):
        def step() -> None:
            ran.append(name)
            raise error
        return step

    with pytest.raises(ValueError, match="first"):
        run_steps([fails("a", ValueError("first")), fails("b", KeyError("second")), lambda: ran.append("c")])
    assert ran == ["a", "b", "c"]
    ran.clear()
    with pytest.raises(redis_py.ConnectionError):
        run_steps([fails("a", redis_py.ConnectionError("down")), lambda: ran.append("b")])
    assert ran == ["a"]
