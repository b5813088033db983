"""Which plans may be being sent on a symbol (shared.sending): one per plan, only its holder lets it go.

Reconcile must not rewrite a symbol's ledger while an order on it may be in flight. With one mark per
symbol, the first plan to finish deleted it while another plan on the symbol was still sending.
"""

from __future__ import annotations

from microservices.intent_executor import scripts
from microservices.intent_executor.executor import Executor
from microservices.intent_executor.settings import ExecutorSettings
from shared import keys, sending
from shared.modes import ApplyMode
from tests.intent_executor.test_executor_sim import built, grant, plan, run_executor, the_result


def an_executor(r, access, name: str) -> Executor:
    return Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET), consumer_name=name)


def test_a_plan_finishing_leaves_the_other_plans_on_its_symbol_marked(r, access, sim) -> None:
    other = built("slow-1")
    an_executor(r, access, "executor-b")._look_ahead(other)  # B has started on slow-1
    grant(r, "fast-1")
    plan(r, "fast-1", "BUY", "0.002")

    run_executor(r, access)  # fast-1 ends while slow-1 may still be sent

    assert the_result(r, "fast-1")["order_status"] == "FILLED"
    assert set(r.hkeys(keys.executor_sending("BTCUSDT"))) == {"slow-1"}
    assert sending.busy(r, "BTCUSDT")


def test_only_the_claim_holder_marks_and_lets_go(r, access) -> None:
    held = built("held-1")
    holder = an_executor(r, access, "executor-a")
    ahead = holder._look_ahead(held)
    other = an_executor(r, access, "executor-b")

    other_ahead = other._look_ahead(held)  # B arrives second: not its plan
    scripts.RELEASE(r, scripts.release_keys(held), ["executor-b", "held-1"])

    assert other_ahead.claim_holder == "executor-a" and sending.busy(r, "BTCUSDT")
    holder._release(held, ahead)
    assert not sending.busy(r, "BTCUSDT") and r.get(keys.plan_claim("held-1")) is None


def test_the_mark_of_an_executor_that_died_stops_counting_when_its_time_is_up(r) -> None:
    seconds, _ = r.time()
    r.hset(keys.executor_sending("BTCUSDT"), "dead-1", str((seconds - 1) * 1000))

    assert not sending.busy(r, "BTCUSDT")

    r.hset(keys.executor_sending("BTCUSDT"), "garbled-1", "soon")
    assert sending.busy(r, "BTCUSDT")  # what cannot be read counts as being sent: reconcile waits
