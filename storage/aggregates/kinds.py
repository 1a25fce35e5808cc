"""Each record kind as the aggregates see it, declared once: facts, dimensions, counters, tables.

Everything else in this package (tallies, the write path, planning, reading, the rebuild) is
written once over these declarations. Adding a measure is one `Measure` here plus a migration
that adds its columns; adding a counted flag is one `Flag`.

Levels are UTC hours, days, calendar months and "total" (storage.calendar). Dense dimensions (all,
model, event type: a handful of keys shared by every batch) keep every level with every detail
(part counts and histograms). Sparse ones get a new key for almost every record, so a finer level
would hold about one cell per record, as many rows as the raw table and no faster to read than its
index: users keep months only, with every detail; conversations keep month counters only (to rank
conversations in GetStats groups), and a conversation's own stats read its few rows through its
index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from storage.aggregates.histogram import histogram_bin
from storage.aggregates.tables import CELL_COLUMNS, RollupTable, child_table
from storage.calendar import DAY, HOUR, MONTH, TOTAL
from storage.records import (
    EventStats,
    FeedbackRecord,
    FeedbackStats,
    InteractionStats,
    Label,
    Percentiles,
    Score,
    Thumb,
)

ALL, MODEL, CONVERSATION, USER, EVENT_TYPE = 0, 1, 2, 3, 4
"""Rollup dimensions; ALL has the single key ""."""

DENSE_LEVELS = (HOUR, DAY, MONTH, TOTAL)
SPARSE_LEVELS = (MONTH,)


@dataclass(frozen=True, slots=True)
class Dimension:
    """One way to key a kind's cells: by nothing (ALL) or by the value of one raw column."""

    id: int
    column: str | None
    """Raw column (and record attribute) of the key; None for ALL. NULL keys are ""."""
    levels: tuple[int, ...]
    detailed: bool = True
    """Whether cells keep part counts, histograms and extremes; else counters only."""

    @property
    def dense(self) -> bool:
        """Whether cells exist at every level (and the key keeps a span of days)."""
        return HOUR in self.levels


@dataclass(frozen=True, slots=True)
class Fact:
    """A value of a record that the aggregates count: its SQL over a raw row, named `name`."""

    name: str
    sql: str = ""
    """SELECT expression over the raw table; "" when it is the column `name` itself."""

    @property
    def select(self) -> str:
        """The SELECT expression of the fact."""
        return self.sql or self.name


@dataclass(frozen=True, slots=True)
class Flag:
    """A counter of the records whose fact `fact` equals `value` (each counts once)."""

    column: str
    fact: str
    value: int | bool


@dataclass(frozen=True, slots=True)
class Measure:
    """A numeric fact kept as count, sum, exact extremes and a histogram (its metric number is
    its position among the kind's measures)."""

    name: str
    """Prefix of its columns: name_count, name_sum, name_min, name_max."""
    fact: str
    float_sum: bool = False
    """Whether the sum is a float (added with fsum, reset to exactly 0 with its count)."""

    @property
    def counters(self) -> tuple[str, str]:
        """(count column, sum column)."""
        return (f"{self.name}_count", f"{self.name}_sum")

    @property
    def extremes(self) -> tuple[str, str]:
        """(least value column, greatest value column)."""
        return (f"{self.name}_min", f"{self.name}_max")


@dataclass(frozen=True, slots=True)
class Part:
    """Names counted per cell in a child table (labels of feedback, types of events)."""

    table: str
    fact: str
    """The fact holding the name (None: the record adds to no name)."""


Contribution = tuple[list[int], str | None, list[tuple[int, float, int]]]
"""What one record adds to a cell: the counter slots it counts in besides the total, its part
name (or None), and (measure index, value, histogram bin) of each measure it has."""

Summary = tuple[dict[str, Any], dict[str, int], tuple[Percentiles, ...]]
"""Counters by column, part counts and percentiles per measure: what a kind's stats are made of."""


