"""The exchange's newClientOrderId derived from a plan id: one plan, one id, forever."""

from __future__ import annotations

import hashlib
import re

PREFIX = "qt-"
_READABLE = re.compile(r"^[A-Za-z0-9_-]{1,33}$")


def client_order_id_for(plan_id: str) -> str:
    """Readable when the plan id fits Binance's 36-char alphabet, else a stable hash of it."""
    if _READABLE.match(plan_id):
        return PREFIX + plan_id
    return PREFIX + hashlib.sha256(plan_id.encode()).hexdigest()[:32]
