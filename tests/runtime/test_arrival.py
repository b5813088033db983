"""Arrival reads on a real Redis: a handler's script runs when its entries are delivered, in the same round trip."""

from __future__ import annotations

import redis
from structlog.testing import capture_logs

from shared import redis_wire
from shared.lua import LuaScript
from shared.runtime.arrival import PRELUDE, ArrivalCall
from shared.runtime.consumer import ConsumerConfig, StreamConsumer

STREAM = "quantum:stream:test"
# Reply: {entry id, n field, ARGV[3]} per entry delivered; KEYS[2] is read to show the handler's keys arrive too.
ECHO = LuaScript(PRELUDE + """
local reply = {}
for _, entry in ipairs(delivered()) do
  reply[#reply + 1] = {entry[1], entry[2].n, ARGV[3], redis.call('GET', KEYS[2])}
end
return reply
""")
FAILING = LuaScript(PRELUDE + "return redis.error_reply('arrival script broke')")


class Recorder:
    """An arrival reader and batch handler that writes down what it heard, in order."""

    def __init__(self, script: LuaScript = ECHO, fail_on: str | None = None):
        self.script = script
        self.fail_on = fail_on
        self.calls = 0
        self.events: list[tuple] = []

    def arrival_call(self) -> ArrivalCall:
        self.calls += 1
        return ArrivalCall(self.script, ["marker"], ["asked"])

    def arrived(self, reply) -> None:
        self.events.append(("arrived", reply))

    def handle_batch(self, batch) -> list:
        self.events.append(("batch", [entry.entry_id for _item, entry in batch]))
        return [RuntimeError("fails") if item["n"] == self.fail_on else None for item, _entry in batch]


def consumer(r: redis.Redis, recorder: Recorder, **overrides) -> StreamConsumer:
    config = ConsumerConfig(**{**dict(stream=STREAM, group="g", consumer="c1", block_ms=50, claim_idle_ms=60_000), **overrides})
    built = StreamConsumer(r, config, dict, lambda item, entry: None, batch_handler=recorder.handle_batch, arrival=recorder)
    built.ensure_group()
    return built


def warmed(r: redis.Redis, recorder: Recorder, **config) -> StreamConsumer:
    """A consumer past its first read of new entries (one entry, handled), its events forgotten."""
    reader = consumer(r, recorder, **config)
    r.xadd(STREAM, {"n": "warm-up"})
    reader._read_new(block_ms=None)
    recorder.events.clear()
    return reader


def test_the_script_reads_for_exactly_the_entries_just_delivered_and_hears_none_after_the_batch(r: redis.Redis) -> None:
    recorder = Recorder(fail_on="1")  # entry 1 fails and stays pending: the next arrival read must not list it
    reader = warmed(r, recorder)
    r.set("marker", "here")
    first = [r.xadd(STREAM, {"n": str(i)}) for i in range(3)]
    reader._read_new(block_ms=None)
    second = r.xadd(STREAM, {"n": "3"})
    reader._read_new(block_ms=None)

    assert recorder.events == [
        ("arrived", [[entry_id, str(i), "asked", "here"] for i, entry_id in enumerate(first)]),
        ("batch", first),
        ("arrived", None),
        ("arrived", [[second, "3", "asked", "here"]]),
        ("batch", [second]),
        ("arrived", None),
    ]
    assert [p["message_id"] for p in r.xpending_range(STREAM, "g", "-", "+", 10)][-2:] == [first[1], second]  # 3: acked next read


def test_a_wait_that_ends_empty_hands_over_an_empty_reply_and_no_batch(r: redis.Redis) -> None:
    recorder = Recorder()
    reader = warmed(r, recorder)

    reader._read_new(block_ms=10)

    assert recorder.events == [("arrived", []), ("arrived", None)]


def test_a_script_redis_lost_is_sent_again_and_reads_for_the_same_entries(r: redis.Redis) -> None:
    recorder = Recorder()
    reader = warmed(r, recorder)
    r.script_flush()  # as after a restart
    entry_id = r.xadd(STREAM, {"n": "0"})

    reader._read_new(block_ms=None)

    assert recorder.events == [("arrived", [[entry_id, "0", "asked", None]]), ("batch", [entry_id]), ("arrived", None)]


def test_a_failing_script_is_logged_and_the_handler_reads_for_itself(r: redis.Redis) -> None:
    recorder = Recorder(FAILING)
    reader = warmed(r, recorder)
    r.script_load(FAILING.source)
    entry_id = r.xadd(STREAM, {"n": "0"})

    with capture_logs() as logs:
        reader._read_new(block_ms=None)

    assert recorder.events == [("arrived", None), ("batch", [entry_id]), ("arrived", None)]
    assert [line["event"] for line in logs] == ["arrival_read_failed"]
    assert r.xpending(STREAM, "g")["pending"] == 1  # handled; acked with the next read


def test_the_acks_the_read_and_the_script_go_in_one_round_trip(r: redis.Redis) -> None:
    recorder = Recorder()
    reader = warmed(r, recorder)
    r.script_load(ECHO.source)
    r.xadd(STREAM, {"n": "0"})
    reader._read_new(block_ms=None)
    r.xadd(STREAM, {"n": "1"})
    r.config_resetstat()

    reader._read_new(block_ms=None)

    stats = r.info("commandstats")
    assert {name: stats[name]["calls"] for name in ("cmdstat_xack", "cmdstat_xreadgroup", "cmdstat_evalsha")} == {
        "cmdstat_xack": 1, "cmdstat_xreadgroup": 1, "cmdstat_evalsha": 1}


def test_after_a_start_the_first_read_is_read_for_from_the_groups_last_delivered_entry(r: redis.Redis) -> None:
    r.xgroup_create(STREAM, "g", id="0", mkstream=True)
    given = r.xadd(STREAM, {"n": "given before the restart"})
    r.xreadgroup("g", "c1", {STREAM: ">"})
    waiting = r.xadd(STREAM, {"n": "arrived while down"})
    recorder = Recorder()

    consumer(r, recorder)._read_new(block_ms=None)

    assert recorder.events == [("arrived", [[waiting, "arrived while down", "asked", None]]), ("batch", [waiting]),
                               ("arrived", None)]
    assert given not in str(recorder.events)


def test_a_read_that_fails_still_ends_with_none(r: redis.Redis, monkeypatch) -> None:
    recorder = Recorder()
    reader = warmed(r, recorder)
    monkeypatch.setattr(redis_wire, "send", lambda *_, **_kw: (_ for _ in ()).throw(redis.ConnectionError("gone")))

    try:
        reader._read_new(block_ms=None)
    except redis.ConnectionError:
        pass

    assert recorder.events == [("arrived", None)]


def test_behind_a_backlog_the_script_finds_nothing_and_the_handler_reads_for_itself(r: redis.Redis) -> None:
    recorder = Recorder()
    reader = warmed(r, recorder, batch=2)
    ids = [r.xadd(STREAM, {"n": str(i)}) for i in range(5)]

    reader._read_new(block_ms=None)
    reader._read_new(block_ms=None)
    reader._read_new(block_ms=None)

    assert recorder.events == [
        ("arrived", []), ("batch", ids[:2]), ("arrived", None),  # five after the last: the two read are not at the end
        ("arrived", []), ("batch", ids[2:4]), ("arrived", None),
        ("arrived", [[ids[4], "4", "asked", None]]), ("batch", ids[4:]), ("arrived", None),
    ]
