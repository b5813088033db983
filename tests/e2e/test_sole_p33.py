"""Only one position-state-brain (and one harvest-proposal) runs against a Redis: P3.3 keeps the opens it permitted
in memory, and a second instance would permit an open on a symbol the first just permitted one on (found in a review
of P3.3)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared import keys
from shared.runtime.liveness import SoleInstance


@pytest.mark.parametrize(("daemon", "key"), [
    ("position-state-brain", keys.P33_INSTANCE),
    # Found in review: two harvest instances seeing a new position in the same cycle each began its record with its
    # own start time, which every proposal id carries: two partial closes for one take-profit rung.
    ("harvest-proposal", keys.HARVEST_INSTANCE),
])
def test_a_second_sole_daemon_refuses_to_start_naming_the_first(make_fleet, daemon, key) -> None:
    first = make_fleet().start(daemon)
    holder = first.client.get(key)

    second = subprocess.run([sys.executable, "-m", f"microservices.{daemon.replace('-', '_')}"],
                            env={**first.env, "QUANTUM_INSTANCE": "1"}, capture_output=True, text=True, timeout=90)

    assert holder is not None and holder.startswith(f"{daemon}@") and holder.endswith("#0")
    assert second.returncode != 0
    assert f"another {daemon} ({holder}) runs against this Redis" in second.stderr


def test_the_same_instance_takes_its_key_back_and_a_stop_lets_it_go(r) -> None:
    first = SoleInstance(r, keys.P33_INSTANCE, "p33@h#0")
    other = SoleInstance(r, keys.P33_INSTANCE, "p33@h#1")

    assert first.claim() is None and other.claim() == "p33@h#0"
    assert SoleInstance(r, keys.P33_INSTANCE, "p33@h#0").claim() is None  # restarted after a crash: same name
    assert 0 < r.ttl(keys.P33_INSTANCE) <= 30  # a crashed one's key goes by itself
    other.let_go()  # not its key: nothing happens
    assert r.get(keys.P33_INSTANCE) == "p33@h#0"
    first.let_go()
    assert other.claim() is None and r.get(keys.P33_INSTANCE) == "p33@h#1"


def test_a_key_of_another_type_is_no_holder(r) -> None:
    r.hset(keys.P33_INSTANCE, "who", "x")

    assert SoleInstance(r, keys.P33_INSTANCE, "p33@h#0").claim() is None
    assert r.get(keys.P33_INSTANCE) == "p33@h#0"


def test_a_second_process_under_a_running_daemons_consumer_name_exits_naming_it(make_fleet) -> None:
    """Any daemon: a copy started by hand beside the unit, under the same QUANTUM_INSTANCE, would share its pending
    entries and claims (shared.runtime.liveness.ConsumerOwner)."""
    first = make_fleet().start("governor")
    [owner_key] = list(first.client.scan_iter(keys.consumer_owner("governor@*")))
    host, pid, _token = first.client.get(owner_key).split(" ")

    second = subprocess.run([sys.executable, "-m", "microservices.governor"], env=first.env, capture_output=True,
                            text=True, timeout=90)

    assert second.returncode == 1
    assert f"is in use by pid {pid} on {host}" in second.stderr and "QUANTUM_INSTANCE" in second.stderr
    assert first.client.get(owner_key).split(" ")[1] == pid  # the first keeps its name


def test_an_exchange_daemons_heartbeat_names_the_exchange_it_trades_on(make_fleet) -> None:
    """What a daemon started on another target compares with (shared.runtime.exchange.refuse_a_mixed_fleet)."""
    fleet = make_fleet().start("position-state-brain", "governor")
    beats = {key.rsplit(":", 1)[-1].split("@")[0]: fleet.client.hgetall(key)
             for key in fleet.client.scan_iter(keys.heartbeat_pattern())}

    assert beats["position-state-brain"]["exchange"] == f"simulator {fleet.env['EXCHANGE_SIM_URL'].rstrip('/')}"
    assert "exchange" not in beats["governor"]


def test_a_second_p33_under_the_same_name_changes_nothing_before_it_exits(make_fleet) -> None:
    """Found in a review: the copy passed P3.3's instance claim (same name), then died at its first beat and, on the
    way out, deleted the running P3.3's instance key. The name is now held from daemon.start, before any write."""
    first = make_fleet().start("position-state-brain")
    holder = first.client.get(keys.P33_INSTANCE)

    second = subprocess.run([sys.executable, "-m", "microservices.position_state_brain"], env=first.env,
                            capture_output=True, text=True, timeout=90)

    assert second.returncode == 1 and "is in use by pid" in second.stderr
    assert first.client.get(keys.P33_INSTANCE) == holder


def test_an_executors_heartbeat_says_what_it_sends_to(make_fleet) -> None:
    """What the apply layer judges an APPLY_MODE=dry_run of its own against (microservices.apply_layer.apply
    .honour_own_dry_run): only a running executor's mode, not quantum:mode, which outlives it."""
    fleet = make_fleet().start("intent-executor")
    [beat] = [fleet.client.hgetall(key) for key in fleet.client.scan_iter(keys.heartbeat_pattern())
              if fleet.client.hget(key, "daemon") == "intent-executor"]

    assert beat["mode"] == fleet.client.get(keys.MODE) and beat["mode"] in ("SIMULATOR", "DRY_RUN")
