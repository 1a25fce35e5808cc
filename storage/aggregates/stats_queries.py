"""GetStats from rollup cells: exact answers that never scan the raw tables.

A time range [start, end) is cut into the coarsest whole cells of the scope's key that fit (see
_decompose): months, days and hours for the dense dimensions (all, model, event type), months for a
user. Only the partial finest buckets at unaligned ends are read from the raw rows: for the dense
dimensions at most two partial hours, through the time index; for a user at most two partial
months of that user's rows, through the user index. Filters that no rollup covers alone (a
message, a conversation, or two of conversation / user / model) read the rows of the narrowest
filter through its index: a message or a conversation has few rows; so does a user, usually. The
same holds for groups under a filter on another key (say, models of one user's feedback), and for
the details of the top conversations of a group-by-conversation (their cells count, nothing more).

Cells are read with their stamp; a cell's labels, event types and histogram bins are cached per
process under (cell, stamp) and fetched again only after a write changed the cell, so a year of
daily buckets costs one query per kind once the past days are cached.

Whole answers read from cells alone (one rollup key per kind, no groups, no raw rows) are cached
per query too, with what they were made of: the stamp of each kind's total cell, a fingerprint of
the stamps of the cells read, and the key spans that bounded the plans. A later call checks those
in one or two statements and, when nothing changed, hands out the same answer objects again (the
response mapping then reuses its serialized buckets as well).
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from storage.aggregates.rollups import (
    ALL,
    CONVERSATION,
    DAY,
    DAY_SECONDS,
    DETAILED_DIMENSIONS,
    EVENT_LEVELS,
    EVENT_ROLLUPS,
    EVENT_TYPE,
    EVENT_TYPE_ROLLUPS,
    EXTREME_COLUMNS,
    FEEDBACK_HISTOGRAM_ROLLUPS,
    FEEDBACK_LABEL_ROLLUPS,
    FEEDBACK_LEVELS,
    FEEDBACK_ROLLUPS,
    HOUR,
    HOUR_SECONDS,
    INTERACTION_HISTOGRAM_ROLLUPS,
    INTERACTION_LEVELS,
    INTERACTION_ROLLUPS,
    KEY_SPANS_TABLE,
    LATENCY_METRIC,
    METRICS,
    MODEL,
    MONTH,
    TOTAL,
    USER,
    WEEK_SECONDS,
    Dialect,
    EventTally,
    Execute,
    Extremes,
    FeedbackTally,
    Histogram,
    InteractionTally,
    RollupTable,
    bucket_start,
    ceil_to,
    epoch_microseconds,
    feedback_contribution,
    from_epoch_microseconds,
    interaction_contribution,
    month_start,
    next_bucket_start,
    next_month_start,
    time_parameter,
)
from storage.records import (
    EventStats,
    FeedbackStats,
    GroupBy,
    InteractionStats,
    Percentiles,
    StatsAnswer,
    StatsBucket,
    StatsGroup,
    StatsPeriod,
    StatsQuery,
    StatsSet,
    TimeBucket,
)

_SECOND = 1_000_000
"""Microseconds per second: ranges are in epoch microseconds, bucket starts in epoch seconds."""

Interval = tuple[int | None, int | None]
"""[low, high) in epoch microseconds; None is open."""

BucketKey = tuple[int, int]
"""(level, bucket_start)."""

Plan = tuple[list[BucketKey], list[Interval]]
"""The cells and raw ranges that cover one interval."""


# ---- time buckets of a response ----


def bucket_bounds(
    bucket: TimeBucket, start: datetime, end: datetime, limit: int
) -> list[datetime] | None:
    """Boundaries of the buckets covering [start, end), the first at start rounded down.

    n buckets have n + 1 boundaries; a bucket exists for every boundary before `end`. Returns None
    when there would be more than `limit` buckets.
    """
    bounds = _bucket_bounds(bucket, start, end, limit)
    return None if bounds is None else list(bounds)


@functools.lru_cache(maxsize=64)
def _bucket_bounds(
    bucket: TimeBucket, start: datetime, end: datetime, limit: int
) -> tuple[datetime, ...] | None:
    # Both the rules and the reader ask for a year of daily bounds on every call.
    low, high = epoch_microseconds(start), epoch_microseconds(end)
    first = _floor_bucket(bucket, low // _SECOND)
    if bucket == "month":
        months = _month_index(high // _SECOND) - _month_index(first)
        if month_start(high // _SECOND - (high // _SECOND) % DAY_SECONDS) * _SECOND < high:
            months += 1
        count = max(0, months)
    else:
        size = _BUCKET_SECONDS[bucket] * _SECOND
        count = max(0, -(-(high - first * _SECOND) // size))
    if count > limit:
        return None
    bounds = [first]
    for _ in range(count):
        bounds.append(_next_bucket(bucket, bounds[-1]))
    return tuple(from_epoch_microseconds(seconds * _SECOND) for seconds in bounds)


_BUCKET_SECONDS = {"hour": HOUR_SECONDS, "day": DAY_SECONDS, "week": WEEK_SECONDS}
_BUCKET_LEVELS: Mapping[str | None, int] = {"hour": HOUR, "day": DAY, "month": MONTH}


def _floor_bucket(bucket: TimeBucket, seconds: int) -> int:
    if bucket == "hour":
        return bucket_start(HOUR, seconds)
    day = bucket_start(DAY, seconds)
    if bucket == "day":
        return day
    if bucket == "week":
        # 1970-01-01 was a Thursday, three days after an ISO week's Monday.
        return day - ((day // DAY_SECONDS + 3) % 7) * DAY_SECONDS
    return month_start(day)


def _next_bucket(bucket: TimeBucket, seconds: int) -> int:
    if bucket == "month":
        return next_month_start(seconds)
    return seconds + _BUCKET_SECONDS[bucket]


def _month_index(seconds: int) -> int:
    moment = from_epoch_microseconds(seconds * _SECOND)
    return moment.year * 12 + moment.month - 1


# ---- decomposition of a range into cells ----


def _decompose(
    low: int, high: int, levels: Sequence[int]
) -> tuple[list[BucketKey], list[Interval]]:
    """The cells and raw ranges that exactly cover [low, high) microseconds.

    Whole buckets of the finest level come from cells (whole coarser buckets from coarser cells
    where they fit); the partial finest buckets at each unaligned end, at most two, are left to
    the raw rows.
    """
    if low >= high:
        return [], []
    finite = [level for level in levels if level != TOTAL]
    finest = finite[0]
    first = ceil_to(finest, -(-low // _SECOND))
    last = bucket_start(finest, high // _SECOND)
    if first >= last:
        return [], [(low, high)]
    raw: list[Interval] = []
    if low < first * _SECOND:
        raw.append((low, first * _SECOND))
    if last * _SECOND < high:
        raw.append((last * _SECOND, high))
    return _cover(first, last, finite, 0), raw


def _single_cell(low: int, high: int, levels: Sequence[int]) -> BucketKey | None:
    """The one cell that is exactly [low, high), if any: the common case of an aligned bucket."""
    if low % _SECOND or high % _SECOND:
        return None
    start = low // _SECOND
    for level in levels:
        if (
            level != TOTAL
            and bucket_start(level, start) == start
            and next_bucket_start(level, start) * _SECOND == high
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


# ---- kinds ----


@dataclass(frozen=True, slots=True)
class _Kind:
    """How one kind of record is stored raw and rolled up."""

    name: str
    raw_table: str
    time_column: str
    counters: RollupTable
    parts: RollupTable | None
    """Labels (feedback) or event types (events): cell children counted per name."""
    histograms: RollupTable | None
    levels: Mapping[int, tuple[int, ...]]
    key_columns: Mapping[int, str]
    """Raw column of each dimension other than ALL."""
    measure_columns: tuple[str, ...]
    """SELECT expressions after the time and key columns, fed to the kind's tally."""
    float_counters: frozenset[int] = frozenset()
    """Positions of the float sums among the counters."""


