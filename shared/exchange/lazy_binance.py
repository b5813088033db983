"""python-binance's package without its eager `__init__`: the fleet uses only the synchronous client.

`import binance.client` first runs `binance/__init__.py`, which imports the asyncio client, aiohttp and
the websocket managers: about 10 MB of resident memory in every daemon that talks to the exchange
(P3.3 sat at 77 MB against the 80 MB budget of issue 8), and 0.3-0.4 s of start-up. Here the package
module is created from its spec without running `__init__`, so `binance.client`, `binance.exceptions`
and the rest load from the package directory as usual. The first lookup of any name on the package
itself (`from binance import AsyncClient`, `binance.__version__`) runs the real `__init__` then, so
nothing else sees a difference but the time at which aiohttp is imported.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types

PACKAGE = "binance"


def defer_package_init(name: str = PACKAGE) -> types.ModuleType | None:
    """Register `name` as a package whose `__init__` runs on the first attribute lookup; idempotent.
    Returns the module in sys.modules, or None when the package is not installed."""
    if name in sys.modules:
        return sys.modules[name]  # already imported (the real one, or deferred by an earlier call)
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return None
    module = importlib.util.module_from_spec(spec)  # __path__, __spec__, __file__; no code run yet
    lock = threading.RLock()  # another thread waits for the whole __init__; this one may look names up during it
    state = "deferred"

    def __getattr__(attr: str):
        nonlocal state
        with lock:
            if state == "deferred":
                state = "running"
                try:
                    spec.loader.exec_module(module)  # type: ignore[union-attr]  # checked above
                except BaseException:
                    # As a failed import: the package leaves sys.modules, and the next try runs __init__ again
                    # (and raises its cause again) instead of answering from a half-run one.
                    state = "deferred"
                    if sys.modules.get(name) is module:
                        del sys.modules[name]
                    raise
                state = "ran"
                module.__dict__.pop("__getattr__", None)
        return object.__getattribute__(module, attr)

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]  # PEP 562 module __getattr__
    sys.modules[name] = module
    return module
