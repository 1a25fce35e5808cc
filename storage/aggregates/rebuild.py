"""Recompute every rollup from the raw tables with INSERT ... SELECT ... GROUP BY.

Used by migration 0004 (backfill), Storage.rebuild_rollups() after bulk loads that bypass the
service, and `feedback-server rebuild-rollups`. Each raw table is grouped once per cell shape: by
(hour, model) or (hour, event type) for the dense dimensions, whose "all" cells and coarser levels
are then summed from those cells, and by (month, user) and (month, conversation) for the sparse
ones. Histogram bins use the write path's own function: a registered Python function on SQLite, the
same IEEE operations (ln, then a division by the same double) on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from storage.aggregates.rollups import (
    _LOG_GROWTH,
    _NEGATIVE_BASE,
    ALL,
    CONVERSATION,
    DAY,
    DETAILED_DIMENSIONS,
    EVENT_TYPE,
    EXTREME_COLUMNS,
    FEEDBACK_KIND,
    HOUR,
    INTERACTION_KIND,
    KEY_SPANS_TABLE,
    LATENCY_METRIC,
    MODEL,
    MONTH,
    TOKENS_METRIC,
    TOTAL,
    USER,
    ZERO_BIN,
    Dialect,
    RollupTable,
    _new_stamp,
    histogram_bin,
)
from storage.aggregates.rollups import EVENT_ROLLUPS as EVENTS
from storage.aggregates.rollups import EVENT_TYPE_ROLLUPS as EVENT_TYPES
from storage.aggregates.rollups import FEEDBACK_HISTOGRAM_ROLLUPS as FEEDBACK_HISTOGRAMS
from storage.aggregates.rollups import FEEDBACK_LABEL_ROLLUPS as FEEDBACK_LABELS
from storage.aggregates.rollups import FEEDBACK_ROLLUPS as FEEDBACK
from storage.aggregates.rollups import INTERACTION_HISTOGRAM_ROLLUPS as INTERACTION_HISTOGRAMS
from storage.aggregates.rollups import INTERACTION_ROLLUPS as INTERACTIONS

RunSql = Callable[[str], None]
"""Runs one statement without parameters in the caller's transaction."""

SQLITE_BIN_FUNCTION = "rollup_histogram_bin"


def register_sqlite_functions(connection: sqlite3.Connection) -> None:
    """Give a sqlite3 connection the histogram bin function the rebuild statements call."""
    connection.create_function(SQLITE_BIN_FUNCTION, 1, histogram_bin, deterministic=True)


@dataclass(frozen=True, slots=True)
class _Sql:
    """Dialect-specific expressions."""

    dialect: Dialect

    def raw_bucket(self, level: int, column: str) -> str:
        """Epoch seconds of the hour or month of a raw time column."""
        if self.dialect == "sqlite":
            # Stored as fixed-width text "YYYY-MM-DD HH:MM:SS.ffffff" (UTC).
            text = (
                f"substr({column}, 1, 13) || ':00:00'"
                if level == HOUR
                else (f"substr({column}, 1, 7) || '-01'")
            )
            return f"CAST(strftime('%s', {text}) AS INTEGER)"
        unit = "hour" if level == HOUR else "month"
        return (
            f"CAST(extract(epoch FROM date_trunc('{unit}', {column} AT TIME ZONE 'UTC')) AS BIGINT)"
        )

    def bucket(self, level: int, seconds: str) -> str:
        """Epoch seconds of the day, month or total bucket holding epoch seconds `seconds`."""
        if level == DAY:
            # SQL % truncates towards zero; this floors, also before 1970.
            return f"({seconds}) - ((({seconds}) % 86400) + 86400) % 86400"
        if level == MONTH:
            if self.dialect == "sqlite":
                return f"CAST(strftime('%s', {seconds}, 'unixepoch', 'start of month') AS INTEGER)"
            return (
                "CAST(extract(epoch FROM date_trunc('month',"
                f" to_timestamp({seconds}) AT TIME ZONE 'UTC')) AS BIGINT)"
            )
        assert level == TOTAL
        return "0"

    def histogram_bin(self, column: str) -> str:
        if self.dialect == "sqlite":
            return f"{SQLITE_BIN_FUNCTION}({column})"
        value = f"CAST({column} AS double precision)"
        # repr() round-trips, so PostgreSQL parses the very double the write path divides by.
        log_growth = f"CAST('{_LOG_GROWTH!r}' AS double precision)"
        return (
            f"CASE WHEN {value} > 0 THEN CAST(floor(ln({value}) / {log_growth}) AS INTEGER)"
            f" WHEN {value} = 0 THEN {ZERO_BIN}"
            f" ELSE {_NEGATIVE_BASE} - CAST(floor(ln(-{value}) / {log_growth}) AS INTEGER) END"
        )


