"""Adding cells up: cells as read, raw rows tallied like writes, and the stats of their sum."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from storage.aggregates.histogram import Histogram
from storage.aggregates.kinds import AggregateKind
from storage.aggregates.tally import Tally
from storage.records import Percentiles

if TYPE_CHECKING:
    from storage.aggregates.cache import CellCache


class ReadCell:
    """One rollup cell as read: counters, parts and a histogram per measure; never changed."""

    __slots__ = ("counts", "histograms", "parts", "stats")

    def __init__(
        self, counts: tuple[Any, ...], parts: dict[str, int], histograms: tuple[Histogram, ...]
    ) -> None:
        """A cell of these counters (in the kind's counter order), parts and histograms."""
        self.counts = counts
        self.parts = parts
        self.histograms = histograms
        self.stats: Any = None
        """The cell's stats, computed on first use (an aligned bucket is exactly one cell)."""

    @classmethod
    def of_tally(cls, tally: Tally) -> ReadCell:
        """The cell a tally of raw rows amounts to."""
        return cls(
            tuple(tally.counts),
            dict(tally.parts),
            tuple(
                tally.extremes.histogram(metric, bins.items())
                for metric, bins in enumerate(tally.bins)
            ),
        )

    def weight(self) -> int:
        """Roughly how many values the cell holds, for the cache's budget."""
        return 8 + len(self.parts) + sum(len(h.counts) + len(h.others) for h in self.histograms)

    def own_stats(self, kind: AggregateKind) -> Any:
        """The stats of this cell alone, made once."""
        if self.stats is None:
            self.stats = stats_of(kind, self.counts, self.parts, self.histograms)
        return self.stats


def tally_rows(kind: AggregateKind, rows: Sequence[Sequence[Any]], start: int) -> Tally | None:
    """Raw rows whose facts begin at `start` added up the way the write path adds records."""
    if not rows:
        return None
    tally = Tally(kind)
    end = start + len(kind.facts)
    contribution = kind.contribution
    for row in rows:
        tally.add(contribution(row[start:end]), 1)
    return tally


class Sum:
    """Cells and raw tallies of one interval (or group) added up."""

    __slots__ = ("cells", "raw")

    def __init__(self) -> None:
        """Nothing added yet."""
        self.cells: list[ReadCell] = []
        self.raw = False
        """Whether raw rows were added (their stats are never cached)."""

    def add_tally(self, tally: Tally | None) -> None:
        """Add raw rows' tally (None: no rows)."""
        if tally is not None:
            self.cells.append(ReadCell.of_tally(tally))
            self.raw = True

    def stats(self, kind: AggregateKind, part: str | None, cache: CellCache) -> Any:
        """The kind's stats record over everything added, counting only `part` if given."""
        cells = self.cells
        if part is None and len(cells) == 1:
            return cells[0].own_stats(kind)
        if not cells:
            # One shared object per kind: empty buckets then hit the response's bucket cache.
            return kind.empty
        if self.raw:
            return sum_stats(kind, cells, part)
        # Cached cells are never changed, only replaced, so the cells themselves name the sum
        # (a year is twelve month cells; merging their histograms is the costly part).
        return cache.sum(kind, part, cells, sum_stats)


def sum_stats(kind: AggregateKind, cells: Sequence[ReadCell], part: str | None) -> Any:
    """The kind's stats over several cells (cached ones or tallies of raw rows)."""
    columns = zip(*(cell.counts for cell in cells), strict=True)
    # Float sums (latency) are added with fsum, which does not depend on the cells' order.
    floats = kind.float_slots
    counts: Sequence[Any] = [
        math.fsum(column) if index in floats else sum(column)
        for index, column in enumerate(columns)
    ]
    parts: dict[str, int] = {}
    for cell in cells:
        for name, count in cell.parts.items():
            parts[name] = parts.get(name, 0) + count
    merged = [Histogram() for _ in kind.measures]
    for cell in cells:
        for target, histogram in zip(merged, cell.histograms, strict=True):
            target.merge(histogram)
    if part is not None:
        # Only the part's records: its count is all a kind with parts but no measures has.
        count = parts.get(part, 0)
        counts = (count,)
        parts = {part: count} if count else {}
    return stats_of(kind, counts, parts, merged)


def stats_of(
    kind: AggregateKind,
    counts: Sequence[Any],
    parts: dict[str, int],
    histograms: Sequence[Histogram],
) -> Any:
    """The kind's stats record from summed counters, parts and histograms."""
    return kind.stats(
        (
            dict(zip(kind.counter_columns, counts, strict=True)),
            parts,
            tuple(_percentiles(histogram) for histogram in histograms),
        )
    )


def _percentiles(histogram: Histogram) -> Percentiles:
    values = histogram.percentiles()
    if values is None:
        return Percentiles()
    p50, p90, p95, p99 = values
    return Percentiles(p50=p50, p90=p90, p95=p95, p99=p99)
