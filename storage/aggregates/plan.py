"""Planning a GetStats read: where each kind's numbers come from, and which cells cover a range.

A time range [start, end) is cut into the coarsest whole cells of the scope's key that fit
(decompose): months, days and hours for the dense dimensions (all, model, event type), months for a
user. Only the partial finest buckets at unaligned ends are read from the raw rows: for the dense
dimensions at most two partial hours, through the time index; for a user at most two partial
months of that user's rows, through the user index. Filters that no rollup covers alone (a
message, a conversation, or two of conversation / user / model) read the rows of the narrowest
filter through its index: a message or a conversation has few rows; so does a user, usually.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from storage.aggregates.kinds import ALL, EVENTS, FEEDBACK, INTERACTIONS, AggregateKind
from storage.aggregates.sql import SqlTarget
from storage.aggregates.tables import KEY_SPANS_TABLE
from storage.calendar import (
    DAY_SECONDS,
    HOUR,
    SECOND,
    TOTAL,
    bucket_start,
    ceil_to,
    next_bucket_start,
)
from storage.records import StatsQuery

Interval = tuple[int | None, int | None]
"""[low, high) in epoch microseconds; None is open."""

BucketKey = tuple[int, int]
"""(level, bucket_start)."""

Plan = tuple[list[BucketKey], list[Interval]]
"""The cells and raw ranges that cover one interval."""


# ---- scopes: which records a kind's numbers are made of ----


@dataclass(frozen=True, slots=True)
class RollupScope:
    """Records of one key of one dimension (ALL: every record), optionally of one part name."""

    dimension: int
    key: str
    part: str | None = None
    """Only the records of this part name (an event type) within the key's cells."""


@dataclass(frozen=True, slots=True)
class RawScope:
    """Records matching equality filters, read from the raw table (narrowest filter first)."""

    conditions: tuple[tuple[str, str], ...]


Scope = RollupScope | RawScope


def query_kinds(query: StatsQuery) -> list[AggregateKind]:
    """The kinds a query asks about."""
    kinds = []
    if query.feedback_applies:
        kinds += [FEEDBACK, INTERACTIONS]
    if query.events_apply:
        kinds.append(EVENTS)
    return kinds


def scope_of(kind: AggregateKind, query: StatsQuery) -> Scope:
    """Where one kind's aggregates for the query's filters come from.

    One filter naming a detailed dimension is that key's cells; so is one beside the part filter
    (events of a user and a type: the user's cells, counting the type). Any other mix reads raw.
    """
    given = [
        (column, value) for column in kind.filters if (value := getattr(query, column)) is not None
    ]
    if not given:
        return RollupScope(ALL, "")
    by_column = {d.column: d for d in kind.dimensions if d.column is not None and d.detailed}
    part_dimension = None if kind.part_dimension is None else kind.dimension_of[kind.part_dimension]
    part = None
    if part_dimension is not None and len(given) == 2:
        rest = [(c, v) for c, v in given if c != part_dimension.column]
        if len(rest) == 1:
            part = next(v for c, v in given if c == part_dimension.column)
            given = rest
    if len(given) == 1 and given[0][0] in by_column:
        column, value = given[0]
        return RollupScope(by_column[column].id, value, part)
    return RawScope(tuple(given))


# ---- ranges -> cells ----


