"""systemd units: rendered from the registry, verified, and hardened to an exposure of 2.0 or lower."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared import fleet
from shared.deploy import render_all

UNIT_DIR = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
UNITS = sorted(render_all())
MAX_EXPOSURE = 2.0


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed: unit verification and scoring not run")
    return tool


@pytest.mark.parametrize("name", UNITS)
def test_the_committed_unit_is_what_the_registry_renders(name: str) -> None:
    assert (UNIT_DIR / name).read_text() == render_all()[name], "run: python -m shared.deploy deploy/systemd"


def test_every_installed_daemon_has_a_unit_with_its_module() -> None:
    for spec in fleet.installed():
        text = (UNIT_DIR / spec.unit).read_text()
        assert f"-m {spec.module}\n" in text and "Type=notify" in text and "WatchdogSec=" in text


def test_the_executor_unit_yields_the_cpu_to_the_deciders() -> None:
    units = render_all()

    assert "Nice=5\n" in units[fleet.by_name("intent-executor").unit]
    assert [spec.name for spec in fleet.installed() if "Nice=" in units[spec.unit]] == ["intent-executor"]


@pytest.mark.parametrize("name", [u for u in UNITS if u.endswith(".service")])
def test_each_unit_verifies(name: str, tmp_path: Path) -> None:
    tool = systemd_analyze()
    unit = tmp_path / name
    # The installed interpreter does not exist here; verify everything else against this one.
    unit.write_text((UNIT_DIR / name).read_text().replace("/opt/quantum/venv/bin/python", sys.executable))
    (tmp_path / "quantum.target").write_text((UNIT_DIR / "quantum.target").read_text())

    checked = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path)

    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr


@pytest.mark.parametrize("name", [u for u in UNITS if u.endswith(".service")])
def test_each_unit_is_hardened(name: str) -> None:
    tool = systemd_analyze()

    checked = subprocess.run([tool, "security", "--offline=yes", str(UNIT_DIR / name)], capture_output=True, text=True)

    score = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", checked.stdout).group(1))
    assert score <= MAX_EXPOSURE, checked.stdout[-2000:]


@pytest.mark.parametrize("name", [u for u in UNITS if u.endswith(".service")])
def test_a_daemon_is_restarted_after_exit_1_but_not_after_exit_2(name: str) -> None:
    """Exit 2 (shared.settings.EXIT_CONFIG) is a setting, a credential or a hedge-mode account: before, systemd
    restarted it five times, each start spending its self-test's request weight on the same refusal."""
    text = render_all()[name]

    assert re.search(r"^Restart=on-failure$", text, re.MULTILINE)
    assert re.search(r"^RestartPreventExitStatus=2$", text, re.MULTILINE)


def test_the_target_pulls_in_every_fleet_daemon_but_not_the_simulator() -> None:
    """Seen by review: with the simulator in the target's Wants=, the README's testnet step (disable the simulator,
    restart the target) started the simulator again."""
    wants = next(line for line in render_all()["quantum.target"].splitlines() if line.startswith("Wants="))
    named = set(wants.removeprefix("Wants=").split())

    assert fleet.SIMULATOR.unit not in named
    assert named == {spec.unit for spec in fleet.installed() if spec is not fleet.SIMULATOR}
    assert "WantedBy=quantum.target" in render_all()[fleet.SIMULATOR.unit]


@pytest.mark.parametrize("name", UNITS)
def test_no_loop_is_quiet_longer_than_its_watchdog_heartbeat_or_status_allow(name: str) -> None:
    """Found in a review: STREAM_BLOCK_MS up to 60 s, or a P3.3/harvest poll of 60 s, made an idle loop beat less
    often than WatchdogSec (30 s): systemd killed a daemon that was waiting as told."""
    from shared.cli.status import STALE_AFTER_MS
    from shared.runtime.liveness import HEARTBEAT_TTL_S, QUIET_MAX_S
    from shared.settings import CommonSettings

    watchdog = re.search(r"^WatchdogSec=(\d+)$", render_all()[name], re.MULTILINE)
    assert watchdog is None or 2 * QUIET_MAX_S <= int(watchdog.group(1))
    assert 2 * QUIET_MAX_S <= min(HEARTBEAT_TTL_S, STALE_AFTER_MS / 1000)
    assert CommonSettings.model_fields["stream_block_ms"].metadata[-1].le <= QUIET_MAX_S * 1000


@pytest.mark.parametrize("name", UNITS)
def test_one_redis_command_gives_up_before_the_watchdog_would_kill_a_daemon_waiting_on_it(name: str) -> None:
    """Found in a review of the runtime: against a stalled Redis one command retried 6 times at a 12 s socket
    timeout, ~88 s with the watchdog unfed (WatchdogSec=30): systemd restarted daemons during the very outages the
    loops wait through, and a SIGTERM then outlasted TimeoutStopSec."""
    from shared.redis_conn import worst_call_s
    from shared.runtime import daemon
    from shared.runtime.liveness import QUIET_MAX_S

    watchdog = re.search(r"^WatchdogSec=(\d+)$", render_all()[name], re.MULTILINE)
    worst = worst_call_s(QUIET_MAX_S + daemon.SOCKET_MARGIN_S, daemon.DAEMON_RETRIES)
    assert worst <= daemon.DAEMON_CALL_BUDGET_S
    assert watchdog is None or daemon.DAEMON_CALL_BUDGET_S < int(watchdog.group(1))


