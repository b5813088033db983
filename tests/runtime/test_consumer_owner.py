"""One process per consumer name (shared.runtime.liveness.ConsumerOwner): found in a review of the executor, where two
processes under one name shared the plan claims (held by name), so one sent an order while the other ended the plan
as permit_timeout and the fill went unrecorded."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis

from shared import keys
from shared.runtime.liveness import ConsumerNameInUse, ConsumerOwner, Liveness

NAME = "intent-executor@host#0"


def a_dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_live_process_under_the_name_is_refused_naming_the_first(r) -> None:
    first = Liveness(r, "intent-executor", NAME)
    first.ready()
    holder = r.get(keys.consumer_owner(NAME))

    second = Liveness(r, "intent-executor", NAME)
    second.owner = ConsumerOwner(r, NAME, pid=os.getppid())  # another live process on this host
    with pytest.raises(ConsumerNameInUse) as refused:
        second.ready()

    assert holder.startswith(f"{second.owner.host} {os.getpid()} ")
    assert f"in use by pid {os.getpid()} on {second.owner.host}" in str(refused.value)
    assert refused.value.code is not None and not isinstance(refused.value, Exception)  # no handler swallows it
    assert r.get(keys.consumer_owner(NAME)) == holder


def test_a_crashed_predecessor_on_this_host_is_taken_over_at_once(r) -> None:
    r.set(keys.consumer_owner(NAME), f"{ConsumerOwner(r, NAME).host} {a_dead_pid()} 0badc0de", ex=30)

    restarted = ConsumerOwner(r, NAME, pid=os.getppid())

    assert restarted.take() is None and r.get(keys.consumer_owner(NAME)) == restarted.token


def test_a_holder_with_this_process_pid_is_a_predecessor_in_an_earlier_pid_namespace(r) -> None:
    owner = ConsumerOwner(r, NAME)
    r.set(keys.consumer_owner(NAME), f"{owner.host} {owner.pid} 0badc0de", ex=30)

    assert owner.take() is None


def test_a_holder_on_another_host_waits_for_its_key_to_expire(r) -> None:
    r.set(keys.consumer_owner(NAME), "elsewhere 1 0badc0de", ex=30)

    assert ConsumerOwner(r, NAME).take() == "elsewhere 1 0badc0de"
    r.delete(keys.consumer_owner(NAME))  # expired
    assert ConsumerOwner(r, NAME).take() is None


def test_a_process_whose_name_was_taken_while_it_stalled_exits_at_its_next_beat(r) -> None:
    stalled = Liveness(r, "governor", NAME)
    stalled.ready()
    r.set(keys.consumer_owner(NAME), "elsewhere 1 0badc0de", ex=30)  # its key expired and another took the name
    heartbeat = {"daemon": "governor", "pid": "1", "ts_ms": "1"}
    r.hset(keys.heartbeat(NAME), mapping=heartbeat)

    with pytest.raises(ConsumerNameInUse):
        stalled.beat(force=True)

    assert r.hgetall(keys.heartbeat(NAME)) == heartbeat  # the other's heartbeat is left as it wrote it


def test_a_clean_stop_lets_the_name_go(r) -> None:
    first = Liveness(r, "governor", NAME)
    first.ready()
    first.stopping()

    second = Liveness(r, "governor", NAME)
    second.owner = ConsumerOwner(r, NAME, pid=os.getppid())
    second.ready()

    assert r.get(keys.consumer_owner(NAME)) == second.owner.token


def test_a_redis_refusing_writes_at_start_is_waited_out_not_a_crash(r, monkeypatch) -> None:
    """Found in a review: taking the name at start is a write; against a replica (READONLY after a failover) it
    crashed every daemon into its start limit, where before they started and their loops waited for Redis."""
    owner = ConsumerOwner(r, NAME)

    def read_only(*_args):
        raise redis.exceptions.ReadOnlyError("You can't write against a read only replica.")
    monkeypatch.setattr(owner, "take", read_only)
    monkeypatch.setattr(owner, "renew", read_only)

    owner.hold(first=True)  # carries on: the next beat holds it
    owner.hold()


def test_a_stop_after_the_name_was_lost_leaves_the_new_holders_heartbeat(r) -> None:
    lost = Liveness(r, "governor", NAME)
    lost.ready()
    r.set(keys.consumer_owner(NAME), "elsewhere 1 0badc0de", ex=30)
    r.hset(keys.heartbeat(NAME), mapping={"daemon": "governor", "pid": "1", "ts_ms": "1"})

    lost.stopping()

    assert r.hget(keys.heartbeat(NAME), "pid") == "1" and r.get(keys.consumer_owner(NAME)) == "elsewhere 1 0badc0de"


def test_the_watchdog_is_fed_at_most_once_a_second_however_often_it_is_asked(tmp_path, monkeypatch) -> None:
    """Each exchange request asks twice (shared.runtime.exchange); under systemd each feed was a socket and a
    datagram on the order path. Found in a read-back of the change."""
    import socket

    from shared.runtime import liveness

    path = str(tmp_path / "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setattr(liveness, "_watchdog_fed_at", float("-inf"))
    now = [100.0]

    fed = [liveness.watchdog_alive(lambda: now[0]) for _ in range(50)]
    now[0] += liveness.BEAT_EVERY_S
    fed.append(liveness.watchdog_alive(lambda: now[0]))

    datagrams = []
    while True:
        try:
            datagrams.append(receiver.recv(64))
        except BlockingIOError:
            break
    receiver.close()
    assert fed.count(True) == 2 and datagrams == [b"WATCHDOG=1", b"WATCHDOG=1"]
