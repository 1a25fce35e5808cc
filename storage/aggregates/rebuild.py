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
from dataclasses import dataclass

from storage.aggregates.histogram import LOG_GROWTH, NEGATIVE_BASE, ZERO_BIN, histogram_bin
from storage.aggregates.kinds import ALL, KINDS, AggregateKind, Dimension
from storage.aggregates.sql import Dialect
from storage.aggregates.tables import KEY_SPANS_TABLE, RollupTable, is_least
from storage.aggregates.write import new_stamp
from storage.calendar import DAY, HOUR, MONTH, TOTAL

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
        log_growth = f"CAST('{LOG_GROWTH!r}' AS double precision)"
        return (
            f"CASE WHEN {value} > 0 THEN CAST(floor(ln({value}) / {log_growth}) AS INTEGER)"
            f" WHEN {value} = 0 THEN {ZERO_BIN}"
            f" ELSE {NEGATIVE_BASE} - CAST(floor(ln(-{value}) / {log_growth}) AS INTEGER) END"
        )


def rebuild_rollups(
    run: RunSql, dialect: Dialect, *, id_bounds: bool = False, extremes: bool = True
) -> None:
    """Replace every rollup row with what the raw tables hold now, in the caller's transaction.

    On PostgreSQL the caller must keep writers out meanwhile (see Storage.rebuild_rollups); on
    SQLite the write transaction does. SQLite connections need register_sqlite_functions().
    `id_bounds=True` is for schemas from revision 0005 to 0009, whose counter tables end with
    the id bounds of "all" cells; `extremes=False` for those before 0008, which have no extremes.
    """
    sql = _Sql(dialect)
    stamp = new_stamp()
    for kind in KINDS:
        source = _Source(kind, sql, kind.counters.as_of(id_bounds=id_bounds, extremes=extremes))
        for table in (source.counters, *kind.tables[1:]):
            run(f"DELETE FROM {table.name}")
        dense = next(d for d in kind.dimensions if d.dense and d.id != ALL)
        source.from_raw(run, HOUR, dense, stamp)
        source.all_from_dense(run, dense.id, stamp)
        for level in (DAY, MONTH, TOTAL):
            source.coarser(run, level, (ALL, dense.id), stamp)
        if id_bounds:
            # Dense cells got bounds only to sum them into "all" cells; writes kept no others.
            run(
                f"UPDATE {kind.counters.name} SET min_id = NULL, max_id = NULL"
                f" WHERE dimension <> {ALL} AND min_id IS NOT NULL"
            )
        for dimension in kind.dimensions:
            if not dimension.dense:
                source.from_raw(run, MONTH, dimension, stamp)
    _rebuild_spans(run)


def _count_where(condition: str) -> str:
    return f"sum(CASE WHEN {condition} THEN 1 ELSE 0 END)"


def _literal(value: int | bool) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return str(value)


