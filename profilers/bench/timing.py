"""Timing a call: warm up, repeat, report the median with its spread."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

SETTLE_S = 0.3


@dataclass
class Timing:
    median_s: float
    min_s: float
    max_s: float
    repeats: int

    @classmethod
    def of(cls, samples: list[float]) -> "Timing":
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))


def time_call(fn: Callable[[], object], repeat: int, warmup: int = 1, sync: Callable[[], None] | None = None,
              budget_s: float | None = None) -> Timing:
    """Median/min/max wall seconds of `fn()` over `repeat` runs after `warmup` untimed runs.
    `sync` runs inside the timed region after each call (device synchronisation). With a
    budget, stop repeating once the time spent passes it (at least one timed run)."""
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    samples: list[float] = []
    spent = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        dt = time.perf_counter() - t
        samples.append(dt)
        spent += dt
        if budget_s is not None and spent > budget_s:
            break
    return Timing.of(samples)


def settle() -> None:
    """Let the previous thread pool go idle before timing the next backend. OpenBLAS (the
    float64 reference, `blas`) and OpenMP (Numba, torch) workers keep spinning after a call;
    on a 2-core machine the next pool then waits for a core: measured, simd matmul at 512
    took 7.4 ms right after the reference and 3.2 ms after this pause."""
    time.sleep(SETTLE_S)
