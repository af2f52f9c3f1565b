"""Timings that survive a busy machine: interleaved rounds with ``torch.utils.benchmark``.

Timing A, then all of B, is a comparison of two moments of a shared machine, not of A and
B. Here every round times each function once, one after the other, so a slow spell of the
machine hits all of them in the same round; the median over rounds is the time, and the
spread of the per-round ratios says whether a comparison can be trusted.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils import benchmark

#: a measurement repeats the call until it lasts about this long, so timer resolution and
#: per-measurement overheads are negligible even for a 20-microsecond block
MIN_MEASUREMENT_S = 2e-3
#: a comparison whose per-round ratios spread wider than this (max / min) is flagged
MAX_TRUSTED_SPREAD = 1.25


@dataclass(frozen=True)
class Spread:
    """Min / median / max of per-round values (e.g. ratios of two interleaved timings)."""

    low: float
    median: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(min(values), statistics.median(values), max(values))

    @property
    def width(self) -> float:
        """max / min: 1.0 when every round agreed."""
        return self.high / self.low if self.low > 0 else math.inf

    @property
    def trusted(self) -> bool:
        return self.width <= MAX_TRUSTED_SPREAD

    def __str__(self) -> str:
        flag = "" if self.trusted else f" (spread x{self.width:.2f}: too wide to trust)"
        return f"{self.median:.3f} [{self.low:.3f}..{self.high:.3f}]{flag}"


def _timer(fn: Callable[[], object], threads: int, clock: Callable[[], float] | None = None) -> benchmark.Timer:
    # Timer synchronises CUDA around each measurement and runs with `threads` intra-op threads
    extra = {} if clock is None else {"timer": clock}
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads, **extra)


def interleaved_times(fns: Sequence[Callable[[], object]], rounds: int, threads: int | None = None,
                      warmup: int = 2, progress: Callable[[], None] | None = None,
                      clock: Callable[[], float] | None = None) -> list[list[float]]:
    """Seconds per call of every function in every round (``result[i][r]``), the functions alternated.

    Each function is first called ``warmup`` times (first-call costs: allocation, kernel
    choice) and its calls per measurement fixed so one measurement lasts ``MIN_MEASUREMENT_S``.
    ``progress()`` is called after each function's warm-up and after each measurement:
    ``len(fns) * (rounds + 1)`` calls in all.
    ``clock`` replaces ``torch.utils.benchmark``'s timer (tests give one that only the timed
    functions advance, so that the arithmetic is checked exactly, on any machine).
    """
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    threads = threads or torch.get_num_threads()
    timers = [_timer(fn, threads, clock) for fn in fns]
    numbers = []
    for timer in timers:
        if warmup:
            timer.timeit(warmup)
        once = timer.timeit(1).median
        numbers.append(max(1, math.ceil(MIN_MEASUREMENT_S / max(once, 1e-9))))
        if progress is not None:
            progress()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, (timer, number) in enumerate(zip(timers, numbers)):
            times[i].append(timer.timeit(number).median)
            if progress is not None:
                progress()
    return times


def medians(times: list[list[float]]) -> list[float]:
    return [statistics.median(t) for t in times]


def ratio_spread(numerator: Sequence[float], denominator: Sequence[float]) -> Spread:
    """Spread of the per-round ratios of two interleaved timings."""
    return Spread.of([a / b for a, b in zip(numerator, denominator)])


__all__ = ["MAX_TRUSTED_SPREAD", "Spread", "interleaved_times", "medians", "ratio_spread"]