FEEDBACK = _Kind(
    name="feedback",
    raw_table="feedback",
    time_column="create_time",
    counters=FEEDBACK_ROLLUPS,
    parts=FEEDBACK_LABEL_ROLLUPS,
    histograms=FEEDBACK_HISTOGRAM_ROLLUPS,
    levels=FEEDBACK_LEVELS,
    key_columns={MODEL: "model", CONVERSATION: "conversation_id", USER: "user_id"},
    measure_columns=(
        "score",
        "thumb_up",
        "label",
        "CASE WHEN text <> '' THEN 1 ELSE 0 END",
        "latency_ms",
        "tokens_used",
    ),
    float_counters=frozenset({10}),
)
INTERACTIONS = _Kind(
    name="interactions",
    raw_table="interactions",
    time_column="occur_time",
    counters=INTERACTION_ROLLUPS,
    parts=None,
    histograms=INTERACTION_HISTOGRAM_ROLLUPS,
    levels=INTERACTION_LEVELS,
    key_columns={MODEL: "model", CONVERSATION: "conversation_id", USER: "user_id"},
    measure_columns=("latency_ms", "total_tokens"),
    float_counters=frozenset({2}),
)
EVENTS = _Kind(
    name="events",
    raw_table="events",
    time_column="event_time",
    counters=EVENT_ROLLUPS,
    parts=EVENT_TYPE_ROLLUPS,
    histograms=None,
    levels=EVENT_LEVELS,
    key_columns={EVENT_TYPE: "event_type", USER: "user_id"},
    measure_columns=("event_type",),
)

GROUP_DIMENSIONS: Mapping[GroupBy, int] = {
    "model": MODEL,
    "event_type": EVENT_TYPE,
    "conversation": CONVERSATION,
    "user": USER,
}


@dataclass(frozen=True, slots=True)
class _RollupScope:
    """Records of one key of one dimension (ALL: every record), optionally one event type."""

    dimension: int
    key: str
    event_type: str | None = None


@dataclass(frozen=True, slots=True)
class _RawScope:
    """Records matching equality filters, read from the raw table (narrowest filter first)."""

    conditions: tuple[tuple[str, str], ...]


Scope = _RollupScope | _RawScope

_NARROW_FIRST = ("message_id", "conversation_id", "user_id", "model")


def _scope(kind: _Kind, query: StatsQuery) -> Scope:
    """Where one kind's aggregates for the query's filters come from."""
    if kind is EVENTS:
        if query.user_id is not None:
            return _RollupScope(USER, query.user_id, query.event_type)
        if query.event_type is not None:
            return _RollupScope(EVENT_TYPE, query.event_type)
        return _RollupScope(ALL, "")
    filters = {
        "message_id": query.message_id,
        "conversation_id": query.conversation_id,
        "user_id": query.user_id,
        "model": query.model,
    }
    given = [(column, value) for column, value in filters.items() if value is not None]
    if not given:
        return _RollupScope(ALL, "")
    if len(given) == 1 and given[0][0] in ("user_id", "model"):
        column, value = given[0]
        return _RollupScope(USER if column == "user_id" else MODEL, value)
    given.sort(key=lambda condition: _NARROW_FIRST.index(condition[0]))
    return _RawScope(tuple(given))


# ---- cells as read ----


class _Cell:
    """One rollup cell as read: counters, parts (labels or event types) and histograms."""

    __slots__ = ("counts", "histograms", "parts", "stats")

    def __init__(
        self, counts: tuple[Any, ...], parts: dict[str, int], histograms: tuple[Histogram, ...]
    ) -> None:
        self.counts = counts
        self.parts = parts
        self.histograms = histograms
        self.stats: Any = None
        """The cell's stats, computed on first use (an aligned bucket is exactly one cell)."""

    def weight(self) -> int:
        """Roughly how many values the cell holds, for the cache's budget."""
        return 8 + len(self.parts) + sum(len(h.counts) + len(h.others) for h in self.histograms)


Fingerprint = tuple[int, int, int]
"""Count of a set of cells, sum of the low 32 bits and sum of the high bits of their stamps.

Every write gives the cells it touches one fresh random 62-bit stamp, so the sums move with any
change of any cell (a new cell moves the count): as reliable as comparing stamps one by one, and
the database adds them up without handing a row to Python.
"""

_LOW_BITS = (1 << 32) - 1


def _fingerprint(stamps: Iterable[int]) -> Fingerprint:
    """What _CellRead.sql answers for cells with these stamps."""
    listed = list(stamps)
    return (
        len(listed),
        sum(stamp & _LOW_BITS for stamp in listed),
        sum(stamp >> 32 for stamp in listed),
    )


@dataclass(frozen=True, slots=True)
class _CellRead:
    """The cells one kind's answer was made of: a query for their fingerprint, and its value."""

    sql: str
    parameters: tuple[Any, ...]
    fingerprint: Fingerprint


@dataclass(frozen=True, slots=True)
class _Guard:
    """The total cell of a dense key and its stamp (None: no such cell) when an answer was read."""

    table: str
    dimension: int
    key: str
    stamp: int | None


@dataclass(frozen=True, slots=True)
class _KindAnswer:
    """One kind's stats per interval of a query, valid while its cells' fingerprints hold."""

    reads: tuple[_CellRead, ...]
    results: list[Any]
    guard: _Guard | None
    """Unchanged, it vouches for every cell of the key; changed, the reads' fingerprints decide."""