@dataclass(frozen=True, eq=False)
class AggregateKind:
    """One kind of record: where its rows are, what it counts, how its cells are keyed and kept."""

    name: str
    raw_table: str
    time_column: str
    """Raw column (and record attribute) placing a record in its buckets."""
    dimensions: tuple[Dimension, ...]
    facts: tuple[Fact, ...]
    record_facts: Callable[[Any], tuple[Any, ...]]
    """The facts of a stored record, in `facts` order: what its raw row's facts read back."""
    flags: tuple[Flag, ...]
    measures: tuple[Measure, ...]
    counters_table: str
    part: Part | None
    histogram_table: str | None
    filters: tuple[str, ...]
    """StatsQuery fields that filter this kind (each the raw column of its name), narrowest
    first: the order in which the raw rows of several filters are looked up."""
    stats: Callable[[Summary], Any]
    """The kind's stats record from its summed counters."""
    empty: Any
    """The stats of no records (one shared, never changed object)."""
    part_dimension: int | None = None
    """The dimension whose key is the part name itself (an event type cell is one type)."""
    counters: RollupTable = field(init=False)
    part_rollups: RollupTable | None = field(init=False)
    histograms: RollupTable | None = field(init=False)
    counter_columns: tuple[str, ...] = field(init=False)
    """total_count, the flags, then each measure's count and sum: the order of Tally.counts."""
    extreme_columns: tuple[str, ...] = field(init=False)
    float_slots: frozenset[int] = field(init=False)
    """Positions of the float sums among the counters."""
    zero_counts: tuple[Any, ...] = field(init=False)
    """Counters of no records: 0, and 0.0 for float sums."""
    levels: dict[int, tuple[int, ...]] = field(init=False)
    dimension_of: dict[int, Dimension] = field(init=False)
    _flag_slots: tuple[tuple[int, dict[Any, int]], ...] = field(init=False)
    _part_position: int | None = field(init=False)
    _measure_positions: tuple[tuple[int, int], ...] = field(init=False)

    def __post_init__(self) -> None:
        names = [fact.name for fact in self.facts]
        columns = ("total_count", *(flag.column for flag in self.flags))
        columns += tuple(column for measure in self.measures for column in measure.counters)
        extremes = tuple(column for measure in self.measures for column in measure.extremes)
        slots: dict[str, dict[Any, int]] = {}
        for slot, flag in enumerate(self.flags, start=1):
            slots.setdefault(flag.fact, {})[flag.value] = slot
        set_ = object.__setattr__
        set_(self, "counter_columns", columns)
        set_(self, "extreme_columns", extremes)
        set_(
            self,
            "float_slots",
            frozenset(
                columns.index(measure.counters[1]) for measure in self.measures if measure.float_sum
            ),
        )
        set_(
            self,
            "zero_counts",
            tuple(0.0 if slot in self.float_slots else 0 for slot in range(len(columns))),
        )
        set_(self, "levels", {dimension.id: dimension.levels for dimension in self.dimensions})
        set_(self, "dimension_of", {dimension.id: dimension for dimension in self.dimensions})
        set_(
            self,
            "_flag_slots",
            tuple((names.index(fact), values) for fact, values in slots.items()),
        )
        set_(self, "_part_position", None if self.part is None else names.index(self.part.fact))
        set_(
            self,
            "_measure_positions",
            tuple(enumerate(names.index(m.fact) for m in self.measures)),
        )
        set_(
            self,
            "counters",
            RollupTable(
                self.counters_table,
                CELL_COLUMNS,
                columns,
                stamped=True,
                zero_column="total_count",
                sums={m.counters[1]: m.counters[0] for m in self.measures if m.float_sum},
                extremes=extremes,
            ),
        )
        set_(
            self,
            "part_rollups",
            None if self.part is None else child_table(self.part.table, self.part.fact),
        )
        set_(
            self,
            "histograms",
            None
            if self.histogram_table is None
            else child_table(self.histogram_table, "metric", "bin"),
        )

    @property
    def tables(self) -> tuple[RollupTable, ...]:
        """The kind's tables in the order a transaction writes (and locks) them."""
        return tuple(
            table for table in (self.counters, self.part_rollups, self.histograms) if table
        )

    def contribution(self, facts: Sequence[Any]) -> Contribution:
        """What a record with these facts adds to each of its cells."""
        # Loops rather than generators: this runs once per record written or read raw.
        slots = []
        for position, values in self._flag_slots:
            slot = values.get(facts[position])
            if slot is not None:
                slots.append(slot)
        measured = []
        for index, position in self._measure_positions:
            value = facts[position]
            if value is not None:
                measured.append((index, value, histogram_bin(value)))
        part = None if self._part_position is None else facts[self._part_position]
        return slots, part, measured

    def keeps_parts(self, dimension: int) -> bool:
        """Whether the dimension's cells count parts in the part table."""
        return (
            self.part is not None
            and self.dimension_of[dimension].detailed
            and dimension != self.part_dimension
        )


# ---- the three kinds ----


def _feedback_facts(record: FeedbackRecord) -> tuple[Any, ...]:
    rating = record.rating
    score = rating.value if type(rating) is Score else None
    thumb_up = rating.up if type(rating) is Thumb else None
    label = rating.name if type(rating) is Label else None
    return (score, thumb_up, label, bool(record.text), record.latency_ms, record.tokens_used)


def _average(total: float, count: int) -> float | None:
    return float(total) / count if count else None


