"""Rollups: per-time-bucket aggregates of every write, kept in the write's own transaction.

GetStats never scans the raw tables. Every write adds its records' contribution (counts, sums,
label counts and log-scale histogram bins) to cells keyed by (level, bucket_start, dimension,
dimension_key), in the same transaction as the rows themselves, so the two can never disagree.
Removing a record applies the same contribution with sign -1.

Levels are UTC hours, days, calendar months and "total" (one bucket for all time). Dimensions are
"all" (one key, ""), model, conversation and user for feedback and interactions, and "all", event
type and user for events. Dense dimensions (all, model, event type: a handful of keys shared by
every batch) keep every level with every detail (label or event type counts and histograms).
Sparse ones get a new key for almost every record, so a finer level would hold about one cell per
record, as many rows as the raw table and no faster to read than its index: users keep months only,
with every detail; conversations keep month counters only (to rank conversations in GetStats
groups), and a conversation's own stats read its few rows through its index.

The primary keys start with (level, bucket_start), so the cells a batch touches are the few current
buckets, a small hot region of each table, rather than one random page per user; readers seek one
bucket at a time with IN lists. rollup_key_spans keeps the first and last day of every key so
readers know which buckets to look at when a range is open-ended (dense keys only: a user's or
conversation's open range is bounded by the span of all records instead, at no cost per record).

A transaction's changes are aggregated in Python first (one cell per distinct key) and applied at
its end with one multi-row INSERT ... ON CONFLICT DO UPDATE per table, tables in one fixed order
and rows sorted by key, so concurrent PostgreSQL writers lock rows in one order and never
deadlock (see RollupChanges).
"""

from __future__ import annotations

import math
import secrets
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from itertools import accumulate, chain
from operator import add
from typing import Any, Literal

from storage.records import (
    EventRecord,
    FeedbackRecord,
    InteractionRecord,
    Label,
    Score,
    Thumb,
)

# ---- levels and dimensions ----

HOUR, DAY, MONTH, TOTAL = 0, 1, 2, 3
"""Rollup levels, finest first. TOTAL has one bucket, bucket_start 0."""

ALL, MODEL, CONVERSATION, USER, EVENT_TYPE = 0, 1, 2, 3, 4
"""Rollup dimensions; ALL has the single key ""."""

DENSE_LEVELS = (HOUR, DAY, MONTH, TOTAL)
SPARSE_LEVELS = (MONTH,)

FEEDBACK_LEVELS: Mapping[int, tuple[int, ...]] = {
    ALL: DENSE_LEVELS,
    MODEL: DENSE_LEVELS,
    CONVERSATION: SPARSE_LEVELS,
    USER: SPARSE_LEVELS,
}
INTERACTION_LEVELS = FEEDBACK_LEVELS
EVENT_LEVELS: Mapping[int, tuple[int, ...]] = {
    ALL: DENSE_LEVELS,
    EVENT_TYPE: DENSE_LEVELS,
    USER: SPARSE_LEVELS,
}
EVENT_TYPE_BREAKDOWN_DIMENSIONS = frozenset({ALL, USER})
"""Dimensions whose event cells also count per event type (an EVENT_TYPE cell is one type)."""
DETAILED_DIMENSIONS = frozenset({ALL, MODEL, USER, EVENT_TYPE})
"""Dimensions whose cells keep labels and histograms too; conversation cells are counters only."""

HOUR_SECONDS = 3600
DAY_SECONDS = 86_400
WEEK_SECONDS = 7 * DAY_SECONDS
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)

Dialect = Literal["sqlite", "postgresql"]


def epoch_microseconds(moment: datetime) -> int:
    """Microseconds since 1970-01-01 UTC (negative before), for an aware datetime."""
    return (moment - _EPOCH) // _ONE_MICROSECOND


def time_parameter(dialect: Dialect, microseconds: int) -> Any:
    """A statement parameter compared with a raw time column: SQLite's stored text, or a time."""
    moment = from_epoch_microseconds(microseconds)
    if dialect == "sqlite":
        # The fixed-width text the SQLite DateTime column stores, so text order is time order.
        return moment.replace(tzinfo=None).isoformat(" ", "microseconds")
    return moment


def from_epoch_microseconds(microseconds: int) -> datetime:
    """The aware UTC datetime of an epoch_microseconds() value."""
    return _EPOCH + timedelta(microseconds=microseconds)


def _epoch_seconds(moment: datetime) -> int:
    delta = moment - _EPOCH
    return delta.days * DAY_SECONDS + delta.seconds


@lru_cache(maxsize=4096)
def month_start(seconds: int) -> int:
    """Start (epoch seconds) of the UTC calendar month holding `seconds`."""
    day = (_EPOCH + timedelta(seconds=seconds)).date()
    return (day.replace(day=1) - _EPOCH.date()).days * DAY_SECONDS


@lru_cache(maxsize=4096)
def next_month_start(seconds: int) -> int:
    """Start of the calendar month after the one holding `seconds`."""
    day = (_EPOCH + timedelta(seconds=month_start(seconds))).date()
    following = (
        day.replace(year=day.year + 1, month=1)
        if day.month == 12
        else day.replace(month=day.month + 1)
    )
    return (following - _EPOCH.date()).days * DAY_SECONDS


def bucket_start(level: int, seconds: int) -> int:
    """Start of the bucket of `level` holding the instant `seconds` (epoch seconds)."""
    if level == HOUR:
        return seconds - seconds % HOUR_SECONDS
    if level == DAY:
        return seconds - seconds % DAY_SECONDS
    if level == MONTH:
        return month_start(seconds - seconds % DAY_SECONDS)
    return 0


