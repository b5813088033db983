"""The timer loop harvest runs in (shared.runtime.daemon.run_timer): a tick that fails is logged, counted and
followed by the next one; only SIGTERM (or a Shutdown) ends the loop, and a Redis outage is waited out."""

from __future__ import annotations

import signal
from decimal import InvalidOperation

import pytest
import redis
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from shared.logging import get_logger
from shared.runtime.consumer import Shutdown
from shared.runtime.daemon import DaemonContext, run_timer
from shared.settings import CommonSettings

NAME = "harvest-proposal"


@pytest.fixture(autouse=True)
def own_signal_handlers():
    """run_timer installs SIGTERM/SIGINT handlers: put pytest's back afterwards."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


class Ticks:
    """Raises the given errors one tick each, then asks the loop to stop as systemd would (SIGTERM)."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        signal.raise_signal(signal.SIGTERM)


def context(r) -> DaemonContext:
    return DaemonContext(name=NAME, settings=CommonSettings(), redis=r, log=get_logger(component="test"))


def timer_errors() -> float:
    return REGISTRY.get_sample_value("quantum_stream_handler_errors_total", {"stream": "timer", "group": NAME}) or 0.0


def test_a_failing_tick_is_logged_and_counted_and_the_loop_goes_on(r) -> None:
    """Seen by review: a WRONGTYPE ResponseError from one tick ended harvest's main(); the unit crash-looped."""
    ticks = Ticks(redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
                  InvalidOperation(), KeyError("positions"))
    before = timer_errors()

    with capture_logs() as logs:
        code = run_timer(context(r), 0.001, ticks)

    assert (code, ticks.calls) == (0, 4)
    assert timer_errors() == before + 3
    assert [line["event"] for line in logs if line["event"] == "tick_failed"] == ["tick_failed"] * 3
    assert logs[-1]["event"] == "daemon_stopped"


@pytest.mark.parametrize("error", [redis.ConnectionError("gone"), redis.TimeoutError("slow")])
def test_a_redis_outage_skips_the_tick_uncounted_as_before(r, error) -> None:
    ticks = Ticks(error)
    before = timer_errors()

    with capture_logs() as logs:
        code = run_timer(context(r), 0.001, ticks)

    assert (code, ticks.calls) == (0, 2)
    assert timer_errors() == before
    assert [line["event"] for line in logs if line["event"] in ("redis_unavailable", "tick_failed")] == [
        "redis_unavailable"]


def test_a_shutdown_still_ends_the_loop(r) -> None:
    with pytest.raises(Shutdown):
        run_timer(context(r), 0.001, Ticks(Shutdown("SIGTERM")))


@pytest.fixture
def liveness_calls(monkeypatch) -> list[str]:
    """What the loop tells its liveness, in order; waits sliced at 50 ms, beats not rate-limited."""
    from shared.runtime import daemon, liveness

    calls: list[str] = []
    monkeypatch.setattr(daemon, "QUIET_MAX_S", 0.05)
    monkeypatch.setattr(liveness, "BEAT_EVERY_S", 0.0)
    for name in ("beat", "waiting"):
        real = getattr(liveness.Liveness, name)
        monkeypatch.setattr(liveness.Liveness, name,
                            lambda self, *a, _real=real, _name=name, **k: (calls.append(_name), _real(self, *a, **k)))
    return calls


def test_a_long_interval_is_waited_in_beats_so_systemd_and_status_see_the_daemon_alive(r, liveness_calls) -> None:
    """Found in a review: HARVEST_POLL_SEC may be 60, but the loop beat only after each tick: past 30 s systemd's
    watchdog killed the daemon (and the heartbeat's TTL ran out) while it waited as told."""
    ticks = Ticks()
    run_timer(context(r), 0.4, lambda: (liveness_calls.append("tick"), ticks())[1])

    before_tick = liveness_calls[1:liveness_calls.index("tick")]  # [0]: ready's own beat
    assert before_tick.count("beat") >= 4 and "waiting" not in before_tick


def test_after_a_failing_tick_the_waits_feed_the_watchdog_but_leave_the_heartbeat_stale(r, liveness_calls) -> None:
    ticks = Ticks(KeyError("positions"))
    run_timer(context(r), 0.3, lambda: (liveness_calls.append("tick"), ticks())[1])

    first = liveness_calls.index("tick")
    between = liveness_calls[first + 1:liveness_calls.index("tick", first + 1)]
    assert between and set(between) == {"waiting"}


def test_a_heartbeat_redis_refuses_between_ticks_does_not_end_the_loop(r, monkeypatch) -> None:
    """Found in a review: only connection errors were caught while waiting; a READONLY or OOM reply to the
    heartbeat's HSET ended the daemon."""
    from shared.runtime import daemon, liveness

    monkeypatch.setattr(daemon, "QUIET_MAX_S", 0.05)
    monkeypatch.setattr(liveness, "BEAT_EVERY_S", 0.0)
    real_beat = liveness.Liveness.beat
    refusals = iter([redis.ResponseError("READONLY You can't write against a read only replica.")] * 3)

    def beat(self, force: bool = False) -> None:
        if not force and (refusal := next(refusals, None)) is not None:
            raise refusal
        real_beat(self, force)

    monkeypatch.setattr(liveness.Liveness, "beat", beat)
    ticks = Ticks()

    with capture_logs() as logs:
        assert run_timer(context(r), 0.3, ticks) == 0

    assert ticks.calls == 1
    assert [line["event"] for line in logs].count("heartbeat_not_written") == 3
