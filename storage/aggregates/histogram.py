"""Log-scale histograms of a measure's values, and the exact extremes percentiles stay within.

Each bin spans 2 % of its value, so a stored cell holds a few hundred bins whatever its count, and
the percentiles of any union of cells are the percentiles of their merged bins, within 1 %.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable
from itertools import accumulate
from operator import add
from typing import Any

HISTOGRAM_GROWTH = 1.02
"""Each histogram bin spans [g^i, g^(i+1)): 2 % of its value."""
LOG_GROWTH = math.log(HISTOGRAM_GROWTH)
ZERO_BIN = -100_000
"""Zero has its own bin; positive values have bins in about (-37_700, 36_000)."""
NEGATIVE_BASE = -200_000
"""Negative values (never accepted by the service, but storable) mirror below ZERO_BIN."""

PERCENTILE_RANKS = (50, 90, 95, 99)


def histogram_bin(value: float) -> int:
    """The bin of a finite value; bins are ordered like the values they hold."""
    if value > 0:
        return math.floor(math.log(value) / LOG_GROWTH)
    if value == 0:
        return ZERO_BIN
    if value < 0:
        return NEGATIVE_BASE - math.floor(math.log(-value) / LOG_GROWTH)
    raise ValueError(f"histogram values must be finite, got {value!r}")


def bin_value(bin_index: int) -> float:
    """The value reported for a bin: its geometric midpoint, within 1 % of anything in the bin.

    A bin spans a factor of 1.02, so the midpoint g^(i + 1/2) is at most sqrt(1.02) - 1 = 0.995 %
    above its lower edge and below its upper edge.
    """
    if bin_index == ZERO_BIN:
        return 0.0
    if bin_index > ZERO_BIN:
        return float(HISTOGRAM_GROWTH ** (bin_index + 0.5))
    return -float(HISTOGRAM_GROWTH ** (NEGATIVE_BASE - bin_index + 0.5))


def nearest_rank(percent: int, count: int) -> int:
    """The 1-based nearest rank of a percentile: ceil(percent * count / 100), in integers."""
    return max(1, (percent * count + 99) // 100)


class Histogram:
    """Bin counts for reading: a dense run for positive bins, a dict for zero and negative ones.

    Dense lists merge and accumulate at C speed (map, accumulate), which keeps merging a year of
    monthly histograms well under a millisecond.
    """

    __slots__ = ("counts", "high", "low", "offset", "others")

    def __init__(self) -> None:
        """An empty histogram."""
        self.offset = 0
        self.counts: list[int] = []
        self.others: dict[int, int] = {}
        self.low: float | None = None
        self.high: float | None = None
        """Exact least and greatest value counted (None: unknown), which percentiles stay within."""

    @classmethod
    def from_bins(
        cls,
        bins: Iterable[tuple[int, int]],
        low: float | None = None,
        high: float | None = None,
    ) -> Histogram:
        """A histogram from (bin, count) pairs in any order and the values' exact extremes;
        zero counts are dropped."""
        histogram = cls()
        histogram.low, histogram.high = low, high
        positive: dict[int, int] = {}
        for bin_index, count in bins:
            if not count:
                continue
            target = positive if bin_index > ZERO_BIN else histogram.others
            target[bin_index] = target.get(bin_index, 0) + count
        if positive:
            low = min(positive)
            histogram.offset = low
            dense = [0] * (max(positive) - low + 1)
            for bin_index, count in positive.items():
                dense[bin_index - low] += count
            histogram.counts = dense
        return histogram

    def merge(self, other: Histogram) -> None:
        """Add another histogram's counts (and extremes) to this one."""
        self.low = _least(self.low, other.low)
        self.high = _greatest(self.high, other.high)
        if other.counts:
            if not self.counts:
                self.offset, self.counts = other.offset, list(other.counts)
            else:
                low = min(self.offset, other.offset)
                high = max(self.offset + len(self.counts), other.offset + len(other.counts))
                if low != self.offset or high != self.offset + len(self.counts):
                    grown = [0] * (high - low)
                    start = self.offset - low
                    grown[start : start + len(self.counts)] = self.counts
                    self.offset, self.counts = low, grown
                start = other.offset - self.offset
                end = start + len(other.counts)
                if start == 0 and end == len(self.counts):
                    self.counts = list(map(add, self.counts, other.counts))
                else:
                    self.counts[start:end] = map(add, self.counts[start:end], other.counts)
        for bin_index, count in other.others.items():
            self.others[bin_index] = self.others.get(bin_index, 0) + count

    def percentiles(self) -> tuple[float, ...] | None:
        """Nearest-rank p50, p90, p95, p99 as bin midpoints within the exact extremes, and the
        extreme itself at rank 1 or the last rank (so one value, or a percentile at either end,
        is exact); None when the histogram is empty."""
        ordered_others = sorted((b, n) for b, n in self.others.items() if n)
        other_bins = [b for b, _ in ordered_others]
        other_cumulative = list(accumulate(n for _, n in ordered_others))
        below = other_cumulative[-1] if other_cumulative else 0
        cumulative = list(accumulate(self.counts, initial=below))[1:]
        total = cumulative[-1] if cumulative else below
        if total <= 0:
            return None
        low, high = self.low, self.high
        values = []
        for percent in PERCENTILE_RANKS:
            rank = nearest_rank(percent, total)
            if rank == total and high is not None:
                value = high  # the greatest value itself
            elif rank == 1 and low is not None:
                value = low
            elif rank <= below:
                value = bin_value(other_bins[bisect_left(other_cumulative, rank)])
            else:
                value = bin_value(self.offset + bisect_left(cumulative, rank))
            if low is not None and value < low:
                value = low
            if high is not None and value > high:
                value = high
            values.append(float(value))
        return tuple(values)


def _least(a: float | None, b: float | None) -> float | None:
    """The lesser of two optional values; None only when both are."""
    if a is None:
        return b
    return a if b is None or a <= b else b


def _greatest(a: float | None, b: float | None) -> float | None:
    """The greater of two optional values; None only when both are."""
    if a is None:
        return b
    return a if b is None or a >= b else b


class Extremes:
    """Exact least and greatest value of each histogrammed metric of some records.

    Bins are 2 % wide, so percentiles read from bins alone could fall outside the values seen;
    readers clamp them into these (Histogram.low, Histogram.high).
    """

    __slots__ = ("values",)

    def __init__(self, measures: int) -> None:
        """No values seen of `measures` measures."""
        self.values: list[Any] = [None] * (2 * measures)
        """(least, greatest) of each measure in its kind's order; None while none was seen."""

    def include(self, metric: int, value: float) -> None:
        """Widen a metric's extremes to cover `value`."""
        values = self.values
        index = 2 * metric
        low = values[index]
        if low is None:
            values[index] = values[index + 1] = value
        elif value < low:
            values[index] = value
        elif value > values[index + 1]:
            values[index + 1] = value

    def copy(self) -> Extremes:
        """An independent copy."""
        extremes = Extremes(0)
        extremes.values = list(self.values)
        return extremes

    def merge(self, other: Extremes) -> None:
        """Widen every metric's extremes to cover another's."""
        for metric in range(len(self.values) // 2):
            low = other.values[2 * metric]
            if low is not None:
                self.include(metric, low)
                self.include(metric, other.values[2 * metric + 1])

    def histogram(self, metric: int, bins: Iterable[tuple[int, int]]) -> Histogram:
        """A histogram of the metric's bins, clamped to its extremes."""
        return Histogram.from_bins(bins, self.values[2 * metric], self.values[2 * metric + 1])