def next_bucket_start(level: int, start: int) -> int:
    """Start of the bucket of `level` after the one starting at `start`."""
    if level == HOUR:
        return start + HOUR_SECONDS
    if level == DAY:
        return start + DAY_SECONDS
    if level == MONTH:
        return next_month_start(start)
    raise ValueError("the total level has a single bucket")


def ceil_to(level: int, seconds: int) -> int:
    """The first bucket start of `level` at or after `seconds`."""
    start = bucket_start(level, seconds)
    return start if start == seconds else next_bucket_start(level, start)


# ---- histograms ----

HISTOGRAM_GROWTH = 1.02
"""Each histogram bin spans [g^i, g^(i+1)): 2 % of its value."""
_LOG_GROWTH = math.log(HISTOGRAM_GROWTH)
ZERO_BIN = -100_000
"""Zero has its own bin; positive values have bins in about (-37_700, 36_000)."""
_NEGATIVE_BASE = -200_000
"""Negative values (never accepted by the service, but storable) mirror below ZERO_BIN."""

PERCENTILE_RANKS = (50, 90, 95, 99)


def histogram_bin(value: float) -> int:
    """The bin of a finite value; bins are ordered like the values they hold."""
    if value > 0:
        return math.floor(math.log(value) / _LOG_GROWTH)
    if value == 0:
        return ZERO_BIN
    if value < 0:
        return _NEGATIVE_BASE - math.floor(math.log(-value) / _LOG_GROWTH)
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
    return -float(HISTOGRAM_GROWTH ** (_NEGATIVE_BASE - bin_index + 0.5))


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


# ---- tallies: what a set of records adds to one cell ----

SCORE_SLOTS = (1, 2, 3, 4, 5)
THUMBS_UP_SLOT, THUMBS_DOWN_SLOT = 6, 7
WITH_TEXT_SLOT = 8
FEEDBACK_LATENCY_COUNT, FEEDBACK_LATENCY_SUM, FEEDBACK_TOKENS_COUNT, FEEDBACK_TOKENS_SUM = (
    9,
    10,
    11,
    12,
)

FEEDBACK_COUNTERS = (
    "total_count",
    "score1_count",
    "score2_count",
    "score3_count",
    "score4_count",
    "score5_count",
    "thumbs_up_count",
    "thumbs_down_count",
    "with_text_count",
    "latency_count",
    "latency_sum",
    "tokens_count",
    "tokens_sum",
)
"""Counter columns of feedback_rollups, in the order of FeedbackTally.counts."""

INTERACTION_COUNTERS = ("total_count", "latency_count", "latency_sum", "tokens_count", "tokens_sum")
"""Counter columns of interaction_rollups, in the order of InteractionTally.counts."""

EVENT_COUNTERS = ("total_count",)

LATENCY_METRIC, TOKENS_METRIC = 0, 1
"""Histogram metrics: latency_ms; tokens_used (feedback) or total_tokens (interactions)."""
METRICS = (LATENCY_METRIC, TOKENS_METRIC)

EXTREME_COLUMNS = ("latency_min", "latency_max", "tokens_min", "tokens_max")
"""Columns of a counter table holding Extremes.values: (least, greatest) of each metric."""


class Extremes:
    """Exact least and greatest value of each histogrammed metric of some records.

    Bins are 2 % wide, so percentiles read from bins alone could fall outside the values seen;
    readers clamp them into these (Histogram.low, Histogram.high).
    """

    __slots__ = ("values",)

    def __init__(self) -> None:
        """No values seen."""
        self.values: list[Any] = [None] * len(EXTREME_COLUMNS)
        """(least, greatest) of each metric in METRICS order; None while none was seen."""

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

    def merge(self, other: Extremes) -> None:
        """Widen every metric's extremes to cover another's."""
        for metric in METRICS:
            low = other.values[2 * metric]
            if low is not None:
                self.include(metric, low)
                self.include(metric, other.values[2 * metric + 1])

    def histogram(self, metric: int, bins: Iterable[tuple[int, int]]) -> Histogram:
        """A histogram of the metric's bins, clamped to its extremes."""
        return Histogram.from_bins(bins, self.values[2 * metric], self.values[2 * metric + 1])


def _add_bin(bins: dict[int, int], bin_index: int | None, count: int) -> None:
    assert bin_index is not None  # set whenever the value is
    bins[bin_index] = bins.get(bin_index, 0) + count


def _merge_counts(target: dict[Any, int], source: Mapping[Any, int]) -> None:
    for key, count in source.items():
        target[key] = target.get(key, 0) + count


def _removed_extremes(tally: FeedbackTally | InteractionTally) -> Extremes:
    """The tally's extremes of removed values, made on the first removal (most tallies see none)."""
    if tally.removed_extremes is None:
        tally.removed_extremes = Extremes()
    return tally.removed_extremes