@dataclass(frozen=True, slots=True)
class _Source:
    """How one kind's raw table feeds its rollups."""

    raw_table: str
    time_column: str
    row_columns: str
    """The raw columns the counters and children read (never the JSON or the text itself)."""
    dense: tuple[int, str]
    """The dense dimension grouped from the raw rows (model or event type) and its key SQL."""
    sparse: dict[int, str]
    """Sparse dimensions (month cells) and their key SQL."""
    counters: RollupTable
    counter_sql: Sequence[str]
    """SELECT expressions of the counters, in the table's counter order."""
    metric_columns: Sequence[str]
    """Raw column of each histogram metric, whose min and max are the cells' extremes."""
    children: Sequence[tuple[RollupTable, Callable[[_Sql], tuple[str, str, str]]]]
    """Per child table: (extra SELECT columns, FROM of the per-row values, extra GROUP BY)."""


def _feedback_histograms(sql: _Sql) -> tuple[str, str, str]:
    rows = (
        f"SELECT *, {LATENCY_METRIC} AS metric, {sql.histogram_bin('latency_ms')} AS bin"
        " FROM {rows} WHERE latency_ms IS NOT NULL"
        f" UNION ALL SELECT *, {TOKENS_METRIC}, {sql.histogram_bin('tokens_used')}"
        " FROM {rows} WHERE tokens_used IS NOT NULL"
    )
    return "metric, bin", rows, "metric, bin"


def _interaction_histograms(sql: _Sql) -> tuple[str, str, str]:
    rows = (
        f"SELECT *, {LATENCY_METRIC} AS metric, {sql.histogram_bin('latency_ms')} AS bin"
        " FROM {rows} WHERE latency_ms IS NOT NULL"
        f" UNION ALL SELECT *, {TOKENS_METRIC}, {sql.histogram_bin('total_tokens')}"
        " FROM {rows} WHERE total_tokens IS NOT NULL"
    )
    return "metric, bin", rows, "metric, bin"


def _feedback_labels(sql: _Sql) -> tuple[str, str, str]:
    return "label", "SELECT * FROM {rows} WHERE rating_kind = 'label'", "label"


def _event_types(sql: _Sql) -> tuple[str, str, str]:
    return "event_type", "SELECT * FROM {rows}", "event_type"


def _count_where(condition: str) -> str:
    return f"sum(CASE WHEN {condition} THEN 1 ELSE 0 END)"


_SOURCES = (
    _Source(
        raw_table="feedback",
        time_column="create_time",
        row_columns=(
            "rating_kind, score, thumb_up, label,"
            " CASE WHEN text <> '' THEN 1 ELSE 0 END AS has_text, latency_ms, tokens_used"
        ),
        dense=(MODEL, "COALESCE(model, '')"),
        sparse={CONVERSATION: "COALESCE(conversation_id, '')", USER: "COALESCE(user_id, '')"},
        counters=FEEDBACK,
        counter_sql=(
            "count(*)",
            *(_count_where(f"rating_kind = 'score' AND score = {value}") for value in range(1, 6)),
            _count_where("rating_kind = 'thumb' AND thumb_up"),
            _count_where("rating_kind = 'thumb' AND NOT thumb_up"),
            "sum(has_text)",
            "count(latency_ms)",
            "COALESCE(sum(latency_ms), 0)",
            "count(tokens_used)",
            "COALESCE(sum(tokens_used), 0)",
        ),
        metric_columns=FEEDBACK_KIND.metric_columns,
        children=((FEEDBACK_LABELS, _feedback_labels), (FEEDBACK_HISTOGRAMS, _feedback_histograms)),
    ),
    _Source(
        raw_table="interactions",
        time_column="occur_time",
        row_columns="latency_ms, total_tokens",
        dense=(MODEL, "COALESCE(model, '')"),
        sparse={CONVERSATION: "conversation_id", USER: "COALESCE(user_id, '')"},
        counters=INTERACTIONS,
        counter_sql=(
            "count(*)",
            "count(latency_ms)",
            "COALESCE(sum(latency_ms), 0)",
            "count(total_tokens)",
            "COALESCE(sum(total_tokens), 0)",
        ),
        metric_columns=INTERACTION_KIND.metric_columns,
        children=((INTERACTION_HISTOGRAMS, _interaction_histograms),),
    ),
    _Source(
        raw_table="events",
        time_column="event_time",
        row_columns="event_type",
        dense=(EVENT_TYPE, "event_type"),
        sparse={USER: "user_id"},
        counters=EVENTS,
        counter_sql=("count(*)",),
        metric_columns=(),
        children=((EVENT_TYPES, _event_types),),
    ),
)