@dataclass(frozen=True, slots=True)
class _CachedAnswer:
    """A whole answer read from cells and spans alone (no raw rows), with what it was made of."""

    kinds: Mapping[str, _KindAnswer]
    spans: Mapping[tuple[int, str], tuple[int, int] | None]
    """The key spans that bounded open or months-only ranges: a change moves the plans."""
    answer: StatsAnswer
    weight: int
    """Intervals times kinds: what the cache's budget counts."""


class CellCache:
    """Cells by (table, level, bucket, dimension, key), valid while their stamp is unchanged.

    A stamp is a random 62-bit version written with every change of a cell (and a fresh one by
    every rebuild), so equal stamps mean equal contents. The oldest cells go first once the cached
    values exceed `max_weight` (insertion order: reordering on every hit cost more than it saved).
    Shared by the threads that serve reads.
    """

    def __init__(self, max_weight: int = 4_000_000, max_answer_weight: int = 50_000) -> None:
        """A cache holding about `max_weight` counters and bins (8 bytes each in arrays).

        It also keeps whole answers of the queries read only from cells, up to
        `max_answer_weight` intervals (buckets) in all; their stats objects are mostly the
        cells' own, so an answer costs little beyond its lists.
        """
        self._entries: OrderedDict[tuple[Any, ...], tuple[int, _Cell]] = OrderedDict()
        self._weight = 0
        self._max_weight = max_weight
        self._answers: OrderedDict[StatsQuery, _CachedAnswer] = OrderedDict()
        self._answer_weight = 0
        self._max_answer_weight = max_answer_weight
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], stamp: int) -> _Cell | None:
        """The cached cell if it is still at `stamp`."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != stamp:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def get_many(self, wanted: Sequence[tuple[tuple[Any, ...], int]]) -> list[_Cell | None]:
        """get() of many (key, stamp) pairs under one lock."""
        entries = self._entries
        found: list[_Cell | None] = []
        with self._lock:
            for key, stamp in wanted:
                entry = entries.get(key)
                found.append(entry[1] if entry is not None and entry[0] == stamp else None)
        return found

    def answer(self, query: StatsQuery) -> _CachedAnswer | None:
        """The answer last computed for `query`, to be checked against its cells' fingerprints."""
        with self._lock:
            return self._answers.get(query)

    def put_answer(self, query: StatsQuery, answer: _CachedAnswer) -> None:
        """Remember an answer; the oldest go first beyond `max_answer_weight` intervals."""
        with self._lock:
            previous = self._answers.pop(query, None)
            if previous is not None:
                self._answer_weight -= previous.weight
            self._answers[query] = answer
            self._answer_weight += answer.weight
            while self._answer_weight > self._max_answer_weight and self._answers:
                _, evicted = self._answers.popitem(last=False)
                self._answer_weight -= evicted.weight

    def put(self, key: tuple[Any, ...], stamp: int, cell: _Cell) -> None:
        """Remember a cell at `stamp`."""
        weight = cell.weight()
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._weight -= previous[1].weight()
            self._entries[key] = (stamp, cell)
            self._weight += weight
            while self._weight > self._max_weight and self._entries:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._weight -= evicted.weight()


# ---- accumulating an interval ----


class _Sum:
    """Cells and raw tallies of one interval (or group) added up."""

    __slots__ = ("cells", "raw")

    def __init__(self) -> None:
        self.cells: list[_Cell] = []
        self.raw = False
        """Whether raw rows were added (their stats are never cached)."""

    def add_cell(self, cell: _Cell) -> None:
        self.cells.append(cell)

    def add_tally(self, tally: FeedbackTally | InteractionTally | EventTally) -> None:
        counts = list(tally.counts)
        parts = (
            tally.labels
            if isinstance(tally, FeedbackTally)
            else (tally.types if isinstance(tally, EventTally) else {})
        )
        histograms: tuple[Histogram, ...] = ()
        if not isinstance(tally, EventTally):
            histograms = tuple(
                tally.extremes.histogram(metric, bins.items())
                for metric, bins in zip(METRICS, tally.histograms(), strict=True)
            )
        self.cells.append(_Cell(tuple(counts), dict(parts), histograms))
        self.raw = True

    def stats(self, kind: _Kind, event_type: str | None) -> Any:
        """The kind's stats record over everything added."""
        cells = self.cells
        if event_type is None and len(cells) == 1:
            cell = cells[0]
            if cell.stats is None:
                cell.stats = _stats_of(kind, cell.counts, cell.parts, cell.histograms)
            return cell.stats
        if not cells:
            # One shared object per kind: empty buckets then hit the response's bucket cache.
            return _EMPTY_STATS[kind.name]
        if self.raw:
            return _sum_stats(kind, cells, event_type)
        # Cached cells are immutable and replaced when they change, so their identities name the
        # sum (a year is twelve month cells; merging their histograms is the costly part).
        key = (kind.name, event_type, *map(id, cells))
        with _sums_lock:
            cached = _sums.get(key)
        if cached is not None and all(a is b for a, b in zip(cached[0], cells, strict=True)):
            return cached[1]
        stats = _sum_stats(kind, cells, event_type)
        with _sums_lock:
            _sums[key] = (tuple(cells), stats)
            if len(_sums) > _MAX_CACHED_SUMS:
                _sums.popitem(last=False)
        return stats


_MAX_CACHED_SUMS = 4096
_sums: OrderedDict[tuple[Any, ...], tuple[tuple[_Cell, ...], Any]] = OrderedDict()
_sums_lock = threading.Lock()


def _sum_stats(kind: _Kind, cells: Sequence[_Cell], event_type: str | None) -> Any:
    """The kind's stats over several cells (cached ones or tallies of raw rows)."""
    columns = zip(*(cell.counts for cell in cells), strict=True)
    # Float sums (latency) are added with fsum, which does not depend on the cells' order.
    counts: Sequence[Any] = [
        math.fsum(column) if index in kind.float_counters else sum(column)
        for index, column in enumerate(columns)
    ]
    parts: dict[str, int] = {}
    for cell in cells:
        for name, count in cell.parts.items():
            parts[name] = parts.get(name, 0) + count
    histograms: tuple[Histogram, ...] = ()
    if kind.histograms:
        merged = [Histogram(), Histogram()]
        for cell in cells:
            for target, histogram in zip(merged, cell.histograms, strict=True):
                target.merge(histogram)
        histograms = tuple(merged)
    if event_type is not None:
        count = parts.get(event_type, 0)
        counts = (count,)
        parts = {event_type: count} if count else {}
    return _stats_of(kind, counts, parts, histograms)


def _average(total: float, count: int) -> float | None:
    return float(total) / count if count else None


def _percentiles(histograms: Sequence[Histogram], metric: int) -> Percentiles:
    if not histograms:
        return Percentiles()
    values = histograms[metric].percentiles()
    if values is None:
        return Percentiles()
    p50, p90, p95, p99 = values
    return Percentiles(p50=p50, p90=p90, p95=p95, p99=p99)