@pytest.mark.parametrize("name", [spec.unit for spec in fleet.installed() if spec.exchange])
def test_one_exchange_request_ends_before_the_watchdog_would_kill_a_daemon_waiting_on_it(name: str) -> None:
    """Found in a review: EXCHANGE_REQUEST_TIMEOUT_S went up to 120 s and a tick's requests did not feed the
    watchdog, so a slow exchange got the exchange daemons killed and restarted during the very incident. Each
    request now feeds it before and after (ExchangeClient's `alive`); one request (connect + read) fits inside."""
    from shared.exchange.target import MAX_REQUEST_TIMEOUT_S

    watchdog = re.search(r"^WatchdogSec=(\d+)$", render_all()[name], re.MULTILINE)
    assert watchdog is not None and 2 * MAX_REQUEST_TIMEOUT_S < int(watchdog.group(1))


@pytest.mark.parametrize("name", [spec.unit for spec in fleet.installed() if spec.exchange])
def test_the_longest_start_up_waits_fit_in_the_start_timeout(name: str) -> None:
    """Found in a review: REDIS_STARTUP_WAIT_S went up to 600 s and EXCHANGE_STARTUP_WAIT_S had no bound while
    TimeoutStartSec was 180 s: systemd cut such starts short, so the settings did not do what they said."""
    from shared.runtime.exchange import MIXED_FLEET_PATIENCE_S
    from shared.settings import MAX_STARTUP_WAIT_S, CommonSettings
    from shared.exchange.target import ExchangeSettings

    start = re.search(r"^TimeoutStartSec=(\d+)$", render_all()[name], re.MULTILINE)
    assert CommonSettings.model_fields["redis_startup_wait_s"].metadata[-1].le == MAX_STARTUP_WAIT_S
    assert ExchangeSettings.model_fields["startup_wait_s"].metadata[-1].le == MAX_STARTUP_WAIT_S
    # The attempt made at each deadline (a Redis command gives up within DAEMON_CALL_BUDGET_S; the exchange's
    # self-test is a few requests of up to 2 x 10 s), the trading rules, the first snapshot.
    margin_s = 80
    assert start is not None and 2 * MAX_STARTUP_WAIT_S + MIXED_FLEET_PATIENCE_S + margin_s <= int(start.group(1))


@pytest.mark.parametrize("name", [spec.unit for spec in fleet.installed() if spec.exchange])
def test_exchange_daemons_stop_before_the_simulator(name: str) -> None:
    """From a review: without ordering, stopping quantum.target could stop the simulator first and cut off the order
    the executor had in hand. Ordering only (After=): without the simulator installed it orders nothing."""
    unit = render_all()[name]

    assert re.search(rf"^After=.*\b{re.escape(fleet.SIMULATOR.unit)}\b", unit, re.MULTILINE)
    assert fleet.SIMULATOR.unit not in re.search(r"^Wants=(.*)$", unit, re.MULTILINE).group(1)


@pytest.mark.parametrize("name", [spec.unit for spec in fleet.installed() if spec.exchange])
def test_a_missing_credential_file_gives_the_placeholder_not_a_failed_unit(name: str, tmp_path: Path) -> None:
    """From a review: an operator who deleted the credential file (the simulator needs none, or the secret sits in an
    env file) found every exchange unit failing with 243/CREDENTIALS. SetCredential= is LoadCredential='s default
    for the same name (systemd 247+): the install's placeholder, which the daemon reads as absent."""
    from shared.exchange.target import CREDENTIAL_PLACEHOLDER, ExchangeSettings

    unit = render_all()[name]
    [loaded] = re.findall(r"^LoadCredential=([^:\n]+):", unit, re.M)
    [default] = re.findall(r"^SetCredential=(.*)$", unit, re.M)
    assert default == f"{loaded}:{CREDENTIAL_PLACEHOLDER}"
    (tmp_path / loaded).write_text(CREDENTIAL_PLACEHOLDER)  # what systemd puts there: the text, no line end
    secret = "Fallback0Secret0In0An0Env0File"
    settings = ExchangeSettings(EXCHANGE_TARGET="testnet", BINANCE_API_KEY="Key0Of0The0Testnet",
                                BINANCE_API_SECRET=secret, CREDENTIALS_DIRECTORY=str(tmp_path))
    assert settings.api_secret.get_secret_value() == secret  # the placeholder read as absent: the fallback applies


@pytest.mark.parametrize("name", [u for u in UNITS if u.endswith(".service")])
def test_real_credentials_are_unset_for_every_daemon_that_never_talks_to_the_exchange(name: str) -> None:
    """From a review: BINANCE_API_SECRET in common.env (the documented fallback) reached every process.
    UnsetEnvironment= applies after EnvironmentFile=, so whichever file holds it, only exchange daemons see it."""
    from shared.exchange.target import REAL_CREDENTIAL_VARIABLES

    unit = render_all()[name]
    unset = " ".join(re.findall(r"^UnsetEnvironment=(.*)$", unit, re.M)).split()
    talks_to_exchange = "LoadCredential=" in unit
    assert talks_to_exchange == any(spec.exchange and spec.unit == name for spec in fleet.installed())
    assert set(unset) == (set() if talks_to_exchange else set(REAL_CREDENTIAL_VARIABLES))
