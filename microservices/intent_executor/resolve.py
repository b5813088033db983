"""Orders whose outcome the executor does not know: looked up by client order id, never sent again.

The order marker, written in the script call that takes both permits, says "an order may have been
sent for this plan" and holds the Redis time of that call. The exchange accepts a signed request up
to recvWindow after its timestamp, and the executor signs within `send_within_s` of taking the
permits (or sends nothing), so until marked + send_within + recvWindow (+ a second of margin) a
request may still be accepted: an answer "no such order" before then is not believed. An order
found in a state that can still change (NEW, PARTIALLY_FILLED) is not final either. In both cases
the plan stays pending and is looked at again on its next delivery; nothing is ever resent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

import redis

from microservices.intent_executor import outcomes
from shared import permits
from shared.freshness import redis_ms
from shared.sending import (FINALITY_MARGIN_MS, REQUESTS_BEFORE_SENDING, SEND_MARGIN_S, Marker, send_within_s,
                            unclear_window_ms)
from shared.exchange.errors import ExchangeError, OutcomeUnknown
from shared.exchange.models import OrderResult
from shared.exchange.target import ExchangeSettings
from shared.runtime.exchange import ExchangeAccess
from shared.permits import Permit, PermitKind
from shared.schema import P32Permit, P33Permit, Plan, Reason

def redelivered_too_soon(claim_idle_ms: int, max_deliveries: int, permit_wait_ms: int,
                         exchange: ExchangeSettings) -> str | None:
    """Why a plan whose order may exist would be given up before "no such order" can be believed, or None. Until
    then its entry stays pending and is delivered again every STREAM_CLAIM_IDLE_MS; its deliveries must outlast the
    wait from its first delivery (the permits taken up to the permit wait later, then the send deadline, recvWindow
    and a margin), else it ends as gave_up_after_retries with order_may_exist=true and only reconcile learns what
    the exchange holds."""
    window_s = permit_wait_ms / 1000 + unclear_window_ms(exchange) / 1000
    redelivered_s = claim_idle_ms / 1000 * (max_deliveries - 1)
    if redelivered_s > window_s:
        return None
    return (f"STREAM_CLAIM_IDLE_MS x (STREAM_MAX_DELIVERIES - 1) = {redelivered_s:g} s must exceed the {window_s:g} s "
            "from a plan's delivery until 'no such order' can be believed after an unclear send "
            "(EXECUTOR_PERMIT_WAIT_MS + 2 x EXCHANGE_REQUEST_TIMEOUT_S + 1 s + EXCHANGE_RECV_WINDOW_MS + 1 s): else "
            "such plans are given up unresolved")


__all__ = ["FINALITY_MARGIN_MS", "REQUESTS_BEFORE_SENDING", "SEND_MARGIN_S", "Marker", "OutcomeStillUnknown", "Resolver",
           "redelivered_too_soon", "send_within_s"]


class OutcomeStillUnknown(RuntimeError):
    """Whether the order exists, or how it ends, is not known yet: retry later, never resend."""


class Resolver:
    def __init__(self, client: redis.Redis, exchange: ExchangeAccess, attempts: int, log,
                 wait: Callable[[float], object], beat: Callable[[], object] = lambda: None,
                 monotonic: Callable[[], float] = time.monotonic):
        self.r = client
        # The executor's (injectable) monotonic clock, on which a send's start is taken: a step of the wall clock
        # (NTP) while the exchange may still accept the request must not make "no such order" believed sooner.
        self.monotonic = monotonic
        self.exchange = exchange
        self.attempts = attempts
        self.log = log
        self.wait = wait
        self.beat = beat  # each attempt is progress: a slow exchange is not a hung executor

    @property
    def send_within_s(self) -> float:
        return send_within_s(self.exchange.settings)

    def look_up(self, symbol: str, client_order_id: str) -> OrderResult | None:
        """Ask the exchange for the order; None only when it answered that there is none."""
        delay = 0.1
        for _attempt in range(self.attempts):
            self.beat()
            try:
                return self.exchange.client.get_order(symbol, client_order_id)
            except ExchangeError as exc:
                self.log.warning("order_lookup_failed", client_order_id=client_order_id, error=exc.message)
                self.wait(delay)
                delay = min(delay * 3, 2.0)
        raise OutcomeStillUnknown(f"could not look up {client_order_id}; the plan stays pending")

    def known(self, plan: Plan, order: OrderResult, p32: P32Permit | None = None, p33: P33Permit | None = None,
              ledger: dict[str, str] | None = None) -> outcomes.Outcome:
        """The plan's outcome from its order, once the order can no longer change."""
        if not order.final:
            raise OutcomeStillUnknown(f"order {order.client_order_id} is {order.status}: its fill is not final yet")
        return outcomes.from_order(plan, order, p32, p33, ledger)

    def after_earlier_attempt(self, plan: Plan, marker: Marker) -> outcomes.Outcome:
        """An earlier attempt took the permits (and may have sent): find its order, send nothing."""
        self.log.warning("resolving_order_sent_before_restart", plan_id=plan.plan_id,
                         client_order_id=marker.client_order_id)
        order = self.look_up(plan.symbol, marker.client_order_id)
        p32, p33 = self.permits_of(plan, marker)
        if order is None:
            self.check_final_absence(marker.client_order_id, marker.marked_ms + self.send_within_ms, self.redis_ms())
            return outcomes.refused(plan, Reason.ORDER_NOT_FOUND, {"client_order_id": marker.client_order_id}, p32, p33)
        return self.known(plan, order, p32, p33)

    def marked_digests(self, marker: Marker) -> set[str]:
        """The digests of the plan whose permits the marker carries (empty when it carries none, or none that
        read): which plan the order it stands for was sent for."""
        carried = zip((PermitKind.P32, PermitKind.P33), marker.permits or ())
        decoded = (_context_permit(kind, raw) for kind, raw in carried)
        return {permit.plan_digest for permit in decoded if permit is not None and permit.plan_digest}

    def permits_of(self, plan: Plan, marker: Marker | None) -> tuple[P32Permit | None, P33Permit | None]:
        """The permits an earlier attempt took, for the context of the result this one writes: as its order marker
        carries them, else as their keys still hold them (until their TTL); None for one that is gone or garbled."""
        raws = marker.permits if marker is not None and marker.permits is not None else \
            self.r.mget([kind.key(plan.plan_id) for kind in (PermitKind.P32, PermitKind.P33)])
        p32, p33 = (_context_permit(kind, raw) for kind, raw in zip((PermitKind.P32, PermitKind.P33), raws))
        return p32, p33  # type: ignore[return-value]

    def before_sending(self, plan: Plan, client_order_id: str, redis_since_ms: int | None) -> outcomes.Outcome | None:
        """For a plan older than the Redis in use: the outcome of an order the exchange already holds, else None.

        An earlier attempt whose order marker was lost with the old server took its permits before this server
        came up (redis_since_ms, on the Redis clock; None: not known, so now) and signed within send_within_s of
        that: "no such order" is believed only once its request can no longer be accepted. Until then the plan
        stays pending (OutcomeStillUnknown), as after an unclear send."""
        self.log.warning("plan_older_than_redis_asking_exchange_first", plan_id=plan.plan_id,
                         client_order_id=client_order_id)
        order = self.look_up(plan.symbol, client_order_id)
        if order is not None:
            return self.known(plan, order, *self.permits_of(plan, None))
        now_ms = self.redis_ms()
        since_ms = redis_since_ms if redis_since_ms is not None else now_ms
        self.check_final_absence(client_order_id, since_ms + self.send_within_ms, now_ms)
        return None

    @property
    def send_within_ms(self) -> int:
        return int(self.send_within_s * 1000)

    def redis_ms(self) -> int:
        """Redis time: the clock of order markers and of the server's start (shared.incarnation)."""
        return redis_ms(self.r)

    def after_unclear_send(self, plan: Plan, client_order_id: str, exc: ExchangeError, p32: P32Permit,
                           p33: P33Permit, qty: Decimal, ledger: dict[str, str] | None, sent_at: float) -> outcomes.Outcome:
        """The send failed without an answer (OutcomeUnknown: it may have executed) or with 'not executed': what
        the exchange holds. sent_at: the executor's monotonic clock just before it signed."""
        order = self.look_up(plan.symbol, client_order_id)
        if order is not None:
            return self.known(plan, order, p32, p33, ledger)
        maybe_sent = isinstance(exc, OutcomeUnknown)
        if maybe_sent:
            self.check_final_absence(client_order_id, int(sent_at * 1000), int(self.monotonic() * 1000))
        reason = Reason.ORDER_NOT_FOUND if maybe_sent else Reason.EXCHANGE_UNAVAILABLE
        return outcomes.refused(plan, reason, {"error": exc.message, "client_order_id": client_order_id},
                                p32, p33, qty=qty)

    def check_final_absence(self, client_order_id: str, signed_by_ms: int, now_ms: int) -> None:
        """Raise OutcomeStillUnknown while a request signed by signed_by_ms (on now_ms's clock) could still be
        accepted by the exchange."""
        believe_from = signed_by_ms + self.exchange.client.recv_window_ms + FINALITY_MARGIN_MS
        if now_ms < believe_from:
            raise OutcomeStillUnknown(f"no order {client_order_id} yet, but the exchange may still accept one "
                                      f"until {believe_from} ms: looked at again later")


def _context_permit(kind: PermitKind, raw: str | None) -> Permit | None:
    if raw is None:
        return None
    try:
        return permits.decode(kind, raw)
    except permits.PermitError:
        return None
