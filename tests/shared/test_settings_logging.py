"""Settings fail with one line naming the variable; logs are JSON lines with secrets redacted."""

from __future__ import annotations

import json
import os
import subprocess
import time
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import structlog

from microservices.apply_layer.settings import ApplySettings
from microservices.demo_signals.main import DemoSettings
from microservices.governor.settings import GovernorSettings
from microservices.harvest_proposal.settings import HarvestSettings
from microservices.intent_bridge.settings import BridgeSettings
from microservices.intent_executor.settings import ExecutorSettings
from microservices.portfolio_heat_gate.settings import HeatGateSettings
from microservices.position_state_brain.settings import PositionStateSettings
from microservices.reconcile.settings import ReconcileSettings
from shared import logging as qlog
from shared.schema import Reason
from shared.settings import CommonSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DAEMON_SETTINGS = (CommonSettings, ApplySettings, BridgeSettings, DemoSettings, ExecutorSettings, GovernorSettings,
                   HarvestSettings, HeatGateSettings, PositionStateSettings, ReconcileSettings)
FLOAT_SETTINGS = [(cls, name.upper()) for cls in DAEMON_SETTINGS for name, info in cls.model_fields.items()
                  if info.annotation is float]


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"STREAM_BLOCK_MS": "soon"}, "STREAM_BLOCK_MS"),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT"),
        ({"METRICS_ENABLED": "maybe"}, "METRICS_ENABLED"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ],
)
def test_a_bad_setting_exits_2_with_one_line_naming_the_variable(monkeypatch, capsys, env, variable) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(SystemExit) as exited:
        load_settings(CommonSettings)

    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2
    assert len(err) == 1 and variable in err[0]


def test_every_daemon_has_float_settings_to_check() -> None:
    assert {"GOV_SNAPSHOT_MAX_AGE_SEC", "RECONCILE_GRACE_SEC", "GOV_SYMBOL_COOLDOWN_SECONDS",
            "STREAM_RETENTION_HOURS"} <= {name for _cls, name in FLOAT_SETTINGS}


@pytest.mark.parametrize(("value", "complaint"), [
    ("inf", "Input should be a finite number"), ("-inf", "Input should be a finite number"),
    ("Infinity", "Input should be a finite number"), ("nan", "Input should be a finite number"),
    ("NaN", "Input should be a finite number"), ("1e309", "Input should be a finite number"),
    ("1e300", ""),  # finite, but seconds * 1000 would overflow: refused by the field's own bound or the common one
])
@pytest.mark.parametrize(("settings_cls", "variable"), FLOAT_SETTINGS,
                         ids=[f"{cls.__name__}-{name}" for cls, name in FLOAT_SETTINGS])
def test_a_non_finite_or_absurd_float_setting_exits_2_naming_the_variable(monkeypatch, capsys, settings_cls,
                                                                          variable, value, complaint) -> None:
    monkeypatch.setenv("APPLY_MODE", "dry_run")
    monkeypatch.setenv(variable, value)

    with pytest.raises(SystemExit) as exited:
        load_settings(settings_cls)

    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2
    assert len(err) == 1 and err[0].startswith(f"configuration error: {variable}: {complaint}"), err


@pytest.mark.parametrize("word", ["false", "False", "0", "no", "NO"])
def test_false_words_in_the_environment_are_false(monkeypatch, word) -> None:
    monkeypatch.setenv("METRICS_ENABLED", word)

    assert load_settings(CommonSettings).metrics_enabled is False


def test_a_redis_password_is_not_in_the_settings_repr(monkeypatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2hunter2@127.0.0.1:6379/0")

    settings = load_settings(CommonSettings)

    assert "hunter2hunter2" not in repr(settings) and "hunter2hunter2" not in str(settings)


def test_a_daemon_that_cannot_reach_redis_exits_1_with_one_clear_line() -> None:
    code = "from shared.runtime import daemon; from shared.settings import CommonSettings; daemon.start('probe', CommonSettings())"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": "redis://:s3cretpass@127.0.0.1:1/0",
           "REDIS_STARTUP_WAIT_S": "2"}

    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 1 and time.monotonic() - started >= 2
    assert "cannot reach Redis" in done.stderr and "s3cretpass" not in done.stderr + done.stdout


def test_a_daemon_started_while_redis_is_down_waits_for_it() -> None:
    """Seen by review: a daemon exited at once without Redis; systemd's few quick restarts (StartLimitBurst=5,
    RestartSec=2) ran out within seconds and an outage of a minute left the unit failed for good."""
    from shared.redis_server import EmbeddedRedis, free_port

    port = free_port()
    code = ("from shared.runtime import daemon; from shared.settings import CommonSettings; "
            "daemon.start('probe', CommonSettings()); print('STARTED')")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": f"redis://127.0.0.1:{port}/0", "METRICS_ENABLED": "false",
           "REDIS_STARTUP_WAIT_S": "30"}
    probe = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        time.sleep(8.0)  # longer than one connection attempt with its own retries (about 5.5 s)
        assert probe.poll() is None  # still waiting
        with EmbeddedRedis(port=port):
            out, err = probe.communicate(timeout=30)
    finally:
        probe.kill()

    assert probe.returncode == 0, err
    assert out.rstrip().endswith("STARTED")