class FeedbackTally:
    """Counters, label counts and histogram bins of some feedback, signed (+1 added, -1 removed)."""

    __slots__ = ("counts", "extremes", "labels", "latency_bins", "removed_extremes", "tokens_bins")

    def __init__(self) -> None:
        """A tally of nothing."""
        self.counts: list[Any] = [0] * len(FEEDBACK_COUNTERS)
        self.counts[FEEDBACK_LATENCY_SUM] = 0.0
        self.labels: dict[str, int] = {}
        self.latency_bins: dict[int, int] = {}
        self.tokens_bins: dict[int, int] = {}
        self.extremes = Extremes()
        """Of the values added (cells with histograms only)."""
        self.removed_extremes: Extremes | None = None
        """Of the values removed (None: none): a stored extreme among them is read again."""

    def add(self, contribution: FeedbackContribution, sign: int) -> None:
        """Add one entry's contribution `sign` times."""
        slot, label, has_text, latency, latency_bin, tokens, tokens_bin = contribution
        counts = self.counts
        counts[0] += sign
        if slot:
            counts[slot] += sign
        elif label is not None:
            self.labels[label] = self.labels.get(label, 0) + sign
        if has_text:
            counts[WITH_TEXT_SLOT] += sign
        extremes = self.extremes if sign > 0 else _removed_extremes(self)
        if latency is not None:
            counts[FEEDBACK_LATENCY_COUNT] += sign
            counts[FEEDBACK_LATENCY_SUM] += sign * latency
            _add_bin(self.latency_bins, latency_bin, sign)
            extremes.include(LATENCY_METRIC, latency)
        if tokens is not None:
            counts[FEEDBACK_TOKENS_COUNT] += sign
            counts[FEEDBACK_TOKENS_SUM] += sign * tokens
            _add_bin(self.tokens_bins, tokens_bin, sign)
            extremes.include(TOKENS_METRIC, tokens)

    def add_counts(self, contribution: FeedbackContribution, sign: int) -> None:
        """Add one entry's counters only (cells that keep no labels or histograms)."""
        slot, _, has_text, latency, _, tokens, _ = contribution
        counts = self.counts
        counts[0] += sign
        if slot:
            counts[slot] += sign
        if has_text:
            counts[WITH_TEXT_SLOT] += sign
        if latency is not None:
            counts[FEEDBACK_LATENCY_COUNT] += sign
            counts[FEEDBACK_LATENCY_SUM] += sign * latency
        if tokens is not None:
            counts[FEEDBACK_TOKENS_COUNT] += sign
            counts[FEEDBACK_TOKENS_SUM] += sign * tokens

    def merge(self, other: FeedbackTally) -> None:
        """Add another tally."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        _merge_counts(self.labels, other.labels)
        _merge_counts(self.latency_bins, other.latency_bins)
        _merge_counts(self.tokens_bins, other.tokens_bins)
        self.extremes.merge(other.extremes)
        if other.removed_extremes is not None:
            _removed_extremes(self).merge(other.removed_extremes)

    def copy(self) -> FeedbackTally:
        """An independent copy."""
        tally = FeedbackTally()
        tally.merge(self)
        return tally

    def histograms(self) -> tuple[dict[int, int], dict[int, int]]:
        """Bins of (latency, tokens)."""
        return self.latency_bins, self.tokens_bins


class InteractionTally:
    """Counters and histogram bins of some interactions, signed."""

    __slots__ = ("counts", "extremes", "latency_bins", "removed_extremes", "tokens_bins")

    def __init__(self) -> None:
        """A tally of nothing."""
        self.counts: list[Any] = [0, 0, 0.0, 0, 0]
        self.latency_bins: dict[int, int] = {}
        self.tokens_bins: dict[int, int] = {}
        self.extremes = Extremes()
        self.removed_extremes: Extremes | None = None

    def add(self, contribution: InteractionContribution, sign: int) -> None:
        """Add one interaction's contribution `sign` times."""
        latency, latency_bin, tokens, tokens_bin = contribution
        counts = self.counts
        counts[0] += sign
        extremes = self.extremes if sign > 0 else _removed_extremes(self)
        if latency is not None:
            counts[1] += sign
            counts[2] += sign * latency
            _add_bin(self.latency_bins, latency_bin, sign)
            extremes.include(LATENCY_METRIC, latency)
        if tokens is not None:
            counts[3] += sign
            counts[4] += sign * tokens
            _add_bin(self.tokens_bins, tokens_bin, sign)
            extremes.include(TOKENS_METRIC, tokens)

    def add_counts(self, contribution: InteractionContribution, sign: int) -> None:
        """Add one interaction's counters only."""
        latency, _, tokens, _ = contribution
        counts = self.counts
        counts[0] += sign
        if latency is not None:
            counts[1] += sign
            counts[2] += sign * latency
        if tokens is not None:
            counts[3] += sign
            counts[4] += sign * tokens

    def merge(self, other: InteractionTally) -> None:
        """Add another tally."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        _merge_counts(self.latency_bins, other.latency_bins)
        _merge_counts(self.tokens_bins, other.tokens_bins)
        self.extremes.merge(other.extremes)
        if other.removed_extremes is not None:
            _removed_extremes(self).merge(other.removed_extremes)

    def copy(self) -> InteractionTally:
        """An independent copy."""
        tally = InteractionTally()
        tally.merge(self)
        return tally

    def histograms(self) -> tuple[dict[int, int], dict[int, int]]:
        """Bins of (latency, total tokens)."""
        return self.latency_bins, self.tokens_bins


class EventTally:
    """Count and per-type counts of some events, signed."""

    __slots__ = ("counts", "types")

    def __init__(self) -> None:
        """A tally of nothing."""
        self.counts: list[Any] = [0]
        self.types: dict[str, int] = {}

    def add(self, event_type: str, sign: int) -> None:
        """Add one event `sign` times."""
        self.counts[0] += sign
        self.types[event_type] = self.types.get(event_type, 0) + sign

    def merge(self, other: EventTally) -> None:
        """Add another tally."""
        self.counts[0] += other.counts[0]
        _merge_counts(self.types, other.types)

    def copy(self) -> EventTally:
        """An independent copy."""
        tally = EventTally()
        tally.merge(self)
        return tally


FeedbackContribution = tuple[
    int, str | None, bool, float | None, int | None, int | None, int | None
]
"""(score/thumb slot or 0, label, has text, latency, latency bin, tokens, tokens bin)."""

InteractionContribution = tuple[float | None, int | None, int | None, int | None]
"""(latency, latency bin, total tokens, tokens bin)."""


def feedback_contribution(
    score: int | None,
    thumb_up: bool | None,
    label: str | None,
    text: str | None,
    latency: float | None,
    tokens: int | None,
) -> FeedbackContribution:
    """What one feedback entry adds, from its column values (exactly one rating column set)."""
    if score is not None:
        slot = score
    elif thumb_up is not None:
        slot = THUMBS_UP_SLOT if thumb_up else THUMBS_DOWN_SLOT
    else:
        slot = 0
    return (
        slot,
        label if slot == 0 else None,
        bool(text),
        latency,
        None if latency is None else histogram_bin(latency),
        tokens,
        None if tokens is None else histogram_bin(tokens),
    )


def interaction_contribution(latency: float | None, tokens: int | None) -> InteractionContribution:
    """What one interaction adds."""
    return (
        latency,
        None if latency is None else histogram_bin(latency),
        tokens,
        None if tokens is None else histogram_bin(tokens),
    )


def _record_feedback_contribution(record: FeedbackRecord) -> FeedbackContribution:
    rating = record.rating
    if type(rating) is Score:
        score, thumb_up, label = rating.value, None, None
    elif type(rating) is Thumb:
        score, thumb_up, label = None, rating.up, None
    else:
        assert isinstance(rating, Label)
        score, thumb_up, label = None, None, rating.name
    return feedback_contribution(
        score, thumb_up, label, record.text, record.latency_ms, record.tokens_used
    )


# ---- deltas: records -> cells ----

Cell = tuple[int, int, int, str]
"""(level, bucket_start, dimension, dimension_key)."""


Spans = dict[tuple[int, str], tuple[int, int]]
"""(dimension, key) -> (first day, last day) of some records, epoch seconds."""

DENSE_DIMENSIONS = frozenset({ALL, MODEL, EVENT_TYPE})
"""Keys that keep a span; readers bound a user's or conversation's range by the span of ALL."""


def _roll_up(
    hour_cells: dict[tuple[int, int, str], Any],
    month_cells: dict[tuple[int, int, str], Any],
    levels: Mapping[int, tuple[int, ...]],
) -> tuple[dict[Cell, Any], Spans]:
    """Cells of every level: dense hour tallies merged into coarser buckets, sparse month
    tallies as they are; and the days each dense key's records fall on."""
    cells: dict[Cell, Any] = {}
    spans: dict[tuple[int, str], tuple[int, int]] = {}
    for (hour, dimension, key), tally in hour_cells.items():
        day = hour - hour % DAY_SECONDS
        span = spans.get((dimension, key))
        if span is None:
            spans[(dimension, key)] = (day, day)
        elif day < span[0] or day > span[1]:
            spans[(dimension, key)] = (min(day, span[0]), max(day, span[1]))
        for level in levels[dimension]:
            cell = (level, hour if level == HOUR else bucket_start(level, hour), dimension, key)
            existing = cells.get(cell)
            if existing is None:
                # The hour tally itself serves as its hour cell; coarser levels merge copies.
                cells[cell] = tally if level == HOUR else tally.copy()
            else:
                existing.merge(tally)
    for (month, dimension, key), tally in month_cells.items():
        cells[(MONTH, month, dimension, key)] = tally
    return cells, spans