_PARENT_LEVEL = {DAY: HOUR, MONTH: DAY, TOTAL: MONTH}


def rebuild_rollups(
    run: RunSql, dialect: Dialect, *, id_bounds: bool = True, extremes: bool = True
) -> None:
    """Replace every rollup row with what the raw tables hold now, in the caller's transaction.

    On PostgreSQL the caller must keep writers out meanwhile (see Storage.rebuild_rollups); on
    SQLite the write transaction does. SQLite connections need register_sqlite_functions().
    `id_bounds=False` is for schemas before revision 0005, whose counter tables have no bounds;
    `extremes=False` for those before revision 0008, which have no extremes.
    """
    sql = _Sql(dialect)
    stamp = _new_stamp()
    for source in _SOURCES:
        source_ = _as_of(source, id_bounds=id_bounds, extremes=extremes)
        for table in (source_.counters, *(child for child, _ in source_.children)):
            run(f"DELETE FROM {table.name}")
        dense, dense_key = source_.dense
        _from_raw(run, sql, source_, HOUR, dense, dense_key, stamp)
        _all_from_dense(run, source_, dense, stamp)
        for level in (DAY, MONTH, TOTAL):
            _coarser(run, sql, source_, level, (ALL, dense), stamp)
        if id_bounds:
            # Dense cells got bounds only to sum them into "all" cells; writes keep no others.
            run(
                f"UPDATE {source_.counters.name} SET min_id = NULL, max_id = NULL"
                f" WHERE dimension <> {ALL} AND min_id IS NOT NULL"
            )
        for dimension, key in source_.sparse.items():
            _from_raw(run, sql, source_, MONTH, dimension, key, stamp)
    _rebuild_spans(run)


def _as_of(source: _Source, *, id_bounds: bool, extremes: bool) -> _Source:
    """The source writing counter tables with or without the id bounds and the extremes."""
    if id_bounds and extremes:
        return source
    table = source.counters
    older = RollupTable(
        table.name,
        table.key_columns,
        table.counters,
        stamped=table.stamped,
        zero_column=table.zero_column,
        bounded=table.bounded and id_bounds,
        extremes=table.extremes and extremes,
    )
    return replace(source, counters=older)


def _bounds_sql(table: RollupTable, bounds: str) -> str:
    """`bounds` (two SELECT expressions) after a comma when the table keeps id bounds."""
    return f", {bounds}" if table.bounded else ""


def _extremes_sql(table: RollupTable, values: Sequence[str] | None) -> str:
    """After a comma, the extremes of the cells when the table keeps them: min() and max() of
    each of `values` (SQL of one metric each), or NULLs for cells without histograms (None)."""
    if not table.extremes:
        return ""
    if values is None:
        return ", " + ", ".join(["NULL"] * len(EXTREME_COLUMNS))
    return ", " + ", ".join(
        f"{function}({value})" for value in values for function in ("min", "max")
    )


def _summed_extremes_sql(table: RollupTable) -> str:
    """After a comma, the extremes of cells made of finer cells, when the table keeps them."""
    if not table.extremes:
        return ""
    return ", " + ", ".join(
        f"{'min' if column.endswith('_min') else 'max'}({column})" for column in EXTREME_COLUMNS
    )


