"""P3.3 metrics: decisions by outcome, snapshot age, refresh failures and refresh latency."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REFRESH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

DECISIONS = Counter("quantum_p33_decisions", "P3.3 permits written, by outcome", ["allow", "reason"])
PLANS_SKIPPED = Counter("quantum_p33_plans_skipped", "Plans acknowledged without a permit", ["reason"])
SNAPSHOT_AGE = Gauge(
    "quantum_p33_snapshot_age_seconds", "Age of the exchange snapshot in memory (+Inf before the first good refresh)"
)
STALE_THRESHOLD = Gauge(
    "quantum_p33_stale_threshold_seconds", "P33_STALE_THRESHOLD_SEC: older snapshots deny every plan (alerts compare)"
)
REFRESH_SKIPPED = Counter(
    "quantum_p33_snapshot_refresh_skipped", "Scheduled refreshes skipped to keep exchange weight for orders"
)
REFRESH_FAILURES = Counter(
    "quantum_p33_snapshot_refresh_failures", "Snapshot refreshes that failed (the last good snapshot was kept)"
)
REFRESH_SECONDS = Histogram(
    "quantum_p33_snapshot_refresh_seconds", "Time to fetch positions and mark prices", buckets=REFRESH_BUCKETS
)
