"""Small statistics helpers: percentiles by linear interpolation, summaries in milliseconds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from time import perf_counter_ns

NS_PER_MS = 1_000_000


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = rank - low
    return float(sorted_values[low]) * (1 - fraction) + float(sorted_values[high]) * fraction


def summarize_ns(values_ns: Sequence[int]) -> dict[str, float]:
    """``{n, p50, p90, p99, mean, min, max}`` in milliseconds from nanosecond samples."""
    ordered = sorted(v / NS_PER_MS for v in values_ns)
    if not ordered:
        nan = math.nan
        return {"n": 0, "p50": nan, "p90": nan, "p99": nan, "mean": nan, "min": nan, "max": nan}
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "mean": sum(ordered) / len(ordered),
        "min": ordered[0],
        "max": ordered[-1],
    }


def median(values: Sequence[float]) -> float:
    return percentile(sorted(values), 50)


def time_us(work: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``work`` in µs (after one warm-up call)."""
    work()
    samples = []
    for _ in range(repeat):
        started = perf_counter_ns()
        work()
        samples.append(perf_counter_ns() - started)
    return statistics.median(samples) / 1000
