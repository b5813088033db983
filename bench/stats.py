"""Percentiles of nanosecond samples, reported in milliseconds."""

from __future__ import annotations

import math


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summary(samples_ns: list[int]) -> dict:
    values = sorted(v / 1e6 for v in samples_ns)
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 0.50), 4),
        "p90_ms": round(percentile(values, 0.90), 4),
        "p99_ms": round(percentile(values, 0.99), 4),
        "max_ms": round(values[-1], 4),
        "mean_ms": round(sum(values) / len(values), 4),
    }
