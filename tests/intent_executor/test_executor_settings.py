"""Only an explicit APPLY_MODE decides whether the executor sends: without one it exits 2, naming it."""

from __future__ import annotations

import pytest

from microservices.intent_executor.settings import ExecutorSettings
from shared.settings import EXIT_CONFIG, load_settings
from tests.apply_layer.test_apply_settings import MODE_REQUIRED, clean_env  # noqa: F401 (a fixture)


def test_an_executor_without_apply_mode_exits_2_with_one_line_naming_it(clean_env, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        load_settings(ExecutorSettings)

    lines = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == EXIT_CONFIG
    assert len(lines) == 1 and MODE_REQUIRED in lines[0], lines