@dataclass(frozen=True, slots=True)
class _Source:
    """How one kind's raw table feeds its rollups, as statements over its declaration."""

    kind: AggregateKind
    sql: _Sql
    counters: RollupTable
    """The kind's counter table as the schema being rebuilt has it."""

    def counter_sql(self) -> list[str]:
        """SELECT expressions of the counters over the rows' facts, in the table's order."""
        kind = self.kind
        return [
            "count(*)",
            *(_count_where(f"{flag.fact} = {_literal(flag.value)}") for flag in kind.flags),
            *(
                expression
                for measure in kind.measures
                for expression in (f"count({measure.fact})", f"COALESCE(sum({measure.fact}), 0)")
            ),
        ]

    def extremes_sql(self, detailed: bool) -> str:
        """After a comma, the extremes of cells grouped from raw rows (NULL without details)."""
        if not self.counters.extremes:
            return ""
        if not detailed:
            return ", " + ", ".join(["NULL"] * len(self.counters.extremes))
        return ", " + ", ".join(
            f"{function}({measure.fact})"
            for measure in self.kind.measures
            for function in ("min", "max")
        )

    def summed_extremes_sql(self) -> str:
        """After a comma, the extremes of cells made of finer cells."""
        if not self.counters.extremes:
            return ""
        return ", " + ", ".join(
            f"{'min' if is_least(column) else 'max'}({column})" for column in self.counters.extremes
        )

    def bounds_sql(self, bounds: str) -> str:
        """`bounds` (two SELECT expressions) after a comma when the table keeps id bounds."""
        return f", {bounds}" if self.counters.bounded else ""

    def from_raw(self, run: RunSql, level: int, dimension: Dimension, stamp: int) -> None:
        """Cells of one dimension at the hour or month level, grouped from the raw rows."""
        kind, sql = self.kind, self.sql
        facts = ", ".join(f"{fact.select} AS {fact.name}" for fact in kind.facts)
        rows = (
            f"(SELECT id AS rollup_id, {facts}, {sql.raw_bucket(level, kind.time_column)}"
            f" AS rollup_bucket, COALESCE({dimension.column}, '') AS rollup_key"
            f" FROM {kind.raw_table}) AS raw_rows"
        )
        head = f"{level}, rollup_bucket, {dimension.id}, rollup_key"
        table = self.counters
        run(
            f"INSERT INTO {table.name} ({', '.join(table.columns)})"
            f" SELECT {head}, {stamp}, {', '.join(self.counter_sql())}"
            + self.extremes_sql(dimension.detailed)
            + self.bounds_sql("min(rollup_id), max(rollup_id)" if level == HOUR else "NULL, NULL")
            + f" FROM {rows} GROUP BY rollup_bucket, rollup_key"
        )
        if not dimension.detailed:
            return
        if (
            kind.part is not None
            and kind.part_rollups is not None
            and kind.keeps_parts(dimension.id)
        ):
            name = kind.part.fact
            child = kind.part_rollups
            run(
                f"INSERT INTO {child.name} ({', '.join(child.columns)})"
                f" SELECT {head}, {name}, count(*) FROM {rows} WHERE {name} IS NOT NULL"
                f" GROUP BY rollup_bucket, rollup_key, {name}"
            )
        if kind.histograms is not None:
            child = kind.histograms
            binned = " UNION ALL ".join(
                f"SELECT rollup_bucket, rollup_key, {metric} AS metric,"
                f" {sql.histogram_bin(measure.fact)} AS bin FROM {rows}"
                f" WHERE {measure.fact} IS NOT NULL"
                for metric, measure in enumerate(kind.measures)
            )
            run(
                f"INSERT INTO {child.name} ({', '.join(child.columns)})"
                f" SELECT {head}, metric, bin, count(*) FROM ({binned}) AS child_rows"
                " GROUP BY rollup_bucket, rollup_key, metric, bin"
            )

    def all_from_dense(self, run: RunSql, dense: int, stamp: int) -> None:
        """Hour cells of ALL: the sum of the dense dimension's hour cells."""
        kind, table = self.kind, self.counters
        sums = ", ".join(f"sum({column})" for column in table.counters)
        where = f"level = {HOUR} AND dimension = {dense}"
        run(
            f"INSERT INTO {table.name} ({', '.join(table.columns)})"
            f" SELECT {HOUR}, bucket_start, {ALL}, '', {stamp}, {sums}"
            + self.summed_extremes_sql()
            + self.bounds_sql("min(min_id), max(max_id)")
            + f" FROM {table.name} WHERE {where} GROUP BY bucket_start"
        )
        for child in kind.tables[1:]:
            if child is kind.part_rollups and dense == kind.part_dimension:
                # Part counts of all records are the totals of the cells keyed by the part.
                run(
                    f"INSERT INTO {child.name} ({', '.join(child.columns)})"
                    f" SELECT {HOUR}, bucket_start, {ALL}, '', dimension_key, total_count"
                    f" FROM {table.name} WHERE {where}"
                )
                continue
            extra = ", ".join(child.key_columns[4:])
            run(
                f"INSERT INTO {child.name} ({', '.join(child.columns)})"
                f" SELECT {HOUR}, bucket_start, {ALL}, '', {extra}, sum(record_count)"
                f" FROM {child.name} WHERE {where} GROUP BY bucket_start, {extra}"
            )

    def coarser(self, run: RunSql, level: int, dimensions: Sequence[int], stamp: int) -> None:
        """Cells of a day, month or total level summed from the level below."""
        parent = {DAY: HOUR, MONTH: DAY, TOTAL: MONTH}[level]
        listed = ", ".join(str(dimension) for dimension in dimensions)
        where = f"level = {parent} AND dimension IN ({listed})"
        bucket = self.sql.bucket(level, "bucket_start")
        table = self.counters
        sums = ", ".join(f"sum({column})" for column in table.counters)
        run(
            f"INSERT INTO {table.name} ({', '.join(table.columns)})"
            f" SELECT {level}, {bucket}, dimension, dimension_key, {stamp}, {sums}"
            + self.summed_extremes_sql()
            + self.bounds_sql("min(min_id), max(max_id)")
            + f" FROM {table.name} WHERE {where} GROUP BY 2, dimension, dimension_key"
        )
        for child in self.kind.tables[1:]:
            extra = ", ".join(c for c in child.key_columns if c not in ("level", "bucket_start"))
            run(
                f"INSERT INTO {child.name} ({', '.join(child.columns)})"
                f" SELECT {level}, {bucket}, {extra}, sum(record_count)"
                f" FROM {child.name} WHERE {where} GROUP BY 2, {extra}"
            )


def _rebuild_spans(run: RunSql) -> None:
    """First and last day of each dense key, from its day cells."""
    days = " UNION ALL ".join(
        f"SELECT dimension, dimension_key, bucket_start FROM {kind.counters.name}"
        f" WHERE level = {DAY}"
        for kind in KINDS
    )
    run(f"DELETE FROM {KEY_SPANS_TABLE}")
    run(
        f"INSERT INTO {KEY_SPANS_TABLE} (dimension, dimension_key, first_day, last_day)"
        f" SELECT dimension, dimension_key, min(bucket_start), max(bucket_start)"
        f" FROM ({days}) AS days GROUP BY dimension, dimension_key"
    )
