"""A consumer process for tests that kill or signal it: python tests/runtime/worker.py URL STREAM MODE.

MODE hang: the handler records the entry then hangs (to be SIGKILLed before acking).
MODE slow: the handler takes 1 s then records (to be SIGTERMed mid-entry).
MODE burst: process what is there, recording each entry, then exit.
"""

from __future__ import annotations

import sys
import threading

from shared.redis_conn import connect
from shared.runtime.consumer import ConsumerConfig, StreamConsumer
from shared.runtime.daemon import install_signal_handlers


def main() -> int:
    url, stream, mode = sys.argv[1:4]
    client = connect(url)
    config = ConsumerConfig(stream=stream, group="g", consumer="worker-1", block_ms=200, claim_idle_ms=60_000)

    def handler(fields: dict[str, str], entry) -> None:
        if mode == "hang":
            client.rpush("seen", entry.entry_id)
            threading.Event().wait(3600)
        if mode == "slow":
            client.rpush("started", entry.entry_id)
            threading.Event().wait(1.0)
        client.rpush("done", f"{entry.entry_id}:{entry.deliveries}")

    consumer = StreamConsumer(client, config, parse=dict, handler=handler)
    install_signal_handlers(consumer)
    consumer.run(burst=(mode == "burst"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
