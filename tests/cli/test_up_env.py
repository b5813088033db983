"""`quantum up` makes the dev stack's target and mode explicit: the simulator, trading, unless told otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.cli.up import Stack, StackError


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper() in {"EXCHANGE_TARGET", "APPLY_MODE"}:
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("env", "target", "mode"),
    [
        ({}, "simulator", "testnet"),
        ({"APPLY_MODE": "dry_run"}, "simulator", "dry_run"),
        ({"EXCHANGE_TARGET": "testnet", "APPLY_MODE": "dry_run"}, "testnet", "dry_run"),
    ],
)
def test_the_dev_stack_passes_an_explicit_target_and_mode(clean_env, monkeypatch, env, target, mode) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    child_env = Stack(Path("unused"))._child_env()

    assert (child_env["EXCHANGE_TARGET"], child_env["APPLY_MODE"]) == (target, mode)


@pytest.mark.parametrize(("env", "walk"), [({}, "10"), ({"EXCHANGE_SIM_WALK_BPS_PER_TICK": "1.5"}, "1.5")])
def test_the_dev_stack_moves_the_simulators_marks_enough_for_the_demos_exits(clean_env, monkeypatch, env, walk) -> None:
    # At the simulator's own 1.5 bps a second a 1 % move takes hours: `make run` showed opens and never an exit.
    monkeypatch.delenv("EXCHANGE_SIM_WALK_BPS_PER_TICK", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert Stack(Path("unused"))._child_env()["EXCHANGE_SIM_WALK_BPS_PER_TICK"] == walk


@pytest.mark.parametrize("env", [{"EXCHANGE_TARGET": "testnet"}, {"EXCHANGE_TARGET": "testnet", "APPLY_MODE": ""}])
def test_another_target_without_apply_mode_is_refused_before_any_daemon_starts(clean_env, monkeypatch, env) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(StackError, match="APPLY_MODE is required with EXCHANGE_TARGET=testnet"):
        Stack(Path("unused"))._child_env()


def test_the_embedded_redis_leaves_no_data_behind_when_the_stack_stops(tmp_path) -> None:
    stack = Stack(tmp_path)
    stack._start_embedded_redis()
    data_dir = Path(stack.redis_server.data_dir)
    assert data_dir.is_dir()

    stack.stop()

    assert not data_dir.exists()


def test_real_exchange_credentials_reach_only_the_daemons_that_talk_to_the_exchange(clean_env, monkeypatch) -> None:
    """From a review: a BINANCE_API_SECRET given to the fleet (the shell here, common.env under systemd) reached
    every process, the governor and the simulator too. The units unset them (UnsetEnvironment=), and so does up."""
    from shared import fleet
    from shared.exchange.target import REAL_CREDENTIAL_VARIABLES

    for name in REAL_CREDENTIAL_VARIABLES:
        monkeypatch.setenv(name, "A1b2C3d4")
    stack = Stack(Path("unused"))
    stack.env = stack._child_env()

    for spec in (fleet.SIMULATOR, *fleet.FLEET):
        passed = {name for name in REAL_CREDENTIAL_VARIABLES if name in stack.env_for(spec)}
        assert passed == (set(REAL_CREDENTIAL_VARIABLES) if spec.exchange else set()), spec.name


def test_mainnet_is_refused_before_anything_starts(clean_env, monkeypatch) -> None:
    """Found in review: with the fleet's settings in the shell, `up` ran a second fleet on the real account (its own
    Redis: no heartbeat of the first to refuse it), and the demo's random opens with it."""
    monkeypatch.setenv("EXCHANGE_TARGET", "mainnet")
    monkeypatch.setenv("APPLY_MODE", "live")

    with pytest.raises(StackError, match="does not run on mainnet"):
        Stack(Path("unused"))._child_env()


@pytest.mark.parametrize(("target", "demo_started"), [("simulator", True), ("testnet", False)])
def test_the_demo_signals_run_on_the_simulator_only(clean_env, monkeypatch, capsys, target, demo_started) -> None:
    from shared import fleet

    monkeypatch.setenv("EXCHANGE_TARGET", target)
    monkeypatch.setenv("APPLY_MODE", "dry_run")
    stack = Stack(Path("unused"))
    started: list[str] = []
    monkeypatch.setattr(stack, "_connect", lambda: None)
    monkeypatch.setattr(stack, "_refuse_a_running_fleet", lambda: None)
    monkeypatch.setattr(stack, "_start_child", lambda spec: started.append(spec.name))
    monkeypatch.setattr(stack, "_wait_for_simulator", lambda: None)
    monkeypatch.setattr(stack, "_print_table", lambda: None)
    monkeypatch.setattr(Path, "mkdir", lambda *args, **kwargs: None)

    stack.start("redis://127.0.0.1:1/0", with_demo=True)

    demo = [spec.name for spec in fleet.FLEET if spec.demo]
    assert demo and all((name in started) == demo_started for name in demo)
    assert (fleet.SIMULATOR.name in started) == (target == "simulator")
    assert ("demo signals not started" in capsys.readouterr().out) == (not demo_started)
