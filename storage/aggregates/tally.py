"""Tally: what some records add to (or take from) one cell, for every kind alike.

The write path tallies a batch per cell before it touches the database, and the reader tallies
the raw rows at the unaligned ends of a range the same way, so both count exactly alike.
"""

from __future__ import annotations

from typing import Any

from storage.aggregates.histogram import Extremes
from storage.aggregates.kinds import AggregateKind, Contribution


class Tally:
    """Counters, part counts and histogram bins of some records, signed (+1 added, -1 removed)."""

    __slots__ = ("bins", "counts", "extremes", "parts", "removed_extremes")

    def __init__(self, kind: AggregateKind) -> None:
        """A tally of nothing, laid out like the kind's counters."""
        self.counts: list[Any] = list(kind.zero_counts)
        self.parts: dict[str, int] = {}
        self.bins: tuple[dict[int, int], ...] = tuple([{} for _ in kind.measures])
        """Per measure, histogram bin -> count."""
        self.extremes = Extremes(len(kind.measures))
        """Of the values added (cells with histograms only)."""
        self.removed_extremes: Extremes | None = None
        """Of the values removed (None: none): a stored extreme among them is read again."""

    def add(self, contribution: Contribution, sign: int) -> None:
        """Add one record's contribution `sign` times."""
        slots, part, measured = contribution
        counts = self.counts
        counts[0] += sign
        for slot in slots:
            counts[slot] += sign
        if part is not None:
            self.parts[part] = self.parts.get(part, 0) + sign
        if measured:
            extremes = self.extremes if sign > 0 else self._removed()
            first = len(counts) - 2 * len(self.bins)
            for index, value, bin_index in measured:
                slot = first + 2 * index
                counts[slot] += sign
                counts[slot + 1] += sign * value
                bins = self.bins[index]
                bins[bin_index] = bins.get(bin_index, 0) + sign
                extremes.include(index, value)

    def add_counts(self, contribution: Contribution, sign: int) -> None:
        """Add one record's counters only (cells that keep no parts or histograms)."""
        slots, _, measured = contribution
        counts = self.counts
        counts[0] += sign
        for slot in slots:
            counts[slot] += sign
        first = len(counts) - 2 * len(self.bins)
        for index, value, _ in measured:
            slot = first + 2 * index
            counts[slot] += sign
            counts[slot + 1] += sign * value

    def merge(self, other: Tally) -> None:
        """Add another tally."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        _merge_counts(self.parts, other.parts)
        for bins, more in zip(self.bins, other.bins, strict=True):
            _merge_counts(bins, more)
        self.extremes.merge(other.extremes)
        if other.removed_extremes is not None:
            self._removed().merge(other.removed_extremes)

    def copy(self) -> Tally:
        """An independent copy."""
        tally = Tally.__new__(Tally)
        tally.counts = list(self.counts)
        tally.parts = dict(self.parts)
        tally.bins = tuple(dict(bins) for bins in self.bins)
        tally.extremes = self.extremes.copy()
        tally.removed_extremes = (
            None if self.removed_extremes is None else self.removed_extremes.copy()
        )
        return tally

    def _removed(self) -> Extremes:
        """The extremes of removed values, made on the first removal (most tallies see none)."""
        if self.removed_extremes is None:
            self.removed_extremes = Extremes(len(self.bins))
        return self.removed_extremes


def _merge_counts(target: dict[Any, int], source: dict[Any, int]) -> None:
    for key, count in source.items():
        target[key] = target.get(key, 0) + count
