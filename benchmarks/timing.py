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
                          warmup: int = 3, block: int = 1) -> dict[str, float]:
    """Median wall ms of each call, timed in turn (a, b, a, b, ...) so load on a shared machine
    falls on every contender alike instead of on whichever ran during a busy spell.

    `block` > 1 runs each call that many times per turn (a x block, b x block, ...), so each
    engine's caches and threads are warm as in a service that runs one model, while a busy
    spell still falls on both.
    """
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(max(1, repeats // block)):
        for name, fn in calls.items():
            for _ in range(block):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}
