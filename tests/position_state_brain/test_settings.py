"""P3.3 settings from the environment: defaults, the comma-separated allowlist, and exit 2 on bad values."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from microservices.position_state_brain.gates import OpenOnPosition
from microservices.position_state_brain.settings import PositionStateSettings
from shared.settings import EXIT_CONFIG, load_settings

SEED_SYMBOLS = {"BTCUSDT", "ETHUSDT", "TRXUSDT", "LTCUSDT", "LINKUSDT", "SANDUSDT", "MANAUSDT", "GALAUSDT",
                "XMRUSDT", "SEIUSDT", "STRKUSDT", "TONUSDT", "NEARUSDT", "AVAXUSDT"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("P33_") or name.upper() == "METRICS_PORT":
            monkeypatch.delenv(name)


def test_defaults_match_the_seed():
    settings = PositionStateSettings()

    assert settings.metrics_port == 8045
    assert settings.allowlist == SEED_SYMBOLS
    assert (settings.p33_poll_sec, settings.p33_stale_threshold_sec, settings.p33_cooldown_sec) == (1.0, 10.0, 15.0)
    assert (settings.p33_permit_ttl, settings.p33_qty_tolerance_steps) == (60, 1)
    assert settings.p33_open_on_position is OpenOnPosition.DENY


def test_values_come_from_the_environment_in_any_case(monkeypatch):
    monkeypatch.setenv("P33_ALLOWLIST", " btcusdt, ETHUSDT ,,")
    monkeypatch.setenv("p33_open_on_position", "Scale_In")
    monkeypatch.setenv("P33_COOLDOWN_SEC", "0")

    settings = PositionStateSettings()
    policy = settings.policy()

    assert policy.allowlist == {"BTCUSDT", "ETHUSDT"}
    assert policy.open_on_position is OpenOnPosition.SCALE_IN
    assert policy.cooldown_s == 0


@pytest.mark.parametrize("name, value", [
    ("P33_ALLOWLIST", ""),
    ("P33_ALLOWLIST", " , "),
    ("P33_ALLOWLIST", "BTC-USDT,ETHUSDT"),
    ("P33_ALLOWLIST", '["BTCUSDT"]'),
    ("P33_POLL_SEC", "0"),
    ("P33_POLL_SEC", "soon"),
    ("P33_STALE_THRESHOLD_SEC", "0"),
    ("P33_COOLDOWN_SEC", "-1"),
    ("P33_PERMIT_TTL", "0"),
    ("P33_QTY_TOLERANCE_STEPS", "-1"),
    ("P33_OPEN_ON_POSITION", "maybe"),
])
def test_a_bad_value_exits_2_with_one_line_naming_it(monkeypatch, capsys, name, value):
    monkeypatch.setenv(name, value)

    with pytest.raises(SystemExit) as exited:
        load_settings(PositionStateSettings)

    err = capsys.readouterr().err
    assert exited.value.code == EXIT_CONFIG
    assert err.count("\n") == 1 and name in err


def test_the_module_entry_point_exits_2_on_a_bad_setting():
    env = {**os.environ, "P33_POLL_SEC": "soon", "METRICS_ENABLED": "false"}

    done = subprocess.run([sys.executable, "-m", "microservices.position_state_brain"], env=env,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == EXIT_CONFIG
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "P33_POLL_SEC" in done.stderr
