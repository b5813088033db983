"""intent-bridge: trade.intent → OPEN plans on apply.plan."""

from __future__ import annotations

from microservices.intent_bridge.bridge import IntentBridge
from microservices.intent_bridge.settings import BridgeSettings
from shared import keys
from shared.runtime import daemon
from shared.runtime.consumer import StreamConsumer
from shared.runtime.exchange import open_exchange_or_exit
from shared.schema import TradeIntent
from shared.settings import load_settings

NAME = "intent-bridge"


def main() -> int:
    settings = load_settings(BridgeSettings)
    ctx = daemon.start(NAME, settings)
    access = open_exchange_or_exit(ctx)
    ctx.log.info("bridge_ready", allowlist=sorted(settings.allowlist), min_confidence=str(settings.bridge_min_confidence))
    bridge = IntentBridge(ctx.redis, access.filters, settings)
    config = daemon.consumer_config(settings, NAME, keys.Stream.TRADE_INTENT, keys.Group.INTENT_BRIDGE)
    consumer = StreamConsumer(ctx.redis, config, TradeIntent.from_fields, bridge.handle, on_tick=access.filters.maybe_refresh)
    return daemon.run(ctx, consumer)
