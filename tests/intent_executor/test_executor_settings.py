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


def test_an_executor_whose_redeliveries_end_before_an_unclear_send_can_be_resolved_is_refused() -> None:
    """Found in the chaos run: redelivered every 2 s, 5 deliveries, a plan whose send was unclear was given up
    (gave_up_after_retries, order_may_exist) before 'no such order' could be believed (20 s at the defaults)."""
    from microservices.intent_executor.resolve import redelivered_too_soon
    from shared.exchange.target import ExchangeSettings

    defaults = ExchangeSettings(EXCHANGE_TARGET="simulator")
    quick = ExchangeSettings(EXCHANGE_TARGET="simulator", EXCHANGE_REQUEST_TIMEOUT_S=1, EXCHANGE_RECV_WINDOW_MS=1000)

    assert redelivered_too_soon(30_000, 5, 3000, defaults) is None  # the defaults: 120 s of redeliveries for 20 s
    refusal = redelivered_too_soon(2_000, 5, 3000, defaults)
    assert refusal is not None and "STREAM_CLAIM_IDLE_MS" in refusal and "20 s" in refusal
    assert redelivered_too_soon(2_000, 5, 2000, quick) is None  # what the chaos run sets: 7 s of 8
    assert redelivered_too_soon(2_000, 5, 3000, quick) is not None  # the permits may be taken 3 s after delivery


def test_the_executor_exits_2_at_start_naming_the_settings_when_its_redeliveries_end_too_soon(monkeypatch, capsys):
    from microservices.intent_executor import main

    for name, value in {"APPLY_MODE": "testnet", "EXCHANGE_TARGET": "simulator", "STREAM_CLAIM_IDLE_MS": "2000",
                        "REDIS_URL": "redis://127.0.0.1:1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        main.main()

    assert exited.value.code == EXIT_CONFIG
    assert "STREAM_CLAIM_IDLE_MS x (STREAM_MAX_DELIVERIES - 1)" in capsys.readouterr().err