def decompose(low: int, high: int, levels: Sequence[int]) -> Plan:
    """The cells and raw ranges that exactly cover [low, high) microseconds.

    Whole buckets of the finest level come from cells (whole coarser buckets from coarser cells
    where they fit); the partial finest buckets at each unaligned end, at most two, are left to
    the raw rows.
    """
    if low >= high:
        return [], []
    finite = [level for level in levels if level != TOTAL]
    finest = finite[0]
    first = ceil_to(finest, -(-low // SECOND))
    last = bucket_start(finest, high // SECOND)
    if first >= last:
        return [], [(low, high)]
    raw: list[Interval] = []
    if low < first * SECOND:
        raw.append((low, first * SECOND))
    if last * SECOND < high:
        raw.append((last * SECOND, high))
    return _cover(first, last, finite, 0), raw


def single_cell(low: int, high: int, levels: Sequence[int]) -> BucketKey | None:
    """The one cell that is exactly [low, high), if any: the common case of an aligned bucket."""
    if low % SECOND or high % SECOND:
        return None
    start = low // SECOND
    for level in levels:
        if (
            level != TOTAL
            and bucket_start(level, start) == start
            and next_bucket_start(level, start) * SECOND == high
        ):
            return (level, start)
    return None


def _cover(low: int, high: int, levels: Sequence[int], index: int) -> list[BucketKey]:
    """Cells of levels[index:] covering [low, high) seconds, aligned to levels[index]."""
    level = levels[index]
    if index + 1 < len(levels):
        coarse = levels[index + 1]
        inner_low, inner_high = ceil_to(coarse, low), bucket_start(coarse, high)
        if inner_low < inner_high:
            return (
                _enumerate(level, low, inner_low)
                + _cover(inner_low, inner_high, levels, index + 1)
                + _enumerate(level, inner_high, high)
            )
    return _enumerate(level, low, high)


def _enumerate(level: int, low: int, high: int) -> list[BucketKey]:
    cells = []
    start = low
    while start < high:
        cells.append((level, start))
        start = next_bucket_start(level, start)
    return cells


def by_level(cells: Iterable[BucketKey]) -> dict[int, list[int]]:
    """Bucket starts grouped by level."""
    levels: dict[int, list[int]] = {}
    for level, start in cells:
        levels.setdefault(level, []).append(start)
    return levels


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Overlapping or touching intervals merged; an open end absorbs everything beyond."""
    ordered = sorted(
        intervals, key=lambda interval: -(1 << 62) if interval[0] is None else interval[0]
    )
    merged: list[Interval] = []
    for low, high in ordered:
        if merged:
            last_low, last_high = merged[-1]
            if last_high is None or low is None or low <= last_high:
                if last_high is not None and (high is None or high > last_high):
                    merged[-1] = (last_low, high)
                continue
        merged.append((low, high))
    return merged


# ---- the planner of one read ----


class Planner:
    """Plans of one read transaction, remembered per interval and key (kinds share them)."""

    def __init__(self, target: SqlTarget) -> None:
        """Read key spans through `target`."""
        self._target = target
        self.spans: dict[tuple[int, str], tuple[int, int] | None] = {}
        """The key spans read so far (they bound open or months-only ranges)."""
        self._plans: dict[tuple[Any, ...], Plan] = {}
        self._interval_plans: dict[
            tuple[Any, ...], tuple[list[Plan], dict[int, list[int]], list[Interval]]
        ] = {}
        self.whole: dict[Interval, BucketKey] = {}
        """Intervals known to be exactly one bucket of a level (the response's whole buckets)."""

    def plans_of(
        self, intervals: Sequence[Interval], levels: Sequence[int], dimension: int, key: str
    ) -> tuple[list[Plan], dict[int, list[int]], list[Interval]]:
        """The plans of a list of intervals, the cells they need by level, and the raw ranges.

        Shared by the kinds with the same levels and key (all three, for unfiltered stats).
        """
        memo = (tuple(intervals), tuple(levels), dimension, key)
        found = self._interval_plans.get(memo)
        if found is None:
            whole = self.whole
            plans: list[Plan] = [
                ([cell], [])
                if (cell := whole.get(interval)) is not None and cell[0] in levels
                else self.plan(interval, levels, dimension, key)
                for interval in intervals
            ]
            wanted = by_level({cell for cells, _ in plans for cell in cells})
            raw_ranges = union([edge for _, edges in plans for edge in edges])
            found = self._interval_plans[memo] = (plans, wanted, raw_ranges)
        return found

    def plan(self, interval: Interval, levels: Sequence[int], dimension: int, key: str) -> Plan:
        """Cells and raw edges covering an interval for one key.

        Open ends, and for months-only keys any end beyond the key's records, move to the key's
        span rounded out to whole finest buckets: no record lies outside it, so the answer is the
        same and no partial bucket is read raw there.
        """
        memo = (interval, tuple(levels), dimension, key)
        plan = self._plans.get(memo)
        if plan is None:
            plan = self._plans[memo] = self._new_plan(interval, levels, dimension, key)
        return plan

    def _new_plan(
        self, interval: Interval, levels: Sequence[int], dimension: int, key: str
    ) -> Plan:
        low, high = interval
        if low is None and high is None and TOTAL in levels:
            return [(TOTAL, 0)], []
        if low is not None and high is not None and HOUR in levels:
            single = single_cell(low, high, levels)
            if single is not None:
                return [single], []
        if low is None or high is None or HOUR not in levels:
            # Only dense keys keep a span; a user's records lie within the span of all records.
            span = self._span(dimension, key) if HOUR in levels else self._span(ALL, "")
            if span is None:
                return [], []
            finest = levels[0]
            first = bucket_start(finest, span[0]) * SECOND
            last = ceil_to(finest, span[1] + DAY_SECONDS) * SECOND
            low = first if low is None else max(low, first)
            high = last if high is None else min(high, last)
        return decompose(low, high, levels)

    def _span(self, dimension: int, key: str) -> tuple[int, int] | None:
        if (dimension, key) not in self.spans:
            rows = self._target.query(
                f"SELECT first_day, last_day FROM {KEY_SPANS_TABLE}"
                f" WHERE dimension = {dimension} AND dimension_key = {self._target.mark}",
                (key,),
            )
            self.spans[(dimension, key)] = (rows[0][0], rows[0][1]) if rows else None
        return self.spans[(dimension, key)]
