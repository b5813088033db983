"""The daemons' Redis client: one dedicated connection for direct commands, surviving restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from redis._parsers.encoders import Encoder
from redis.connection import HiredisRespSerializer, PythonRespSerializer

from shared.lua import LuaScript
from shared.redis_conn import ENCODING, ENCODING_ERRORS, CommandPacker, connect
from shared.redis_server import EmbeddedRedis

COUNT = LuaScript("return redis.call('INCR', KEYS[1])")


def test_a_single_connection_client_survives_a_redis_restart(tmp_path) -> None:
    """Daemons use one dedicated connection for direct commands (shared.runtime.daemon); it must come
    back after Redis restarts, like the pooled client, and scripts must be sent again."""
    with EmbeddedRedis(data_dir=str(tmp_path)) as server:
        client = connect(server.url, single_connection=True)
        assert COUNT(client, ["n"]) == 1
        server.restart()
        assert COUNT(client, ["n"]) in (1, 2)  # persisted or not; the call itself goes through
        assert client.ping()


def test_the_embedded_server_answers_on_its_unix_socket_too(tmp_path) -> None:
    """The bench (and any fleet on Redis' host) connects over the unix socket: the daemons' client works there."""
    short = tmp_path / "r"
    short.mkdir()
    with EmbeddedRedis(data_dir=str(short)) as server:
        client = connect(server.unix_url, single_connection=True)
        assert COUNT(client, ["n"]) == 1 and client.pipeline().incr("n").get("n").execute() == [2, "2"]


def test_a_data_dir_too_long_for_a_unix_socket_serves_tcp_only(tmp_path) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    with EmbeddedRedis(data_dir=str(deep)) as server:
        assert server.unix_url is None and connect(server.url).ping()


@pytest.mark.parametrize("args", [
    ("SET", "k", "v"), ("SET", "k", "é ü 漢"), ("HSET", "h", "f", 1, "g", -7, "h", 10**30),
    ("SET", "k", 1e-05), ("SET", "k", 0.1 + 0.2), ("SET", "k", float("inf")), ("SET", "k", 2.0),
    ("SET", b"k", b"\x00\xff"), ("SET", "k", memoryview(b"mv")), ("SET", "k", bytearray(b"ba")),
    ("SET", "k", "\ud800"),  # not UTF-8: replaced, as the client's encoding_errors say
    ("CONFIG SET", "maxmemory", 0), (b"CONFIG SET", "maxmemory", 0), ("XINFO  STREAM", "s"), ("", "x"),
])
def test_commands_are_packed_byte_for_byte_as_redis_py_packs_them(args) -> None:
    encoder = Encoder(ENCODING, ENCODING_ERRORS, decode_responses=True)
    redis_py = HiredisRespSerializer(PythonRespSerializer(6000, encoder.encode).pack, encoder.encode)

    assert b"".join(CommandPacker().pack(*args)) == b"".join(redis_py.pack(*args))


@pytest.mark.parametrize("value", [True, None, Decimal("1.5"), object()])
def test_a_value_redis_py_refuses_is_refused_with_its_error(value) -> None:
    with pytest.raises(redis.DataError):
        CommandPacker().pack("SET", "k", value)


def test_the_daemons_client_packs_with_hiredis_directly_pipelines_too(tmp_path) -> None:
    with EmbeddedRedis(data_dir=str(tmp_path)) as server:
        client = connect(server.url, single_connection=True)
        assert isinstance(client.connection._command_packer, CommandPacker)
        assert client.set("k", "é") and client.get("k") == "é"
        assert client.pipeline().hset("h", mapping={"a": 1, "b": 2.5}).hgetall("h").execute() == [2, {"a": "1", "b": "2.5"}]
        with pytest.raises(redis.DataError):
            client.set("k", True)


# A child packing a command with numbers in a loop, as a daemon does before each wait; SIGUSR1's handler raises
# (as a daemon's SIGTERM handler does while it waits), SIGTERM's ends the loop.
PACKING_UNDER_SIGNALS = """
import signal
from shared.redis_conn import CommandPacker

class Interrupted(Exception):
    pass

def interrupt(_signum, _frame):
    raise Interrupted()

stop = []
signal.signal(signal.SIGUSR1, interrupt)
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
packer = CommandPacker()
command = ("XREADGROUP", "GROUP", "g", "c", "COUNT", 64, "BLOCK", 2000, "STREAMS", "s", ">", 0.5)
unannounced = [1]
while not stop:
    try:  # "ready" too: the first signal may come while print still flushes it
        if unannounced:
            unannounced.clear()
            print("ready", flush=True)
        while not stop:
            packer.pack(*command)
    except Interrupted:
        pass
"""


def test_a_signal_handler_that_raises_while_a_command_is_packed_raises_there_and_crashes_nothing() -> None:
    # hiredis formats numbers with PyObject_Repr, which runs pending signal handlers, and does not check it for
    # failure: a raising handler crashed the process with SIGSEGV (seen at SIGTERM in CI and in a fleet test;
    # 41 of 300 processes here), so the packer turns numbers into text before hiredis sees them.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen([sys.executable, "-c", PACKING_UNDER_SIGNALS], env=env, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        for _ in range(300):
            child.send_signal(signal.SIGUSR1)
            time.sleep(0.002)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=20) == 0
    finally:
        if child.poll() is None:
            child.kill()


@pytest.mark.parametrize(("exc", "expected"), [
    (redis.ConnectionError("gone"), True),
    (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), True),
    (redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), True),
    (redis.ResponseError("Errors trying to SHUTDOWN.", status_code="MISCONF"), True),
    (redis.ResponseError("Error running script (call to f_1): @user_script:6: @user_script: 6: -READONLY You can't "
                         "write against a read only replica."), True),  # Redis 6.2 wraps it
    (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False),
    (redis.ResponseError("unknown command 'FOO'", status_code="ERR"), False),
    (ValueError("not Redis"), False),
])
def test_redis_refusing_to_serve_is_unavailable_like_a_lost_connection(exc, expected) -> None:
    """Found in a review: only connection errors were waited out; READONLY after a failover, or OOM, ended every
    consumer daemon (a crash loop until systemd gave up), or burned the deliveries of the plan in hand."""
    from shared.redis_conn import unavailable

    assert unavailable(exc) is expected


def test_a_redis_out_of_memory_at_connect_is_waited_for_and_refused_credentials_are_a_setting(tmp_path) -> None:
    """Found in review: every error Redis answered at connect was final; the executor's connect hook writes, and a
    Redis at maxmemory (or READONLY after a failover) for a moment made the daemon exit for good."""
    from shared.redis_conn import RedisUnavailable, connect_checked

    def writes(connection) -> None:
        connection.on_connect()
        connection.send_command("SET", "quantum:probe", "x")
        connection.read_response()

    with EmbeddedRedis(data_dir=str(tmp_path)) as server:
        admin = redis.Redis.from_url(server.url)
        admin.config_set("maxmemory", "1")
        admin.config_set("maxmemory-policy", "noeviction")
        with pytest.raises(RedisUnavailable) as full:
            connect_checked(server.url, on_connect=writes, retries=0)
        admin.config_set("requirepass", "right-one")
        with pytest.raises(RedisUnavailable) as refused:
            connect_checked(server.url.replace("redis://", "redis://:wrong-one@"), retries=0)

    assert (full.value.retryable, full.value.misconfigured) == (True, False)
    assert (refused.value.retryable, refused.value.misconfigured) == (False, True)
