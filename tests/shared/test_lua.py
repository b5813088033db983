"""LuaScript against a real Redis: by SHA, reloaded after SCRIPT FLUSH, and run right after a BLPOP."""

from __future__ import annotations

import threading

import pytest
import redis

from shared.lua import LuaScript

COUNT = LuaScript("return redis.call('INCR', KEYS[1])")
NOTHING = LuaScript("return {}")


def test_calls_survive_a_script_flush(r: redis.Redis) -> None:
    assert COUNT(r, ["n"]) == 1
    r.script_flush()
    assert COUNT(r, ["n"]) == 2
    r.script_flush()
    assert COUNT.many(r, [(["n"], []), (["n"], [])]) == [3, 4]


def test_the_script_runs_the_moment_the_blpop_returns(r: redis.Redis) -> None:
    threading.Timer(0.1, lambda: r.rpush("wake", "p32")).start()
    r.script_flush()  # and is sent again when Redis lost it

    popped, reply = COUNT.after_blpop(r, "wake", 5, ["n"])

    assert tuple(popped) == ("wake", "p32") and reply == 1


def test_a_blpop_timeout_still_runs_the_script(r: redis.Redis) -> None:
    assert COUNT.after_blpop(r, "wake", 0.01, ["n"]) == (None, 1)


def test_a_failed_blpop_keeps_what_the_script_did_and_raises_when_it_did_nothing(r: redis.Redis) -> None:
    r.set("wake", "not a list")  # BLPOP answers WRONGTYPE at once; the pipelined script runs all the same

    assert COUNT.after_blpop(r, "wake", 1, ["n"]) == (None, 1)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        NOTHING.after_blpop(r, "wake", 1, [])

