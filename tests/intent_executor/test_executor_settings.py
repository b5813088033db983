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


def test_at_the_longest_request_timeout_a_plan_is_sent_well_before_its_claim_expires() -> None:
    """Found in a review: with EXCHANGE_REQUEST_TIMEOUT_S allowed up to 120 s, the send deadline (two requests + 1 s
    after taking the permits, when the claim is renewed) outlasted the 60 s claim: another executor could end the
    plan (gave_up) while this one still sent its order, whose fill then went unrecorded."""
    from microservices.intent_executor import resolve, scripts
    from shared.exchange.target import MAX_REQUEST_TIMEOUT_S

    longest_send_s = resolve.REQUESTS_BEFORE_SENDING * MAX_REQUEST_TIMEOUT_S + resolve.SEND_MARGIN_S
    assert 2 * longest_send_s < scripts.CLAIM_TTL_S