def _feedback_stats(summary: Summary) -> FeedbackStats:
    counts, labels, (latency, tokens) = summary
    scores = {value: counts[f"score{value}_count"] for value in range(1, 6)}
    scored = sum(scores.values())
    return FeedbackStats(
        total_count=counts["total_count"],
        scored_count=scored,
        # From the exact integer counts, like a full scan would.
        avg_score=_average(sum(value * n for value, n in scores.items()), scored),
        score_counts=scores,
        thumbs_up_count=counts["thumbs_up_count"],
        thumbs_down_count=counts["thumbs_down_count"],
        label_counts={name: n for name, n in labels.items() if n},
        avg_latency_ms=_average(counts["latency_sum"], counts["latency_count"]),
        avg_tokens=_average(counts["tokens_sum"], counts["tokens_count"]),
        with_text_count=counts["with_text_count"],
        latency_ms_percentiles=latency,
        tokens_percentiles=tokens,
    )


def _interaction_stats(summary: Summary) -> InteractionStats:
    counts, _, (latency, tokens) = summary
    return InteractionStats(
        total_count=counts["total_count"],
        avg_latency_ms=_average(counts["latency_sum"], counts["latency_count"]),
        avg_total_tokens=_average(counts["tokens_sum"], counts["tokens_count"]),
        latency_ms_percentiles=latency,
        total_tokens_percentiles=tokens,
    )


def _event_stats(summary: Summary) -> EventStats:
    counts, types, _ = summary
    return EventStats(
        total_count=counts["total_count"], type_counts={name: n for name, n in types.items() if n}
    )


_KEYED_BY_MODEL_AND_USER = (
    Dimension(ALL, None, DENSE_LEVELS),
    Dimension(MODEL, "model", DENSE_LEVELS),
    Dimension(CONVERSATION, "conversation_id", SPARSE_LEVELS, detailed=False),
    Dimension(USER, "user_id", SPARSE_LEVELS),
)
_MESSAGE_FILTERS = ("message_id", "conversation_id", "user_id", "model")

FEEDBACK = AggregateKind(
    name="feedback",
    raw_table="feedback",
    time_column="create_time",
    dimensions=_KEYED_BY_MODEL_AND_USER,
    facts=(
        Fact("score"),
        Fact("thumb_up"),
        Fact("label"),
        Fact("has_text", "CASE WHEN text <> '' THEN 1 ELSE 0 END"),
        Fact("latency_ms"),
        Fact("tokens_used"),
    ),
    record_facts=_feedback_facts,
    flags=(
        *(Flag(f"score{value}_count", "score", value) for value in range(1, 6)),
        Flag("thumbs_up_count", "thumb_up", True),
        Flag("thumbs_down_count", "thumb_up", False),
        Flag("with_text_count", "has_text", 1),
    ),
    measures=(Measure("latency", "latency_ms", float_sum=True), Measure("tokens", "tokens_used")),
    counters_table="feedback_rollups",
    part=Part("feedback_label_rollups", "label"),
    histogram_table="feedback_histogram_rollups",
    filters=_MESSAGE_FILTERS,
    stats=_feedback_stats,
    empty=FeedbackStats(),
)
INTERACTIONS = AggregateKind(
    name="interactions",
    raw_table="interactions",
    time_column="occur_time",
    dimensions=_KEYED_BY_MODEL_AND_USER,
    facts=(Fact("latency_ms"), Fact("total_tokens")),
    record_facts=lambda record: (record.latency_ms, record.total_tokens),
    flags=(),
    measures=(Measure("latency", "latency_ms", float_sum=True), Measure("tokens", "total_tokens")),
    counters_table="interaction_rollups",
    part=None,
    histogram_table="interaction_histogram_rollups",
    filters=_MESSAGE_FILTERS,
    stats=_interaction_stats,
    empty=InteractionStats(),
)
EVENTS = AggregateKind(
    name="events",
    raw_table="events",
    time_column="event_time",
    dimensions=(
        Dimension(ALL, None, DENSE_LEVELS),
        Dimension(EVENT_TYPE, "event_type", DENSE_LEVELS),
        Dimension(USER, "user_id", SPARSE_LEVELS),
    ),
    facts=(Fact("event_type"),),
    record_facts=lambda record: (record.event_type,),
    flags=(),
    measures=(),
    counters_table="event_rollups",
    part=Part("event_type_rollups", "event_type"),
    histogram_table=None,
    filters=("user_id", "event_type"),
    stats=_event_stats,
    empty=EventStats(),
    part_dimension=EVENT_TYPE,
)

KINDS = (FEEDBACK, INTERACTIONS, EVENTS)
"""Kinds in the order a transaction writes their rollups: with ROLLUP_TABLES, the lock order."""
ROLLUP_TABLES = tuple(table for kind in KINDS for table in kind.tables)
"""Every rollup table, in the one order every write transaction locks them."""
