"""Observations counted per bucket in plain integers, for metrics read at scrape time.

A prometheus_client Histogram takes a lock and walks its buckets in Python on every observation;
here one thread counts (the group-commit writer, the event loop) and another reads a copy when
metrics are scraped, so an observation is one bisect and two additions, and nothing at all is
done for metrics that nobody reads.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence


class Histogram:
    """Counts of observations at or below each bound, written by one thread only.

    Single writer: `observe` is not safe from two threads at once (an increment could be lost),
    but a reader on another thread may call `snapshot` at any time (the GIL makes the copy of
    the counts one step; the sum may be an observation ahead or behind).
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        """`bounds`: the upper bounds of the buckets, increasing (+Inf is implied last)."""
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.bounds = tuple(float(bound) for bound in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        """Observations per bucket, not cumulative; the last one is above every bound."""
        self.total = 0.0
        """The sum of every observed value."""

    def observe(self, value: float) -> None:
        """Count one observation (in the first bucket whose bound it does not exceed)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def snapshot(self) -> tuple[list[int], float]:
        """Cumulative counts per bound, +Inf last (the count of all), and the sum."""
        counts = list(self.counts)
        running = 0
        cumulative = []
        for count in counts:
            running += count
            cumulative.append(running)
        return cumulative, self.total