def test_a_daemon_that_crashes_in_native_code_leaves_its_python_stack(redis_url: str) -> None:
    code = ("import ctypes; from shared.runtime import daemon; from shared.settings import CommonSettings; "
            "daemon.start('probe', CommonSettings()); ctypes.string_at(0)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url, "METRICS_ENABLED": "false"}
    env.pop("PYTHONFAULTHANDLER", None)

    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == -11
    assert "Fatal Python error: Segmentation fault" in done.stderr and 'File "<string>", line 1' in done.stderr


@pytest.fixture
def own_logging():
    """configure() binds stdout as captured now; other tests' loggers (the in-process simulator's) must not keep it."""
    previous = structlog.get_config()
    yield
    structlog.configure(**previous)


def test_log_lines_are_json_with_secrets_redacted(capsys, own_logging) -> None:
    secret = "SUPERSECRETVALUE123456"
    qlog.register_secrets([secret])
    log = qlog.configure("test")

    log.info("order_submit", api_secret="anything", note=f"key was {secret}", url="redis://:pw123456@host:6379/0",
             query="symbol=BTCUSDT&signature=" + "ab" * 32)
    try:
        raise RuntimeError(f"boom {secret}")
    except RuntimeError:
        log.exception("failed")

    lines = capsys.readouterr().out.strip().splitlines()
    events = [json.loads(line) for line in lines]
    assert [event["event"] for event in events] == ["order_submit", "failed"]
    assert secret not in "".join(lines) and "pw123456" not in "".join(lines) and "ab" * 32 not in "".join(lines)
    assert events[0]["api_secret"] == qlog.REDACTED
    assert "RuntimeError" in events[1]["exception"]


def test_amounts_are_logged_as_digits_and_objects_as_their_redacted_repr(capsys, own_logging) -> None:
    secret = "OBJECTSECRET0123456789"
    qlog.register_secrets([secret])
    log = qlog.configure("test")

    log.info("sized", qty=Decimal("0.0020"), context={"notional": Decimal("176.5"), "reason": Reason.NO_MARK_PRICE},
             error=ConnectionError(f"reset by peer, key {secret}"), raw=f"k={secret}".encode())

    line = capsys.readouterr().out.strip()
    event = json.loads(line)
    assert event["qty"] == "0.0020" and event["context"] == {"notional": "176.5", "reason": "no_mark_price"}
    assert event["error"].startswith("ConnectionError(") and secret not in line
    assert event["raw"] == f"b'k={qlog.REDACTED}'"


@pytest.mark.parametrize("secret", ["LOGGEDKEY0123456789\r", "LOGGEDKEY0123456789\r\n", "\tLOGGEDKEY0123456789"],
                         ids=["cr", "crlf", "tab"])
def test_a_registered_secret_is_redacted_also_as_repr_quotes_it(secret) -> None:
    qlog.register_secrets([secret])

    text = qlog.redact_text(f"InvalidHeader: bad header value: {secret!r}; raw: {secret}")

    assert "0123456789" not in text and text.count(qlog.REDACTED) == 2



@pytest.mark.parametrize(("text", "shown"), [
    ("cannot reach Redis at unix://:pw123456@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
    ("redis://127.0.0.1:6379/0?password=pw123456&db=1", "redis://127.0.0.1:6379/0?password=***&db=1"),
    ("unix:///run/redis.sock?db=0&password='pw123456'", "unix:///run/redis.sock?db=0&password='***'"),
    ("REDISS://user:pw123456@host:6380/0", "REDISS://user:***@host:6380/0"),
    ("http://127.0.0.1:8090/fapi/v1/order", "http://127.0.0.1:8090/fapi/v1/order"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("(in redis://:p@ss-word1@host/0)", "redis://:***@host/0)"),  # redis-py splits at the last @, so must we
    ("redis://us@er:pw123456@host/0 then mail to a@b", "redis://us@er:***@host/0 then mail to a@b"),
    ("redis://user@host:6379/0?x=a@b", "redis://user@host:6379/0?x=a@b"),
], ids=["unix-userinfo", "query", "quoted-query", "upper-scheme", "no-password", "no-userinfo", "at-in-password",
        "at-in-user", "user-without-password"])
def test_a_password_in_any_form_of_redis_url_is_redacted(text, shown) -> None:
    """Seen by review: only redis[s]://user:pw@ was covered; the unix-socket URL the README recommends, and a
    ?password= parameter (both valid for redis-py), reached the CLI's error line as they were."""
    assert qlog.redact_text(text).endswith(shown)


@pytest.mark.parametrize(("name", "named"), [
    ("MAX_POSITION_SIZE_USD", "GOV_MAX_NOTIONAL_PER_TRADE_USDT"),
    ("MAX_OPEN_POSITIONS", "GOV_MAX_OPEN_POSITIONS"),
    ("REDIS_HOST", "REDIS_URL"),
])
def test_a_variable_of_the_earlier_deployment_stops_the_daemon_naming_what_to_set(monkeypatch, capsys, name, named) -> None:
    """Seen by review: the settings ignore unknown names, so the seed's MAX_POSITION_SIZE_USD=10 loaded with the
    200 USDT default per-trade cap, and REDIS_HOST=10.0.0.5 with Redis on localhost, silently."""
    monkeypatch.setenv(name, "10")

    with pytest.raises(SystemExit) as stopped:
        load_settings(CommonSettings)

    assert stopped.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"{name}: not read by this fleet") and named in line


@pytest.mark.parametrize(("settings_cls", "name", "meant"), [
    (GovernorSettings, "GOV_ENABLE_AUTO_DISARM", "GOV_AUTO_DISARM"),  # an upstream repository's name
    (GovernorSettings, "gov_max_open_position", "GOV_MAX_OPEN_POSITIONS"),  # read case-insensitively, as pydantic does
    (ExecutorSettings, "EXECUTOR_PERMIT_WAIT_SEC", "EXECUTOR_PERMIT_WAIT_MS"),
    (PositionStateSettings, "P33_STALE_THRESHOLD_SECS", "P33_STALE_THRESHOLD_SEC"),
    (HeatGateSettings, "P26_KILL_SCORE_CRIT", "P26_KILL_SCORE_CRITICAL"),
    (ReconcileSettings, "STREAM_BATCHES", "STREAM_BATCH"),
])
def test_a_variable_in_the_daemons_namespace_that_it_does_not_read_stops_it(monkeypatch, capsys, settings_cls, name,
                                                                          meant) -> None:
    """Found in a review: GOV_ENABLE_AUTO_DISARM=false (another repository's name) was ignored without a word, and
    auto-disarm stayed on; a typo of a cap would leave the default cap in force the same way."""
    monkeypatch.setenv("APPLY_MODE", "dry_run")
    monkeypatch.setenv(name, "3")

    with pytest.raises(SystemExit) as stopped:
        load_settings(settings_cls)

    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == (f"{name}: not a setting of this daemon; did you mean {meant}? "
                                               "Remove or rename it")


def test_another_daemons_variables_and_other_tools_ones_are_left_alone(monkeypatch) -> None:
    for name in ("GOV_MAX_OPEN_POSITIONS", "P33_ALLOWLIST", "REDIS_PASSWORD", "QUANTUM_ENV_FILE", "APPLY_ALLOWLIST"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("APPLY_MODE", "dry_run")

    assert load_settings(ExecutorSettings).executor_permit_wait_ms == 3000


@pytest.mark.parametrize("url", ["redis://:pw-typo-secret@127.0.0.1:notaport/0", "http://:pw-typo-secret@host/0"])
def test_a_malformed_redis_url_is_one_line_at_start_without_its_password(monkeypatch, capsys, url) -> None:
    """Seen by review: a port typo gave a 30-line traceback at connect and exit 1."""
    monkeypatch.setenv("REDIS_URL", url)

    with pytest.raises(SystemExit) as stopped:
        load_settings(CommonSettings)

    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and "REDIS_URL: not a Redis URL" in err
    assert "pw-typo-secret" not in err and len(err.splitlines()) == 1


def test_start_up_retries_last_until_their_patience_is_spent_not_a_backoff_step_before() -> None:
    """Seen on a fast host: with REDIS_STARTUP_WAIT_S=2 a daemon gave up after 1.9 s, since the next 2 s backoff step
    would have passed the deadline; the last attempt now comes at the deadline."""
    from shared.runtime.daemon import retry_at_start

    class Down(Exception):
        retryable = True

    attempts: list[float] = []

    def attempt() -> None:
        attempts.append(time.monotonic())
        raise Down("down")

    started = time.monotonic()
    with pytest.raises(SystemExit):
        retry_at_start("probe", attempt, Down, 0.3, structlog.get_logger(), "probe_retrying")

    assert len(attempts) == 2 and attempts[-1] - started >= 0.3


@pytest.mark.parametrize(("retryable", "misconfigured", "attempts", "code"), [
    (True, False, 2, 1),  # an outage past its patience: exit 1, systemd restarts the unit
    (False, False, 1, 1),  # something else, at once: restarted as before
    (False, True, 1, 2),  # refused credentials, hedge mode: exit 2, which the units do not restart
])
def test_start_up_exits_2_only_for_what_fails_the_same_until_an_operator_acts(retryable, misconfigured, attempts,
                                                                                code) -> None:
    """Found in review: a Redis answering OOM or READONLY for a moment at start (after a failover) exited 2 and,
    under RestartPreventExitStatus=2, stayed down for good; only a setting to change may exit 2."""
    from shared.runtime.daemon import retry_at_start

    class Refused(Exception):
        pass

    tried: list[int] = []

    def attempt() -> None:
        tried.append(1)
        error = Refused("refused")
        error.retryable, error.misconfigured = retryable, misconfigured
        raise error

    with pytest.raises(SystemExit) as stopped:
        retry_at_start("probe", attempt, Refused, 0.2, structlog.get_logger(), "probe_retrying", wait=lambda _s: None)

    assert stopped.value.code == code
    assert len(tried) >= attempts if retryable else len(tried) == attempts