def feedback_deltas(
    records: Iterable[FeedbackRecord], sign: int
) -> tuple[dict[Cell, FeedbackTally], Spans]:
    """Per cell, what adding (sign 1) or removing (sign -1) the entries changes."""
    hours: dict[tuple[int, int, str], FeedbackTally] = {}
    months: dict[tuple[int, int, str], FeedbackTally] = {}
    for record in records:
        seconds = _epoch_seconds(record.create_time)
        hour = seconds - seconds % HOUR_SECONDS
        month = month_start(hour - hour % DAY_SECONDS)
        contribution = _record_feedback_contribution(record)
        for cells, bucket, dimension, key in (
            (hours, hour, ALL, ""),
            (hours, hour, MODEL, record.model or ""),
            (months, month, USER, record.user_id or ""),
        ):
            tally = cells.get((bucket, dimension, key))
            if tally is None:
                tally = cells[(bucket, dimension, key)] = FeedbackTally()
            tally.add(contribution, sign)
        # Conversation cells only count (DETAILED_DIMENSIONS).
        cell = (month, CONVERSATION, record.conversation_id or "")
        tally = months.get(cell)
        if tally is None:
            tally = months[cell] = FeedbackTally()
        tally.add_counts(contribution, sign)
    return _roll_up(hours, months, FEEDBACK_LEVELS)


