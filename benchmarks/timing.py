"""Shared by the benchmark scripts: the median of repeated timings (warm-up runs discarded)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of `fn()` over `repeats` runs after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_median_ms(calls: dict[str, Callable[[], object]], repeats: int = 20,
                          warmup: int = 3) -> dict[str, float]:
    """Median wall ms of each call, timed in turn (a, b, a, b, ...) so load on a shared machine
    falls on every contender alike instead of on whichever ran during a busy spell."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}