def _stats_of(
    kind: _Kind,
    counts: Sequence[Any] | None,
    parts: Mapping[str, int],
    histograms: Sequence[Histogram],
) -> Any:
    """FeedbackStats, InteractionStats or EventStats from summed counters."""
    if kind is EVENTS:
        if counts is None:
            return EventStats()
        return EventStats(
            total_count=counts[0], type_counts={name: n for name, n in parts.items() if n}
        )
    latency = _percentiles(histograms, LATENCY_METRIC)
    tokens = _percentiles(histograms, 1)
    if kind is INTERACTIONS:
        if counts is None:
            return InteractionStats()
        total, latency_count, latency_sum, tokens_count, tokens_sum = counts
        return InteractionStats(
            total_count=total,
            avg_latency_ms=_average(latency_sum, latency_count),
            avg_total_tokens=_average(tokens_sum, tokens_count),
            latency_ms_percentiles=latency,
            total_tokens_percentiles=tokens,
        )
    if counts is None:
        return FeedbackStats()
    scores = {value: counts[value] for value in range(1, 6)}
    scored = sum(scores.values())
    return FeedbackStats(
        total_count=counts[0],
        scored_count=scored,
        # From the exact integer counts, like the full-scan query.
        avg_score=_average(sum(value * n for value, n in scores.items()), scored),
        score_counts=scores,
        thumbs_up_count=counts[6],
        thumbs_down_count=counts[7],
        label_counts={name: n for name, n in parts.items() if n},
        avg_latency_ms=_average(counts[10], counts[9]),
        avg_tokens=_average(counts[12], counts[11]),
        with_text_count=counts[8],
        latency_ms_percentiles=latency,
        tokens_percentiles=tokens,
    )


_EMPTY_STATS: Mapping[str, Any] = {
    "feedback": FeedbackStats(),
    "interactions": InteractionStats(),
    "events": EventStats(),
}
"""The stats of no records, per kind; never changed by anyone, like every stats record."""


# ---- the reader ----