def interaction_deltas(
    records: Iterable[InteractionRecord], sign: int
) -> tuple[dict[Cell, InteractionTally], Spans]:
    """Per cell, what adding or removing the interactions changes."""
    hours: dict[tuple[int, int, str], InteractionTally] = {}
    months: dict[tuple[int, int, str], InteractionTally] = {}
    for record in records:
        seconds = _epoch_seconds(record.occur_time)
        hour = seconds - seconds % HOUR_SECONDS
        month = month_start(hour - hour % DAY_SECONDS)
        contribution = interaction_contribution(record.latency_ms, record.total_tokens)
        for cells, bucket, dimension, key in (
            (hours, hour, ALL, ""),
            (hours, hour, MODEL, record.model or ""),
            (months, month, USER, record.user_id or ""),
        ):
            tally = cells.get((bucket, dimension, key))
            if tally is None:
                tally = cells[(bucket, dimension, key)] = InteractionTally()
            tally.add(contribution, sign)
        cell = (month, CONVERSATION, record.conversation_id)
        tally = months.get(cell)
        if tally is None:
            tally = months[cell] = InteractionTally()
        tally.add_counts(contribution, sign)
    return _roll_up(hours, months, INTERACTION_LEVELS)


def event_deltas(records: Iterable[EventRecord], sign: int) -> tuple[dict[Cell, EventTally], Spans]:
    """Per cell, what adding or removing the events changes."""
    hours: dict[tuple[int, int, str], EventTally] = {}
    months: dict[tuple[int, int, str], EventTally] = {}
    for record in records:
        seconds = _epoch_seconds(record.event_time)
        hour = seconds - seconds % HOUR_SECONDS
        event_type = record.event_type
        for cells, bucket, dimension, key in (
            (hours, hour, ALL, ""),
            (hours, hour, EVENT_TYPE, event_type),
            (months, month_start(hour - hour % DAY_SECONDS), USER, record.user_id),
        ):
            tally = cells.get((bucket, dimension, key))
            if tally is None:
                tally = cells[(bucket, dimension, key)] = EventTally()
            tally.add(event_type, sign)
    return _roll_up(hours, months, EVENT_LEVELS)


# ---- SQL ----

Execute = Callable[[str, tuple[Any, ...]], Sequence[Sequence[Any]]]
"""Runs one driver-level statement with positional parameters and returns its rows (or [])."""

MAX_PARAMETERS: Mapping[Dialect, int] = {"sqlite": 32_766, "postgresql": 65_535}


class SqlTarget:
    """Where rollup SQL runs: a driver-level execute inside the caller's transaction."""

    __slots__ = ("dialect", "execute", "mark")

    def __init__(self, execute: Execute, dialect: Dialect) -> None:
        """Run statements through `execute`; `dialect` picks the placeholder style."""
        self.execute = execute
        self.dialect = dialect
        self.mark = "?" if dialect == "sqlite" else "%s"


CELL_COLUMNS = ("level", "bucket_start", "dimension", "dimension_key")
ID_BOUND_COLUMNS = ("min_id", "max_id")
"""Lowest and highest id of an "all" cell's records (a superset: removals never narrow them)."""
NO_ID_BOUNDS = (None, None)


class RollupTable:
    """One rollup table: its key columns and how a conflicting row absorbs a delta."""

    def __init__(
        self,
        name: str,
        key_columns: tuple[str, ...],
        counters: tuple[str, ...],
        *,
        stamped: bool,
        zero_column: str,
        sums: Mapping[str, str] | None = None,
        bounded: bool = False,
        extremes: bool = False,
    ) -> None:
        """`sums` maps float sum columns to the count column that resets them at zero;
        `extremes` tables follow the counters with EXTREME_COLUMNS (NULL on cells without
        histograms); `bounded` tables end with the id bounds of "all" cells (ID_BOUND_COLUMNS)."""
        self.name = name
        self.key_columns = key_columns
        self.counters = counters
        self.stamped = stamped
        self.bounded = bounded
        self.extremes = extremes
        self.zero_column = zero_column
        self.columns = (
            key_columns
            + (("stamp",) if stamped else ())
            + counters
            + (EXTREME_COLUMNS if extremes else ())
            + (ID_BOUND_COLUMNS if bounded else ())
        )
        assignments = []
        if stamped:
            assignments.append("stamp = excluded.stamp")
        for column in counters:
            total = f"{name}.{column} + excluded.{column}"
            count_column = (sums or {}).get(column)
            if count_column is None:
                assignments.append(f"{column} = {total}")
            else:
                # A float sum that drifted by rounding becomes exactly 0 with its count.
                assignments.append(
                    f"{column} = CASE WHEN {name}.{count_column} + excluded.{count_column} = 0"
                    f" THEN 0 ELSE {total} END"
                )
        # Id bounds and extremes only widen here; a row without them (NULL: only removals,
        # another dimension) keeps the stored ones. Removals that took an extreme away are
        # read again from the raw rows (RollupKind.refresh_extremes). Portable CASE: SQLite's
        # two-argument min() and max() are NULL if either side is.
        widening: tuple[tuple[str, str], ...] = (
            (("min_id", "<="), ("max_id", ">=")) if bounded else ()
        )
        if extremes:
            widening += tuple(
                (column, "<=" if column.endswith("_min") else ">=") for column in EXTREME_COLUMNS
            )
        for column, keeps in widening:
            assignments.append(
                f"{column} = CASE WHEN excluded.{column} IS NULL"
                f" OR {name}.{column} {keeps} excluded.{column}"
                f" THEN {name}.{column} ELSE excluded.{column} END"
            )
        self.update = ", ".join(assignments)


