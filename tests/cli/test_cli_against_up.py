"""The operator's commands against `quantum up`, as run from a second terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared import fleet, keys
from shared.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


def quantum(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def wait_until_all_up(env: dict[str, str], up: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert up.poll() is None, up.stdout.read() if up.stdout else "quantum up exited"
        status = quantum("status", env=env).stdout
        if "DOWN" not in status and "STALE" not in status and "DAEMON" in status:
            return
        assert time.monotonic() < deadline, status
        time.sleep(0.5)


def start_up(redis_url: str, log_dir: Path) -> tuple[dict[str, str], subprocess.Popen]:
    """`quantum up --no-demo` on the test's Redis, as an operator's first terminal runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url, "EXCHANGE_SIM_PORT": str(free_port()),
           "METRICS_ENABLED": "false"}
    env.pop("EXCHANGE_SIM_URL", None)
    up = subprocess.Popen([sys.executable, "-m", "shared.cli.main", "up", "--no-demo", "--log-dir", str(log_dir)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return env, up


def test_plan_open_prints_a_fill_and_status_shows_it(redis_url, r, tmp_path) -> None:
    env, up = start_up(redis_url, tmp_path)
    try:
        wait_until_all_up(env, up)

        opened = quantum("plan", "open", "BTCUSDT", "BUY", "0.002", "--leverage", "3", env=env)
        status = quantum("status", env=env)
        deadline = time.monotonic() + 10
        while "BTCUSDT       0.002" not in status.stdout and time.monotonic() < deadline:
            time.sleep(0.3)  # the exchange snapshot refreshes every second
            status = quantum("status", env=env)
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=60)

    assert opened.returncode == 0, opened.stdout + opened.stderr
    assert "FILLED   BTCUSDT BUY 0.002" in opened.stdout
    assert "BTCUSDT       0.002" in status.stdout and "FILLED   BTCUSDT BUY 0.002" in status.stdout
    assert [fields.get("leverage") for _, fields in r.xrange(keys.Stream.APPLY_PLAN)] == ["3"]
    assert code == 0


def test_the_cli_says_clearly_when_redis_is_unreachable() -> None:
    env = {**os.environ, "REDIS_URL": "redis://:pw-not-shown@127.0.0.1:1/0"}

    done = quantum("status", env=env)

    assert done.returncode == 1
    assert "cannot reach Redis" in done.stderr and "pw-not-shown" not in done.stderr


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _module(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return argv[argv.index(b"-m") + 1].decode()


def test_a_second_signal_while_stopping_still_stops_every_daemon_cleanly(redis_url, r, tmp_path) -> None:
    env, up = start_up(redis_url, tmp_path)
    wait_until_all_up(env, up)
    daemons = _children(up.pid)
    assert daemons
    niceness = {_module(pid): os.getpriority(os.PRIO_PROCESS, pid) for pid in daemons}

    up.send_signal(signal.SIGTERM)
    lines = []
    while not any("stopping the fleet" in line for line in lines):
        lines.append(up.stdout.readline())
        assert lines[-1], "".join(lines)
    up.send_signal(signal.SIGTERM)  # impatient: again, while the daemons are being stopped
    output = "".join(lines) + up.stdout.read()
    code = up.wait(timeout=60)

    assert code == 0 and "Traceback" not in output, output
    assert [pid for pid in daemons if Path(f"/proc/{pid}").exists()] == []
    # Each daemon runs at the registry's niceness, as its systemd unit's Nice= gives it.
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert niceness == {spec.module: max(spec.nice, ours) for spec in (fleet.SIMULATOR, *fleet.FLEET) if not spec.demo}
    assert niceness["microservices.intent_executor"] == max(5, ours)


def test_up_refuses_a_redis_that_serves_a_running_fleet(redis_url, r, tmp_path) -> None:
    """Seen by review: with REDIS_URL exported on a fleet's host, `quantum up` started a second fleet (the simulator,
    demo signals) on the production Redis under the same consumer names, taking its plans."""
    r.hset("quantum:daemon:heartbeat:intent-executor@host#0", mapping={"daemon": "intent-executor", "pid": "1"})
    r.expire("quantum:daemon:heartbeat:intent-executor@host#0", 30)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url}

    done = subprocess.run([sys.executable, "-m", "shared.cli.main", "up", "--no-demo", "--log-dir", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode != 0
    assert "already serves a running fleet (intent-executor@host#0)" in done.stdout + done.stderr
    assert r.xlen("quantum:stream:apply.plan") == 0 and not list(tmp_path.glob("*.log"))


def test_a_plan_id_that_already_has_its_result_is_refused_before_sending(redis_url, r) -> None:
    # Found in a review: the executor skipped it with a log line, and `quantum plan` waited its timeout and asked
    # whether the fleet was running. Now it is refused at once, and nothing is sent.
    r.set(keys.plan_result_marker("used-1"), "1")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url}

    sent = quantum("plan", "open", "BTCUSDT", "BUY", "0.002", "--plan-id", "used-1", "--timeout", "2", env=env)

    assert sent.returncode != 0 and "used-1 already has its result" in sent.stderr + sent.stdout
    assert r.xlen(keys.Stream.APPLY_PLAN) == 0


def test_a_leverage_the_exchange_cannot_take_or_on_a_close_is_refused_before_sending(redis_url, r) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url}

    fraction = quantum("plan", "open", "BTCUSDT", "BUY", "0.002", "--leverage", "2.5", "--timeout", "2", env=env)
    close = quantum("plan", "close", "BTCUSDT", "SELL", "0.002", "--leverage", "2", "--timeout", "2", env=env)

    assert fraction.returncode != 0 and "invalid plan" in fraction.stderr and "whole number" in fraction.stderr
    assert close.returncode != 0 and "--leverage is for opens" in close.stderr
    assert r.xlen(keys.Stream.APPLY_PLAN) == 0
