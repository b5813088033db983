"""python-binance's package __init__ (aiohttp, the async client, websockets) runs only when asked for."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from shared.exchange.lazy_binance import defer_package_init


def _run(code: str, *paths: str) -> str:
    env_path = ":".join([*paths, *sys.path])
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_exchange_client_loads_without_aiohttp_and_the_package_still_answers_in_full():
    out = _run("""
        import sys
        from shared.exchange.client import ExchangeClient
        from shared.runtime import exchange
        print("aiohttp" in sys.modules, "binance.async_client" in sys.modules)
        import importlib.metadata, binance
        from binance import AsyncClient, Client
        print(binance.__version__ == importlib.metadata.version("python-binance"), AsyncClient.__name__,
              Client is sys.modules["binance.client"].Client, "aiohttp" in sys.modules)
    """)
    assert out.splitlines() == ["False False", "True AsyncClient True True"]


def test_submodules_load_without_init_and_init_runs_once_on_first_lookup(tmp_path):
    package = tmp_path / "deferredpkg"
    package.mkdir()
    (package / "__init__.py").write_text("import sys\nsys.init_runs = getattr(sys, 'init_runs', 0) + 1\nNAME = 'full'\n")
    (package / "part.py").write_text("VALUE = 7\n")
    out = _run("""
        import sys
        from shared.exchange.lazy_binance import defer_package_init
        module = defer_package_init("deferredpkg")
        from deferredpkg.part import VALUE
        print(VALUE, getattr(sys, "init_runs", 0))
        from deferredpkg import NAME
        print(NAME, sys.init_runs, module is sys.modules["deferredpkg"], hasattr(module, "missing"), sys.init_runs)
        print(defer_package_init("deferredpkg") is module, defer_package_init("no_such_package_here"))
    """, str(tmp_path))
    assert out.splitlines() == ["7 0", "full 1 True False 1", "True None"]


def test_an_already_imported_package_is_left_as_it_is():
    assert defer_package_init("json") is sys.modules["json"]


def test_an_init_that_fails_fails_again_with_its_cause_as_a_failed_import_would(tmp_path):
    package = tmp_path / "brokenpkg"
    package.mkdir()
    (package / "__init__.py").write_text("import sys\nsys.init_runs = getattr(sys, 'init_runs', 0) + 1\n"
                                         "import no_such_dependency_here\n")
    (package / "part.py").write_text("VALUE = 7\n")
    out = _run("""
        import sys
        from shared.exchange.lazy_binance import defer_package_init
        defer_package_init("brokenpkg")
        from brokenpkg.part import VALUE
        for _ in range(2):
            try:
                from brokenpkg import ANYTHING
            except ImportError as exc:
                print(type(exc).__name__, exc.name, "brokenpkg" in sys.modules)
        print(VALUE, sys.init_runs)
    """, str(tmp_path))
    assert out.splitlines() == ["ModuleNotFoundError no_such_dependency_here False"] * 2 + ["7 2"]