def _from_raw(
    run: RunSql, sql: _Sql, source: _Source, level: int, dimension: int, key: str, stamp: int
) -> None:
    """Cells of one dimension at the hour or month level, grouped from the raw rows."""
    rows = (
        f"(SELECT id AS rollup_id, {source.row_columns},"
        f" {sql.raw_bucket(level, source.time_column)}"
        f" AS rollup_bucket, {key} AS rollup_key FROM {source.raw_table}) AS raw_rows"
    )
    head = f"{level}, rollup_bucket, {dimension}, rollup_key"
    table = source.counters
    run(
        f"INSERT INTO {table.name} ({', '.join(table.columns)})"
        f" SELECT {head}, {stamp}, {', '.join(source.counter_sql)}"
        + _extremes_sql(table, source.metric_columns if dimension in DETAILED_DIMENSIONS else None)
        + _bounds_sql(table, "min(rollup_id), max(rollup_id)" if level == HOUR else "NULL, NULL")
        + f" FROM {rows} GROUP BY rollup_bucket, rollup_key"
    )
    if dimension not in DETAILED_DIMENSIONS:
        return
    for child, shape in source.children:
        if child is EVENT_TYPES and dimension == EVENT_TYPE:
            continue  # an event type cell is its own breakdown
        columns, child_rows, group = shape(sql)
        run(
            f"INSERT INTO {child.name} ({', '.join(child.columns)})"
            f" SELECT {head}, {columns}, count(*)"
            f" FROM ({child_rows.replace('{rows}', rows)}) AS child_rows"
            f" GROUP BY rollup_bucket, rollup_key, {group}"
        )


def _all_from_dense(run: RunSql, source: _Source, dense: int, stamp: int) -> None:
    """Hour cells of ALL: the sum of the dense dimension's hour cells."""
    table = source.counters
    sums = ", ".join(f"sum({column})" for column in table.counters)
    where = f"level = {HOUR} AND dimension = {dense}"
    run(
        f"INSERT INTO {table.name} ({', '.join(table.columns)})"
        f" SELECT {HOUR}, bucket_start, {ALL}, '', {stamp}, {sums}"
        + _summed_extremes_sql(table)
        + _bounds_sql(table, "min(min_id), max(max_id)")
        + f" FROM {table.name} WHERE {where} GROUP BY bucket_start"
    )
    for child, _ in source.children:
        if child is EVENT_TYPES:
            # Per type counts of all events are the event type cells' totals.
            run(
                f"INSERT INTO {child.name} ({', '.join(child.columns)})"
                f" SELECT {HOUR}, bucket_start, {ALL}, '', dimension_key, total_count"
                f" FROM {table.name} WHERE {where}"
            )
            continue
        extra = child.key_columns[4:]
        run(
            f"INSERT INTO {child.name} ({', '.join(child.columns)})"
            f" SELECT {HOUR}, bucket_start, {ALL}, '', {', '.join(extra)}, sum(record_count)"
            f" FROM {child.name} WHERE {where} GROUP BY bucket_start, {', '.join(extra)}"
        )


def _coarser(
    run: RunSql, sql: _Sql, source: _Source, level: int, dimensions: Sequence[int], stamp: int
) -> None:
    """Cells of a day, month or total level summed from the level below."""
    parent = {DAY: HOUR, MONTH: DAY, TOTAL: MONTH}[level]
    listed = ", ".join(str(dimension) for dimension in dimensions)
    where = f"level = {parent} AND dimension IN ({listed})"
    bucket = sql.bucket(level, "bucket_start")
    table = source.counters
    sums = ", ".join(f"sum({column})" for column in table.counters)
    run(
        f"INSERT INTO {table.name} ({', '.join(table.columns)})"
        f" SELECT {level}, {bucket}, dimension, dimension_key, {stamp}, {sums}"
        + _summed_extremes_sql(table)
        + _bounds_sql(table, "min(min_id), max(max_id)")
        + f" FROM {table.name} WHERE {where} GROUP BY 2, dimension, dimension_key"
    )
    for child, _ in source.children:
        extra = [c for c in child.key_columns if c not in ("level", "bucket_start")]
        run(
            f"INSERT INTO {child.name} ({', '.join(child.columns)})"
            f" SELECT {level}, {bucket}, {', '.join(extra)}, sum(record_count)"
            f" FROM {child.name} WHERE {where} GROUP BY 2, {', '.join(extra)}"
        )


def _rebuild_spans(run: RunSql) -> None:
    """First and last day of each dense key, from its day cells."""
    days = " UNION ALL ".join(
        f"SELECT dimension, dimension_key, bucket_start FROM {table.name} WHERE level = {DAY}"
        for table in (FEEDBACK, INTERACTIONS, EVENTS)
    )
    run(f"DELETE FROM {KEY_SPANS_TABLE}")
    run(
        f"INSERT INTO {KEY_SPANS_TABLE} (dimension, dimension_key, first_day, last_day)"
        f" SELECT dimension, dimension_key, min(bucket_start), max(bucket_start)"
        f" FROM ({days}) AS days GROUP BY dimension, dimension_key"
    )
