"""Best-of-N timing for benchmarks (the minimum is the run least disturbed by other processes)."""

from __future__ import annotations

import time
from typing import Callable


def best_seconds(fn: Callable[[], object], repeats: int,
                 clock: Callable[[], float] = time.perf_counter, warmup: bool = False) -> float:
    """The shortest of `repeats` calls of `fn` by `clock` (wall by default; `time.process_time`
    for CPU time); `warmup` makes one untimed call first."""
    if warmup:
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best
