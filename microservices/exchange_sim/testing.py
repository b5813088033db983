"""Run the simulator inside a test process and drive it through its admin API."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal

import httpx
from aiohttp import web
from binance.client import Client

from .server import build_app
from .settings import SimSettings

START_TIMEOUT_S = 10.0


@dataclass
class SimHandle:
    base_url: str
    api_key: str
    api_secret: str

    def _post(self, path: str, body: dict) -> dict:
        response = httpx.post(f"{self.base_url}/_sim/{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def _get(self, path: str) -> object:
        response = httpx.get(f"{self.base_url}/_sim/{path}", timeout=10)
        response.raise_for_status()
        return response.json()

    def set_price(self, symbol: str, price: Decimal | str) -> None:
        """Set the mark and freeze the walk for `symbol` (crossing LIMIT orders fill)."""
        self._post("price", {"symbol": symbol, "price": str(price)})

    def resume_walk(self, symbol: str) -> None:
        self._post("walk", {"symbol": symbol, "frozen": False})

    def mark_price(self, symbol: str) -> Decimal:
        response = httpx.get(f"{self.base_url}/_sim/price", params={"symbol": symbol}, timeout=10)
        response.raise_for_status()
        return Decimal(response.json()["price"])

    def set_faults(self, **shares) -> None:
        """e.g. set_faults(unknown_after_execute=1.0); unspecified fields keep their values."""
        self._post("faults", shares)

    def faults(self) -> dict:
        return self._get("faults")

    def orders(self) -> list[dict]:
        return self._get("orders")

    def reset(self) -> None:
        self._post("reset", {})

    def binance_client(self) -> Client:
        """An unmodified python-binance Client whose futures calls go to this simulator."""
        client = Client(self.api_key, self.api_secret, ping=False)
        client.FUTURES_URL = f"{self.base_url}/fapi"
        client.FUTURES_DATA_URL = f"{self.base_url}/futures/data"
        return client


class _ServerThread(threading.Thread):
    def __init__(self, app: web.Application, host: str):
        super().__init__(name="exchange-sim", daemon=True)
        self.app, self.host = app, host
        self.port: int | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self._stop_event = asyncio.Event()

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced to the caller through .error
            self.error = exc
            self.ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self.ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self._stop_event.set)
        self.join(timeout=10)


@contextmanager
def running_simulator(clock: Callable[[], int] | None = None, **settings_overrides) -> Iterator[SimHandle]:
    """Start the simulator on 127.0.0.1 with an ephemeral port in a background thread.

    settings_overrides are SimSettings field names (seed=7, balance_usdt="5000");
    `clock` optionally replaces the wall clock (a callable returning epoch milliseconds).
    """
    settings = SimSettings(**{**settings_overrides, "host": "127.0.0.1", "port": 0})
    server = _ServerThread(build_app(settings, clock), "127.0.0.1")
    server.start()
    if not server.ready.wait(START_TIMEOUT_S) or server.error is not None or server.port is None:
        server.stop()
        raise RuntimeError(f"exchange simulator failed to start: {server.error!r}")
    try:
        yield SimHandle(f"http://127.0.0.1:{server.port}", settings.api_key,
                        settings.api_secret.get_secret_value())
    finally:
        server.stop()