FEEDBACK_ROLLUPS = RollupTable(
    "feedback_rollups",
    CELL_COLUMNS,
    FEEDBACK_COUNTERS,
    stamped=True,
    zero_column="total_count",
    sums={"latency_sum": "latency_count"},
    bounded=True,
    extremes=True,
)
FEEDBACK_LABEL_ROLLUPS = RollupTable(
    "feedback_label_rollups",
    (*CELL_COLUMNS, "label"),
    ("record_count",),
    stamped=False,
    zero_column="record_count",
)
FEEDBACK_HISTOGRAM_ROLLUPS = RollupTable(
    "feedback_histogram_rollups",
    (*CELL_COLUMNS, "metric", "bin"),
    ("record_count",),
    stamped=False,
    zero_column="record_count",
)
INTERACTION_ROLLUPS = RollupTable(
    "interaction_rollups",
    CELL_COLUMNS,
    INTERACTION_COUNTERS,
    stamped=True,
    zero_column="total_count",
    sums={"latency_sum": "latency_count"},
    bounded=True,
    extremes=True,
)
INTERACTION_HISTOGRAM_ROLLUPS = RollupTable(
    "interaction_histogram_rollups",
    (*CELL_COLUMNS, "metric", "bin"),
    ("record_count",),
    stamped=False,
    zero_column="record_count",
)
EVENT_ROLLUPS = RollupTable(
    "event_rollups",
    CELL_COLUMNS,
    EVENT_COUNTERS,
    stamped=True,
    zero_column="total_count",
    bounded=True,
)
EVENT_TYPE_ROLLUPS = RollupTable(
    "event_type_rollups",
    (*CELL_COLUMNS, "event_type"),
    ("record_count",),
    stamped=False,
    zero_column="record_count",
)
KEY_SPANS_TABLE = "rollup_key_spans"


@cache
def _upsert_statement(table: RollupTable, rows: int, dialect: Dialect) -> str:
    mark = "?" if dialect == "sqlite" else "%s"
    row = "(" + ", ".join([mark] * len(table.columns)) + ")"
    return (
        f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES "
        + ", ".join([row] * rows)
        + f" ON CONFLICT ({', '.join(table.key_columns)}) DO UPDATE SET {table.update}"
    )