class StatsReader:
    """Answers StatsQuery in the caller's read transaction (one snapshot for every query)."""

    def __init__(self, execute: Execute, dialect: Dialect, cache: CellCache) -> None:
        """Read through `execute` (driver-level SQL) and cache cells in `cache`."""
        self._execute = execute
        self._dialect = dialect
        self._mark = "?" if dialect == "sqlite" else "%s"
        self._cache = cache
        self._spans: dict[tuple[int, str], tuple[int, int] | None] = {}
        self._plans: dict[tuple[Any, ...], tuple[list[BucketKey], list[Interval]]] = {}
        self._interval_plans: dict[
            tuple[Any, ...], tuple[list[Plan], dict[int, list[int]], list[Interval]]
        ] = {}
        self._whole: dict[Interval, BucketKey] = {}
        """Intervals known to be exactly one bucket of a level (the response's whole buckets)."""
        self._reads: list[_CellRead] | None = None
        """While answering a kind that may be cached: the cells it read."""
        self._outside_cells = False
        """Whether raw rows were read: such answers are not cached."""

    def read(self, query: StatsQuery) -> StatsAnswer:
        """Aggregate everything the query asks for."""
        kinds = self._kinds(query)
        cacheable = self._cacheable(query, kinds)
        cached = self._cache.answer(query) if cacheable else None
        unchanged = self._unchanged_kinds(query, cached) if cached is not None else set()
        if cached is not None and len(unchanged) == len(cached.kinds) == len(kinds):
            # Every cell it was made of is unchanged: the same answer, down to its objects.
            return cached.answer
        low = None if query.start_time is None else epoch_microseconds(query.start_time)
        high = None if query.end_time is None else epoch_microseconds(query.end_time)
        intervals: list[Interval] = [(low, high)]
        bounds: list[datetime] = []
        if query.bucket is not None:
            assert query.start_time is not None
            assert query.end_time is not None
            bounds = bucket_bounds(query.bucket, query.start_time, query.end_time, 1 << 30) or []
            edges = [epoch_microseconds(bound) for bound in bounds]
            assert low is not None
            assert high is not None
            level = _BUCKET_LEVELS.get(query.bucket)
            for start, end in itertools.pairwise(edges):
                if level is not None and low <= start and end <= high:
                    # A whole bucket of a rollup level: its plan is its own cell.
                    self._whole[(start, end)] = (level, start // _SECOND)
                intervals.append((max(start, low), min(end, high)))
        previous: Interval | None = None
        if query.compare_previous:
            assert low is not None
            assert high is not None
            previous = (low - (high - low), low)
            intervals.append(previous)

        results: dict[str, list[Any]] = {}
        kind_answers: dict[str, _KindAnswer] = {}
        for kind in kinds:
            if cached is not None and kind.name in unchanged:
                kind_answers[kind.name] = cached.kinds[kind.name]
                results[kind.name] = cached.kinds[kind.name].results
                continue
            self._reads = [] if cacheable else None
            results[kind.name] = self._interval_stats(kind, _scope(kind, query), intervals)
            if self._reads is not None:
                kind_answers[kind.name] = _KindAnswer(
                    tuple(self._reads), results[kind.name], self._guard(kind, query)
                )
            self._reads = None

        absent = [None] * len(intervals)
        per_kind = (
            results.get("feedback", absent),
            results.get("interactions", absent),
            results.get("events", absent),
        )

        def stats_set(index: int) -> StatsSet:
            return StatsSet(per_kind[0][index], per_kind[1][index], per_kind[2][index])

        sets = [StatsSet(*kinds_stats) for kinds_stats in zip(*per_kind, strict=True)]
        buckets = [
            StatsBucket(start, end, stats)
            for (start, end), stats in zip(itertools.pairwise(bounds), sets[1:], strict=False)
        ]
        previous_period = None
        if previous is not None:
            assert query.start_time is not None
            assert query.end_time is not None
            previous_period = StatsPeriod(
                query.start_time - (query.end_time - query.start_time),
                query.start_time,
                stats_set(len(intervals) - 1),
            )
        groups = []
        if query.group_by is not None:
            overall = {name: stats[0] for name, stats in results.items()}
            groups = self._groups(query, kinds, (low, high), overall)
        answer = StatsAnswer(
            overall=stats_set(0), buckets=buckets, groups=groups, previous=previous_period
        )
        if cacheable and not self._outside_cells:
            # Kinds taken from the cached answer were planned with the same spans (else none is).
            spans = {**(cached.spans if cached is not None else {}), **self._spans}
            self._cache.put_answer(
                query,
                _CachedAnswer(kind_answers, spans, answer, len(intervals) * len(kinds) + 1),
            )
        return answer

    def _guard(self, kind: _Kind, query: StatsQuery) -> _Guard | None:
        """The total cell of the kind's key, if the key keeps one (dense keys do)."""
        scope = _scope(kind, query)
        assert isinstance(scope, _RollupScope)
        if TOTAL not in kind.levels[scope.dimension]:
            return None
        table = kind.counters.name
        rows = self._query(
            f"SELECT stamp FROM {table} WHERE level = {TOTAL} AND bucket_start = 0"
            f" AND dimension = {scope.dimension} AND dimension_key = {self._mark}",
            (scope.key,),
        )
        return _Guard(table, scope.dimension, scope.key, int(rows[0][0]) if rows else None)

    @staticmethod
    def _cacheable(query: StatsQuery, kinds: Sequence[_Kind]) -> bool:
        """Whether the answer may come from cells (and spans) alone: one rollup key, no groups.

        Unaligned ends of dense keys still read raw rows, which read() notices (_outside_cells)
        before caching.
        """
        if query.group_by is not None:
            return False
        return all(isinstance(_scope(kind, query), _RollupScope) for kind in kinds)

    def _unchanged_kinds(self, query: StatsQuery, cached: _CachedAnswer) -> set[str]:
        """The kinds of a cached answer whose cells all still have their fingerprints.

        None of them once a span it was planned with has changed. A kind whose key's total cell
        kept its stamp is unchanged without looking further: every write to a dense key's cells
        writes its total cell too, with the same fresh stamp (as does a rebuild). Other kinds'
        cells are fingerprinted, all in one more statement; where they hold, the answer is cached
        again with the new total stamps, so the next call stops at the first statement.
        """
        selects: list[str] = []
        parameters: list[Any] = []
        spans = list(cached.spans.items())
        for index, ((dimension, _), _) in enumerate(spans):
            selects.append(
                f"SELECT {index}, count(*), coalesce(max(first_day), 0),"
                f" coalesce(max(last_day), 0) FROM {KEY_SPANS_TABLE}"
                f" WHERE dimension = {dimension} AND dimension_key = {self._mark}"
            )
            parameters.append(spans[index][0][1])
        guarded = [
            (name, kind_answer)
            for name, kind_answer in cached.kinds.items()
            if kind_answer.guard is not None
        ]
        for index, (_, kind_answer) in enumerate(guarded):
            guard = kind_answer.guard
            assert guard is not None
            selects.append(
                f"SELECT {len(spans) + index}, count(*), coalesce(max(stamp), 0), 0"
                f" FROM {guard.table} WHERE level = {TOTAL} AND bucket_start = 0"
                f" AND dimension = {guard.dimension} AND dimension_key = {self._mark}"
            )
            parameters.append(guard.key)
        guards: dict[str, int | None] = {}
        if selects:
            for row in self._query(" UNION ALL ".join(selects), parameters):
                index = int(row[0])
                if index < len(spans):
                    now = (int(row[2]), int(row[3])) if int(row[1]) else None
                    if now != spans[index][1]:
                        return set()
                else:
                    name = guarded[index - len(spans)][0]
                    guards[name] = int(row[2]) if int(row[1]) else None
        unchanged = {
            name
            for name, kind_answer in cached.kinds.items()
            if kind_answer.guard is not None
            and kind_answer.guard.stamp is not None
            and guards.get(name) == kind_answer.guard.stamp
        }
        reads = [
            (name, read)
            for name, kind_answer in cached.kinds.items()
            if name not in unchanged
            for read in kind_answer.reads
        ]
        selects, parameters = [], []
        for index, (_, read) in enumerate(reads):
            selects.append(
                f"SELECT {index}, count(*), coalesce(sum(stamp & {_LOW_BITS}), 0),"
                f" coalesce(sum(stamp >> 32), 0) FROM ({read.sql}) AS cells"
            )
            parameters += read.parameters
        changed = set()
        if selects:
            for row in self._query(" UNION ALL ".join(selects), parameters):
                name, read = reads[int(row[0])]
                if (int(row[1]), int(row[2]), int(row[3])) != read.fingerprint:
                    changed.add(name)
        checked = {name for name in cached.kinds if name not in unchanged and name not in changed}
        refreshed = {
            name: replace(kind_answer, guard=replace(kind_answer.guard, stamp=guards.get(name)))
            for name, kind_answer in cached.kinds.items()
            if name in checked and kind_answer.guard is not None
        }
        if refreshed and not changed:
            self._cache.put_answer(query, replace(cached, kinds={**cached.kinds, **refreshed}))
        return unchanged | checked

    @staticmethod
    def _kinds(query: StatsQuery) -> list[_Kind]:
        kinds = []
        if query.feedback_applies:
            kinds += [FEEDBACK, INTERACTIONS]
        if query.events_apply:
            kinds.append(EVENTS)
        return kinds

    # -- intervals --

    def _interval_stats(
        self, kind: _Kind, scope: Scope, intervals: Sequence[Interval]
    ) -> list[Any]:
        if isinstance(scope, _RawScope):
            return self._raw_interval_stats(kind, scope, intervals)
        event_type = scope.event_type
        results = []
        for total in self._rollup_sums(kind, scope, intervals):
            if isinstance(total, _Cell):
                # An interval that is exactly one cell: the cell's own (cached) stats.
                if total.stats is None:
                    total.stats = _stats_of(kind, total.counts, total.parts, total.histograms)
                results.append(total.stats)
            else:
                results.append(total.stats(kind, event_type))
        return results

    def _raw_interval_stats(
        self, kind: _Kind, scope: _RawScope, intervals: Sequence[Interval]
    ) -> list[Any]:
        rows = self._raw_rows(kind, scope.conditions, _union(intervals), narrow=True)
        times = [row[0] for row in rows]
        results = []
        for low, high in intervals:
            first = 0 if low is None else bisect_left(times, low)
            last = len(rows) if high is None else bisect_left(times, high)
            tally = _tally(kind, rows[first:last])
            total = _Sum()
            if tally is not None:
                total.add_tally(tally)
            results.append(total.stats(kind, None))
        return results

    def _rollup_sums(
        self, kind: _Kind, scope: _RollupScope, intervals: Sequence[Interval]
    ) -> list[_Sum | _Cell]:
        """Per interval, the cells and raw edge rows of one key, added up.

        An interval that is exactly one present cell, with no event type to pick out of it, is
        the cell itself; one with no cells and no rows is an empty _Sum.
        """
        levels = kind.levels[scope.dimension]
        plans, wanted, raw_ranges = self._plans_of(intervals, levels, scope.dimension, scope.key)
        cells = self._cells(kind, scope.dimension, [scope.key], wanted)
        conditions: tuple[tuple[str, str], ...] = ()
        if scope.dimension != ALL:
            conditions = ((kind.key_columns[scope.dimension], scope.key),)
        if scope.event_type is not None:
            conditions += (("event_type", scope.event_type),)
        # A user's partial months are that user's rows (user index); partial hours of the dense
        # dimensions are every row of the hour (time index).
        sparse = HOUR not in levels
        rows = self._raw_rows(kind, conditions, raw_ranges, narrow=sparse) if raw_ranges else []
        times = [row[0] for row in rows]
        key = scope.key
        whole_cell = scope.event_type is None
        sums: list[_Sum | _Cell] = []
        for plan_cells, edges in plans:
            if whole_cell and not edges and len(plan_cells) == 1:
                level, start = plan_cells[0]
                cell = cells.get((level, start, key))
                sums.append(cell if cell is not None else _Sum())
                continue
            total = _Sum()
            found = total.cells
            for level, start in plan_cells:
                cell = cells.get((level, start, key))
                if cell is not None:
                    found.append(cell)
            for low, high in edges:
                assert low is not None
                assert high is not None
                tally = _tally(kind, rows[bisect_left(times, low) : bisect_left(times, high)])
                if tally is not None:
                    total.add_tally(tally)
            sums.append(total)
        return sums

    def _plans_of(
        self, intervals: Sequence[Interval], levels: Sequence[int], dimension: int, key: str
    ) -> tuple[list[Plan], dict[int, list[int]], list[Interval]]:
        """The plans of a list of intervals, the cells they need by level, and the raw ranges.

        Shared by the kinds with the same levels and key (all three, for unfiltered stats).
        """
        memo = (tuple(intervals), tuple(levels), dimension, key)
        found = self._interval_plans.get(memo)
        if found is None:
            whole = self._whole
            plans: list[Plan] = [
                ([cell], [])
                if (cell := whole.get(interval)) is not None and cell[0] in levels
                else self._plan(interval, levels, dimension, key)
                for interval in intervals
            ]
            wanted = _by_level({cell for cells, _ in plans for cell in cells})
            raw_ranges = _union([edge for _, edges in plans for edge in edges])
            found = self._interval_plans[memo] = (plans, wanted, raw_ranges)
        return found

    def _plan(
        self, interval: Interval, levels: Sequence[int], dimension: int, key: str
    ) -> tuple[list[BucketKey], list[Interval]]:
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
    ) -> tuple[list[BucketKey], list[Interval]]:
        low, high = interval
        if low is None and high is None and TOTAL in levels:
            return [(TOTAL, 0)], []
        if low is not None and high is not None and HOUR in levels:
            single = _single_cell(low, high, levels)
            if single is not None:
                return [single], []
        if low is None or high is None or HOUR not in levels:
            # Only dense keys keep a span; a user's records lie within the span of all records.
            span = self._span(dimension, key) if HOUR in levels else self._span(ALL, "")
            if span is None:
                return [], []
            finest = levels[0]
            first = bucket_start(finest, span[0]) * _SECOND
            last = ceil_to(finest, span[1] + DAY_SECONDS) * _SECOND
            low = first if low is None else max(low, first)
            high = last if high is None else min(high, last)
        return _decompose(low, high, levels)

    def _span(self, dimension: int, key: str) -> tuple[int, int] | None:
        if (dimension, key) not in self._spans:
            rows = self._query(
                f"SELECT first_day, last_day FROM {KEY_SPANS_TABLE}"
                f" WHERE dimension = {dimension} AND dimension_key = {self._mark}",
                (key,),
            )
            self._spans[(dimension, key)] = (rows[0][0], rows[0][1]) if rows else None
        return self._spans[(dimension, key)]

    # -- groups --

    def _groups(
        self,
        query: StatsQuery,
        kinds: Sequence[_Kind],
        interval: Interval,
        overall: Mapping[str, Any],
    ) -> list[StatsGroup]:
        assert query.group_by is not None
        dimension = GROUP_DIMENSIONS[query.group_by]
        group_kinds = [kind for kind in kinds if dimension in kind.levels]
        per_kind: dict[str, dict[str, Any]] = {}
        counts: dict[str, int] = {}
        pending: list[tuple[_Kind, _RollupScope]] = []
        for kind in group_kinds:
            scope = _scope(kind, query)
            if isinstance(scope, _RollupScope) and scope.dimension == ALL:
                pending.append((kind, scope))
                continue
            stats = self._group_stats_by_filter(
                kind, scope, dimension, interval, overall[kind.name]
            )
            per_kind[kind.name] = stats
            for key, kind_stats in stats.items():
                counts[key] = counts.get(key, 0) + kind_stats.total_count
        ranked_pending = {kind.name: self._rank(kind, dimension, interval) for kind, _ in pending}
        for ranking in ranked_pending.values():
            for key, count in ranking[0].items():
                counts[key] = counts.get(key, 0) + count
        ranked = sorted(
            ((key, count) for key, count in counts.items() if count > 0),
            key=lambda item: (-item[1], item[0]),
        )[: query.top_n]
        top = [key for key, _ in ranked]
        for kind, _ in pending:
            per_kind[kind.name] = self._group_stats(
                kind, dimension, top, interval, ranked_pending[kind.name][1]
            )
        groups = []
        for key in top:
            sets: dict[str, Any] = {}
            for kind in kinds:
                if kind in group_kinds:
                    sets[kind.name] = per_kind[kind.name].get(key) or _stats_of(kind, None, {}, ())
            groups.append(
                StatsGroup(
                    key,
                    StatsSet(
                        feedback=sets.get("feedback"),
                        interactions=sets.get("interactions"),
                        events=sets.get("events"),
                    ),
                )
            )
        return groups

    def _group_stats_by_filter(
        self, kind: _Kind, scope: Scope, dimension: int, interval: Interval, overall: Any
    ) -> dict[str, Any]:
        """Groups of a filtered selection: derived from the totals, or from the filter's rows."""
        if kind is EVENTS and dimension == EVENT_TYPE:
            return {
                name: EventStats(total_count=count, type_counts={name: count})
                for name, count in overall.type_counts.items()
            }
        if isinstance(scope, _RollupScope) and scope.dimension == dimension:
            return {scope.key: overall} if overall.total_count else {}
        if isinstance(scope, _RollupScope):
            conditions: tuple[tuple[str, str], ...] = (
                (kind.key_columns[scope.dimension], scope.key),
            )
            if scope.event_type is not None:
                conditions += (("event_type", scope.event_type),)
        else:
            conditions = scope.conditions
        rows = self._raw_rows(kind, conditions, [interval], narrow=True)
        position = _key_position(kind, dimension)
        by_key: dict[str, list[Sequence[Any]]] = {}
        for row in rows:
            by_key.setdefault(row[position] or "", []).append(row)
        result = {}
        for key, key_rows in by_key.items():
            total = _Sum()
            tally = _tally(kind, key_rows)
            if tally is not None:
                total.add_tally(tally)
            result[key] = total.stats(kind, None)
        return result

    def _rank(
        self, kind: _Kind, dimension: int, interval: Interval
    ) -> tuple[dict[str, int], tuple[list[BucketKey], dict[str, list[Sequence[Any]]]]]:
        """Record counts per key of the dimension over the interval, and what was read for it."""
        # Open ends reach as far as any record (the span of ALL).
        cells, edges = self._plan(interval, kind.levels[dimension], ALL, "")
        counts: dict[str, int] = {}
        for level, starts in _by_level(cells).items():
            sql, parameters = self._in("bucket_start", starts)
            for key, count in self._query(
                f"SELECT dimension_key, sum(total_count) FROM {kind.counters.name}"
                f" WHERE level = {level} AND {sql} AND dimension = {dimension}"
                " GROUP BY dimension_key",
                parameters,
            ):
                counts[key] = counts.get(key, 0) + int(count)
        rows_by_key: dict[str, list[Sequence[Any]]] = {}
        if edges:
            position = _key_position(kind, dimension)
            for row in self._raw_rows(kind, (), _union(edges), narrow=False):
                key = row[position] or ""
                rows_by_key.setdefault(key, []).append(row)
                counts[key] = counts.get(key, 0) + 1
        return counts, (cells, rows_by_key)

    def _group_stats(
        self,
        kind: _Kind,
        dimension: int,
        keys: Sequence[str],
        interval: Interval,
        read: tuple[list[BucketKey], dict[str, list[Sequence[Any]]]],
    ) -> dict[str, Any]:
        """Full stats of the top keys from the same cells and edge rows the ranking used."""
        if not keys:
            return {}
        if dimension not in DETAILED_DIMENSIONS:
            # Conversation cells only count; the top conversations' rows are few.
            return self._group_stats_from_rows(kind, dimension, keys, interval)
        plan_cells, rows_by_key = read
        cells = self._cells(kind, dimension, keys, _by_level(plan_cells))
        result = {}
        for key in keys:
            total = _Sum()
            for level, start in plan_cells:
                cell = cells.get((level, start, key))
                if cell is not None:
                    total.add_cell(cell)
            tally = _tally(kind, rows_by_key.get(key, []))
            if tally is not None:
                total.add_tally(tally)
            result[key] = total.stats(kind, None)
        return result

    def _group_stats_from_rows(
        self, kind: _Kind, dimension: int, keys: Sequence[str], interval: Interval
    ) -> dict[str, Any]:
        column = kind.key_columns[dimension]
        rows = self._raw_rows(kind, (), [interval], narrow=True, key_in=(column, keys))
        position = _key_position(kind, dimension)
        by_key: dict[str, list[Sequence[Any]]] = {}
        for row in rows:
            by_key.setdefault(row[position] or "", []).append(row)
        result = {}
        for key in keys:
            total = _Sum()
            tally = _tally(kind, by_key.get(key, []))
            if tally is not None:
                total.add_tally(tally)
            result[key] = total.stats(kind, None)
        return result

    # -- SQL --

    def _cells(
        self, kind: _Kind, dimension: int, keys: Sequence[str], wanted: Mapping[int, list[int]]
    ) -> dict[tuple[int, int, str], _Cell]:
        """The cells of the keys at the wanted buckets that hold records, with their details.

        Stamps first: a cell cached at its stamp needs nothing more, and fetching the counters
        of a year of cells costs three times as much as their stamps. A few cells (a user's
        months) come with their counters at once: a second query would cost more.
        """
        if not wanted or not keys:
            return {}
        table = kind.counters
        stamps_sql, stamps_parameters = self._cell_select(table, "stamp", dimension, keys, wanted)
        extremes_count = len(EXTREME_COLUMNS) if table.extremes else 0
        counters = ", ".join(table.counters + (EXTREME_COLUMNS if table.extremes else ()))
        small = len(keys) * sum(map(len, wanted.values())) <= _FEW_CELLS
        stamps = self._query(
            *(
                self._cell_select(table, f"stamp, {counters}", dimension, keys, wanted)
                if small
                else (stamps_sql, stamps_parameters)
            )
        )
        if self._reads is not None:
            self._reads.append(
                _CellRead(
                    stamps_sql,
                    tuple(stamps_parameters),
                    _fingerprint(int(row[3]) for row in stamps),
                )
            )
        cached = self._cache.get_many(
            [((table.name, row[0], row[1], dimension, row[2]), row[3]) for row in stamps]
        )
        found: dict[tuple[int, int, str], _Cell] = {}
        stale: dict[int, list[int]] = {}
        for row, cell in zip(stamps, cached, strict=True):
            if cell is not None:
                found[(row[0], row[1], row[2])] = cell
            else:
                stale.setdefault(row[0], []).append(row[1])
        if not stale:
            return found
        missing: dict[tuple[int, int, str], tuple[int, tuple[Any, ...]]] = {
            (row[0], row[1], row[2]): (row[3], tuple(row[4:]))
            for row in (
                stamps
                if small
                else self._query(
                    *self._cell_select(table, f"stamp, {counters}", dimension, keys, stale)
                )
            )
            if not small or (row[0], row[1], row[2]) not in found
        }
        details = self._details(kind, dimension, missing)
        for cell_key, (stamp, values) in missing.items():
            parts, histograms = details.get(cell_key, ({}, {}))
            extremes = Extremes()
            if extremes_count:
                counts = values[:-extremes_count]
                extremes.values = list(values[-extremes_count:])
            else:
                counts = values
            cell = _Cell(
                counts,
                parts,
                tuple(
                    extremes.histogram(metric, histograms.get(metric, {}).items())
                    for metric in (METRICS if kind.histograms else ())
                ),
            )
            self._cache.put((table.name, *cell_key[:2], dimension, cell_key[2]), stamp, cell)
            found[cell_key] = cell
        return found

    def _cell_select(
        self,
        table: RollupTable,
        columns: str,
        dimension: int,
        keys: Sequence[str],
        wanted: Mapping[int, list[int]],
    ) -> tuple[str, list[Any]]:
        """SELECT level, bucket_start, dimension_key, `columns` of the wanted cells of the keys."""
        selects, parameters = [], []
        key_sql, key_parameters = self._in("dimension_key", keys)
        for level, starts in wanted.items():
            bucket_sql, bucket_parameters = self._in("bucket_start", starts)
            selects.append(
                f"SELECT level, bucket_start, dimension_key, {columns} FROM {table.name}"
                f" WHERE level = {level} AND {bucket_sql} AND dimension = {dimension}"
                f" AND {key_sql}"
            )
            parameters += [*bucket_parameters, *key_parameters]
        return " UNION ALL ".join(selects), parameters

    def _details(
        self,
        kind: _Kind,
        dimension: int,
        cells: Mapping[tuple[int, int, str], tuple[int, tuple[Any, ...]]],
    ) -> dict[tuple[int, int, str], tuple[dict[str, int], dict[int, dict[int, int]]]]:
        """Parts and histogram bins of the cells, read in one query per child table."""
        by_level: dict[int, set[int]] = {}
        keys: set[str] = set()
        for level, start, key in cells:
            by_level.setdefault(level, set()).add(start)
            keys.add(key)
        details: dict[tuple[int, int, str], tuple[dict[str, int], dict[int, dict[int, int]]]] = {}

        def entry(
            cell_key: tuple[int, int, str],
        ) -> tuple[dict[str, int], dict[int, dict[int, int]]]:
            found = details.get(cell_key)
            if found is None:
                found = details[cell_key] = ({}, {})
            return found

        key_sql, key_parameters = self._in("dimension_key", sorted(keys))
        # Parts (a name) and bins (metric, bin) in one statement, padded to the same columns.
        selects, parameters = [], []
        for child, columns in ((kind.parts, "{}, 0, 0"), (kind.histograms, "NULL, {}")):
            if child is None or (child is EVENT_TYPE_ROLLUPS and dimension == EVENT_TYPE):
                continue
            names = columns.format(", ".join(child.key_columns[4:]))
            for level, starts in by_level.items():
                bucket_sql, bucket_parameters = self._in("bucket_start", sorted(starts))
                selects.append(
                    f"SELECT level, bucket_start, dimension_key, {names}, record_count"
                    f" FROM {child.name} WHERE level = {level} AND {bucket_sql}"
                    f" AND dimension = {dimension} AND {key_sql}"
                )
                parameters += [*bucket_parameters, *key_parameters]
        rows = self._query(" UNION ALL ".join(selects), tuple(parameters)) if selects else []
        for row in rows:
            cell_key = (row[0], row[1], row[2])
            if cell_key not in cells:
                continue
            parts, histograms = entry(cell_key)
            if row[3] is not None:
                parts[row[3]] = row[6]
            else:
                histograms.setdefault(row[4], {})[row[5]] = row[6]
        if kind is EVENTS and dimension == EVENT_TYPE:
            for cell_key, (_, cell_counts) in cells.items():
                entry(cell_key)[0][cell_key[2]] = cell_counts[0]
        return details

    def _raw_rows(
        self,
        kind: _Kind,
        conditions: Sequence[tuple[str, str]],
        ranges: Sequence[Interval],
        *,
        narrow: bool,
        key_in: tuple[str, Sequence[str]] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Raw rows matching the conditions in the ranges, sorted by time (epoch microseconds).

        `narrow` lets the database pick the conditions' index (a message, conversation or user
        filter); otherwise SQLite is kept on the time index, whose ranges are partial hours.
        """
        self._outside_cells = True
        key_columns = [kind.key_columns.get(dimension, "NULL") for dimension in _KEY_ORDER]
        selected = ", ".join([kind.time_column, *key_columns, *kind.measure_columns])
        where: list[str] = []
        parameters: list[Any] = []
        for index, (column, value) in enumerate(conditions):
            # SQLite uses no index for "+column": only the time index (or the first, narrowest
            # condition when narrow) drives the search.
            unary = "+" if self._dialect == "sqlite" and (index > 0 or not narrow) else ""
            where.append(f"{unary}{column} = {self._mark}")
            parameters.append(value)
        if key_in is not None:
            # "" stands for records without a key; the index finds the others.
            column, keys = key_in
            named = [key for key in keys if key]
            matches = []
            if named:
                in_sql, in_parameters = self._in(column, named)
                matches.append(in_sql)
                parameters += in_parameters
            if len(named) < len(keys):
                matches.append(f"{column} IS NULL")
            where.append(f"({' OR '.join(matches)})")
        if not ranges:
            return []
        selects, all_parameters = [], []
        for low, high in ranges:
            bounds, bound_parameters = list(where), list(parameters)
            if low is not None:
                bounds.append(f"{kind.time_column} >= {self._mark}")
                bound_parameters.append(self._time_parameter(low))
            if high is not None:
                bounds.append(f"{kind.time_column} < {self._mark}")
                bound_parameters.append(self._time_parameter(high))
            clause = f" WHERE {' AND '.join(bounds)}" if bounds else ""
            selects.append(f"SELECT {selected} FROM {kind.raw_table}{clause}")
            all_parameters += bound_parameters
        rows = [
            (self._time_value(row[0]), *row[1:])
            for row in self._query(" UNION ALL ".join(selects), tuple(all_parameters))
        ]
        rows.sort(key=lambda row: row[0])
        return rows

    def _time_parameter(self, microseconds: int) -> Any:
        return time_parameter(self._dialect, microseconds)

    def _time_value(self, value: Any) -> int:
        if isinstance(value, str):
            return epoch_microseconds(datetime.fromisoformat(value).replace(tzinfo=UTC))
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return epoch_microseconds(value)

    def _in(self, column: str, values: Iterable[Any]) -> tuple[str, list[Any]]:
        listed = list(values)
        if self._dialect == "sqlite":
            return f"{column} IN ({', '.join('?' * len(listed))})", listed
        return f"{column} = ANY(%s)", [listed]

    def _query(self, sql: str, parameters: Sequence[Any]) -> Sequence[Sequence[Any]]:
        return self._execute(sql, tuple(parameters))


_FEW_CELLS = 32
"""Cells read with their counters in one query rather than stamps first."""

_KEY_ORDER = (MODEL, CONVERSATION, USER, EVENT_TYPE)
"""Key columns in raw rows, after the time: row[1 + index]."""


def _key_position(kind: _Kind, dimension: int) -> int:
    del kind
    return 1 + _KEY_ORDER.index(dimension)


_MEASURES_START = 1 + len(_KEY_ORDER)


def _tally(
    kind: _Kind, rows: Sequence[Sequence[Any]]
) -> FeedbackTally | InteractionTally | EventTally | None:
    """Raw rows (time, keys, measures) added up the way the write path adds records."""
    if not rows:
        return None
    start = _MEASURES_START
    if kind is FEEDBACK:
        feedback = FeedbackTally()
        for row in rows:
            score, thumb_up, label, has_text, latency, tokens = row[start : start + 6]
            thumb = None if thumb_up is None else bool(thumb_up)
            feedback.add(feedback_contribution(score, thumb, label, has_text, latency, tokens), 1)
        return feedback
    if kind is INTERACTIONS:
        interactions = InteractionTally()
        for row in rows:
            latency, tokens = row[start : start + 2]
            interactions.add(interaction_contribution(latency, tokens), 1)
        return interactions
    events = EventTally()
    for row in rows:
        events.add(row[start], 1)
    return events


def _by_level(cells: Iterable[BucketKey]) -> dict[int, list[int]]:
    levels: dict[int, list[int]] = {}
    for level, start in cells:
        levels.setdefault(level, []).append(start)
    return levels


def _union(intervals: Iterable[Interval]) -> list[Interval]:
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
