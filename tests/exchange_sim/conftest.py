import hashlib
import hmac
import time
from urllib.parse import urlencode

import httpx
import pytest

from microservices.exchange_sim.testing import SimHandle, running_simulator


@pytest.fixture(scope="session")
def shared_sim():
    with running_simulator() as handle:
        yield handle


@pytest.fixture
def sim(shared_sim: SimHandle) -> SimHandle:
    shared_sim.reset()
    return shared_sim


@pytest.fixture
def client(sim: SimHandle):
    return sim.binance_client()


@pytest.fixture
def signed(sim: SimHandle):
    """signed(method, path, params, **overrides) -> httpx.Response, signed like the Binance docs."""
    return lambda method, path, params, **kw: signed_request(sim, method, path, params, **kw)


def signed_request(sim: SimHandle, method: str, path: str, params: dict, *, api_key: str | None = None,
                   secret: str | None = None, timestamp: int | None = None) -> httpx.Response:
    """Send a request signed the way Binance documents it (HMAC-SHA256 over the query string)."""
    params = {**params, "timestamp": timestamp if timestamp is not None else int(time.time() * 1000)}
    query = urlencode(params)
    signature = hmac.new((secret or sim.api_secret).encode(), query.encode(), hashlib.sha256).hexdigest()
    headers = {"X-MBX-APIKEY": api_key or sim.api_key}
    return httpx.request(method, f"{sim.base_url}{path}?{query}&signature={signature}", headers=headers, timeout=10)