def _chunks(
    target: SqlTarget, width: int, rows: Sequence[tuple[Any, ...]]
) -> Iterable[Sequence[tuple[Any, ...]]]:
    per_statement = max(1, MAX_PARAMETERS[target.dialect] // width)
    for start in range(0, len(rows), per_statement):
        yield rows[start : start + per_statement]


def _upsert(target: SqlTarget, table: RollupTable, rows: list[tuple[Any, ...]]) -> None:
    """Add the rows' counters to the table, in key order (the lock order on PostgreSQL)."""
    # Whole tuples sort by their key columns first, and keys are unique within a batch.
    rows.sort()
    for chunk in _chunks(target, len(table.columns), rows):
        parameters = tuple(chain.from_iterable(chunk))
        target.execute(_upsert_statement(table, len(chunk), target.dialect), parameters)


def _delete_zeros(target: SqlTarget, table: RollupTable, cells: Sequence[Cell]) -> None:
    """Drop rows of the cells whose count fell to zero (removed records leave nothing behind)."""
    row = "(" + ", ".join([target.mark] * len(CELL_COLUMNS)) + ")"
    for chunk in _chunks(target, len(CELL_COLUMNS), cells):
        parameters = tuple(value for cell in chunk for value in cell)
        target.execute(
            f"DELETE FROM {table.name} WHERE {table.zero_column} = 0 AND"
            f" ({', '.join(CELL_COLUMNS)}) IN (VALUES {', '.join([row] * len(chunk))})",
            parameters,
        )


def _update_spans(target: SqlTarget, spans: Spans) -> None:
    """Widen each key's [first day, last day] to cover the records written."""
    rows = sorted(
        (dimension, key, first, last) for (dimension, key), (first, last) in spans.items()
    )
    table = KEY_SPANS_TABLE
    for chunk in _chunks(target, 4, rows):
        mark = target.mark
        values = ", ".join([f"({mark}, {mark}, {mark}, {mark})"] * len(chunk))
        # The WHERE clause skips the write (and the dirty page) when the span already covers it.
        target.execute(
            f"INSERT INTO {table} (dimension, dimension_key, first_day, last_day) VALUES {values}"
            " ON CONFLICT (dimension, dimension_key) DO UPDATE SET"
            f" first_day = CASE WHEN excluded.first_day < {table}.first_day"
            f" THEN excluded.first_day ELSE {table}.first_day END,"
            f" last_day = CASE WHEN excluded.last_day > {table}.last_day"
            f" THEN excluded.last_day ELSE {table}.last_day END"
            f" WHERE excluded.first_day < {table}.first_day"
            f" OR excluded.last_day > {table}.last_day",
            tuple(value for row in chunk for value in row),
        )


def _new_stamp() -> int:
    """A fresh version for the cells a transaction changes (readers cache cell details by it).

    From the OS, not the random module: anything that seeds `random` (test frameworks do) would
    repeat stamps and let readers take a changed cell for a cached one.
    """
    return secrets.randbits(62)


def _histogram_rows(
    cell: Cell, tally: FeedbackTally | InteractionTally
) -> Iterable[tuple[Any, ...]]:
    latency_bins, tokens_bins = tally.histograms()
    for metric, bins in ((LATENCY_METRIC, latency_bins), (TOKENS_METRIC, tokens_bins)):
        for bin_index, count in bins.items():
            if count:
                yield (*cell, metric, bin_index, count)


def id_bounds(ids_and_times: Iterable[tuple[int, datetime]]) -> dict[Cell, tuple[int, int]]:
    """The (lowest, highest) id of the records of every "all" cell they fall in, at every level."""
    hours: dict[int, list[int]] = {}
    for record_id, moment in ids_and_times:
        seconds = _epoch_seconds(moment)
        hour = seconds - seconds % HOUR_SECONDS
        bounds = hours.get(hour)
        if bounds is None:
            hours[hour] = [record_id, record_id]
        elif record_id < bounds[0]:
            bounds[0] = record_id
        elif record_id > bounds[1]:
            bounds[1] = record_id
    cells: dict[Cell, tuple[int, int]] = {}
    for hour, (low, high) in hours.items():
        for level in DENSE_LEVELS:
            cell = (level, hour if level == HOUR else bucket_start(level, hour), ALL, "")
            known = cells.get(cell)
            cells[cell] = (
                (low, high) if known is None else (min(low, known[0]), max(high, known[1]))
            )
    return cells


def _label_rows(cell: Cell, tally: FeedbackTally) -> Iterable[tuple[Any, ...]]:
    return ((*cell, label, count) for label, count in tally.labels.items() if count)


def _type_rows(cell: Cell, tally: EventTally) -> Iterable[tuple[Any, ...]]:
    if cell[2] not in EVENT_TYPE_BREAKDOWN_DIMENSIONS:
        return ()
    return ((*cell, event_type, count) for event_type, count in tally.types.items() if count)


RowsOf = Callable[[Cell, Any], Iterable[tuple[Any, ...]]]
"""The rows a detailed cell's tally adds to a child table (labels, histogram bins, types)."""


@dataclass(frozen=True, slots=True, eq=False)
class RollupKind:
    """One kind of record as the rollups see it: its tables, and how its records become cells."""

    counters: RollupTable
    children: tuple[tuple[RollupTable, RowsOf], ...]
    """Tables of detailed cells' details, with the rows a tally adds to each."""
    deltas: Callable[[Iterable[Any], int], tuple[dict[Cell, Any], Spans]]
    moment: Callable[[Any], datetime]
    """The time that places a record in its buckets (and its id in the id bounds)."""
    raw_table: str
    time_column: str
    key_columns: Mapping[int, str]
    """Raw column of each detailed dimension other than ALL."""
    metric_columns: tuple[str, ...] = ()
    """Raw column of each histogram metric (METRICS order): where lost extremes are re-read."""

    @property
    def tables(self) -> tuple[RollupTable, ...]:
        """The kind's tables in the order a transaction writes (and locks) them."""
        return (self.counters, *(table for table, _ in self.children))


FEEDBACK_KIND = RollupKind(
    FEEDBACK_ROLLUPS,
    ((FEEDBACK_LABEL_ROLLUPS, _label_rows), (FEEDBACK_HISTOGRAM_ROLLUPS, _histogram_rows)),
    feedback_deltas,
    lambda record: record.create_time,
    raw_table="feedback",
    time_column="create_time",
    key_columns={MODEL: "model", USER: "user_id"},
    metric_columns=("latency_ms", "tokens_used"),
)
INTERACTION_KIND = RollupKind(
    INTERACTION_ROLLUPS,
    ((INTERACTION_HISTOGRAM_ROLLUPS, _histogram_rows),),
    interaction_deltas,
    lambda record: record.occur_time,
    raw_table="interactions",
    time_column="occur_time",
    key_columns={MODEL: "model", USER: "user_id"},
    metric_columns=("latency_ms", "total_tokens"),
)
EVENT_KIND = RollupKind(
    EVENT_ROLLUPS,
    ((EVENT_TYPE_ROLLUPS, _type_rows),),
    event_deltas,
    lambda record: record.event_time,
    raw_table="events",
    time_column="event_time",
    key_columns={EVENT_TYPE: "event_type", USER: "user_id"},
)
ROLLUP_KINDS = (FEEDBACK_KIND, INTERACTION_KIND, EVENT_KIND)
"""Kinds in the order a transaction writes their rollups: with ROLLUP_TABLES, the lock order."""
ROLLUP_TABLES = tuple(table for kind in ROLLUP_KINDS for table in kind.tables)
"""Every rollup table, in the one order every write transaction locks them."""


class RollupChanges:
    """What one write transaction changes in the rollups, written at its end in one global order.

    Replicas on one PostgreSQL database commit concurrently, and two transactions that take the
    same rows in different orders deadlock (one is killed after deadlock_timeout). Writing each
    kind's rollups as soon as its rows were inserted did exactly that: a batch of interactions and
    feedback took the key span of "all" before feedback cells, a feedback-only batch took them
    the other way round. So every write transaction takes its locks in this order:

    1. its raw rows, before any rollup row: interactions; then per voting round the claims on its
       voters (advisory locks in one sorted order, Repository.current_votes), the replaced votes
       (in id order), the new feedback and its history; then events. Apart from votes, only writes
       of the same request id, message id or event id share raw rows; those are taken in batch
       order, so only two such duplicates racing in opposite orders could still deadlock, and
       PostgreSQL then rolls one back for its writer to run again (TransactionRolledBack);
       then the id blocks of its new rows (storage.rows.id_blocks.BlockChanges), sorted by key;
    2. the rollup tables in ROLLUP_TABLES order, each once per transaction with one merged delta
       per cell (every record added and removed, of every voting round), its rows sorted by
       their full key, since a multi-row INSERT ... ON CONFLICT locks rows in VALUES order; a
       table's emptied cells are deleted before the next table is touched;
    3. rollup_key_spans last, once, sorted by (dimension, key).

    SQLite has a single writer and cannot deadlock; it runs the same code.
    """

    def __init__(self) -> None:
        """No changes yet."""
        self._records: dict[RollupKind, tuple[list[Any], list[Any]]] = {}

    def add(self, kind: RollupKind, records: Sequence[Any], sign: int) -> None:
        """Count stored records in (sign 1) or removed ones out (sign -1) when applied."""
        added, removed = self._records.setdefault(kind, ([], []))
        (added if sign > 0 else removed).extend(records)

    def apply(self, target: SqlTarget) -> None:
        """Write every pending change in the order above, then forget them."""
        pending, self._records = self._records, {}
        if not any(added or removed for added, removed in pending.values()):
            return
        stamp = _new_stamp()
        spans: Spans = {}
        for kind in ROLLUP_KINDS:
            added, removed = pending.get(kind, ([], []))
            if added or removed:
                _apply_kind(target, kind, added, removed, stamp, spans)
        _update_spans(target, spans)


def _apply_kind(
    target: SqlTarget,
    kind: RollupKind,
    added: Sequence[Any],
    removed: Sequence[Any],
    stamp: int,
    spans: Spans,
) -> None:
    """Upsert one kind's tables in their order, widening `spans` by the records added."""
    cells, added_spans = kind.deltas(added, 1)
    removed_cells, _ = kind.deltas(removed, -1)  # removals never narrow a span
    for cell, tally in removed_cells.items():
        existing = cells.get(cell)
        if existing is None:
            cells[cell] = tally
        else:
            existing.merge(tally)
    _widen(spans, added_spans)
    # Removals leave the bounds as they are: a superset stays a superset.
    bounds = id_bounds((record.id, kind.moment(record)) for record in added)
    emptied = sorted(removed_cells)
    if kind.counters.extremes:
        rows = [
            (*cell, stamp, *tally.counts, *tally.extremes.values, *bounds.get(cell, NO_ID_BOUNDS))
            for cell, tally in cells.items()
        ]
    else:
        rows = [
            (*cell, stamp, *tally.counts, *bounds.get(cell, NO_ID_BOUNDS))
            for cell, tally in cells.items()
        ]
    _upsert(target, kind.counters, rows)
    _delete_zeros(target, kind.counters, emptied)
    if kind.counters.extremes:
        _refresh_extremes(target, kind, removed_cells)
    detailed = [(cell, tally) for cell, tally in cells.items() if cell[2] in DETAILED_DIMENSIONS]
    emptied_detailed = [cell for cell in emptied if cell[2] in DETAILED_DIMENSIONS]
    for table, rows_of in kind.children:
        rows = [row for cell, tally in detailed for row in rows_of(cell, tally)]
        if rows:
            _upsert(target, table, rows)
        _delete_zeros(target, table, emptied_detailed)


def _refresh_extremes(target: SqlTarget, kind: RollupKind, removed: Mapping[Cell, Any]) -> None:
    """Re-read from the raw rows the extremes of the cells whose removals may have taken one.

    Extremes cannot be subtracted. A removed value can only have been a stored extreme if it
    is at or beyond it, so the statement's WHERE leaves every other cell alone at the cost of a
    key lookup; a cell that lost its least or greatest value is re-read with its own index range
    (a TOTAL cell of "all" scans the table, which takes removing its very extreme value).
    The cells' rows were upserted already in this transaction, so no new lock is taken.
    """
    table = kind.counters
    mark = target.mark
    aggregates = ", ".join(
        f"{function}({column})" for column in kind.metric_columns for function in ("min", "max")
    )
    touched = " OR ".join(
        f"{column} {'>=' if column.endswith('_min') else '<='} {mark}" for column in EXTREME_COLUMNS
    )
    for cell, tally in sorted(removed.items()):
        level, start, dimension, key = cell
        if tally.removed_extremes is None or dimension not in DETAILED_DIMENSIONS:
            continue
        removed_values = tally.removed_extremes.values
        if all(value is None for value in removed_values):
            continue
        where: list[str] = []
        parameters: list[Any] = []
        if level != TOTAL:
            where.append(f"{kind.time_column} >= {mark} AND {kind.time_column} < {mark}")
            end = next_bucket_start(level, start)
            parameters += [time_parameter(target.dialect, start * 1_000_000)]
            parameters += [time_parameter(target.dialect, end * 1_000_000)]
        if dimension != ALL:
            column = kind.key_columns[dimension]
            if key:
                where.append(f"{column} = {mark}")
                parameters.append(key)
            else:
                where.append(f"({column} IS NULL OR {column} = '')")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        target.execute(
            f"UPDATE {table.name} SET ({', '.join(EXTREME_COLUMNS)}) ="
            f" (SELECT {aggregates} FROM {kind.raw_table}{clause})"
            f" WHERE level = {mark} AND bucket_start = {mark} AND dimension = {mark}"
            f" AND dimension_key = {mark} AND ({touched})",
            (*parameters, *cell, *removed_values),
        )


def _widen(spans: Spans, more: Spans) -> None:
    """Grow each key's span in `spans` to cover its span in `more`."""
    for key, (first, last) in more.items():
        known = spans.get(key)
        spans[key] = (first, last) if known is None else (min(first, known[0]), max(last, known[1]))
