"""Rollup tables as the SQL sees them: their columns, and how a conflicting row absorbs a delta."""

from __future__ import annotations

from collections.abc import Mapping

CELL_COLUMNS = ("level", "bucket_start", "dimension", "dimension_key")
"""The key of a cell, first in every rollup table's primary key."""
ID_BOUND_COLUMNS = ("min_id", "max_id")
"""Lowest and highest id of an "all" cell's records, in schemas 0005 to 0009 only (rebuild)."""
KEY_SPANS_TABLE = "rollup_key_spans"
"""(dimension, key) -> first and last day of its records, for the dense dimensions."""


class RollupTable:
    """One rollup table: its key columns and the upsert assignments that add a delta to a row."""

    def __init__(
        self,
        name: str,
        key_columns: tuple[str, ...],
        counters: tuple[str, ...],
        *,
        stamped: bool,
        zero_column: str,
        sums: Mapping[str, str] | None = None,
        extremes: tuple[str, ...] = (),
        bounded: bool = False,
    ) -> None:
        """`sums` maps float sum columns to the count column that resets them at zero;
        `extremes` are (least, greatest) columns that follow the counters (NULL on cells without
        histograms); `bounded` tables end with the id bounds of "all" cells (ID_BOUND_COLUMNS)."""
        self.name = name
        self.key_columns = key_columns
        self.counters = counters
        self.stamped = stamped
        self.bounded = bounded
        self.extremes = extremes
        self.zero_column = zero_column
        self.sums = dict(sums or {})
        self.columns = (
            key_columns
            + (("stamp",) if stamped else ())
            + counters
            + extremes
            + (ID_BOUND_COLUMNS if bounded else ())
        )
        assignments = []
        if stamped:
            assignments.append("stamp = excluded.stamp")
        for column in counters:
            total = f"{name}.{column} + excluded.{column}"
            count_column = self.sums.get(column)
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
        # read again from the raw rows (write.refresh_extremes). Portable CASE: SQLite's
        # two-argument min() and max() are NULL if either side is.
        widening = tuple((column, "<=" if is_least(column) else ">=") for column in extremes)
        if bounded:
            widening += (("min_id", "<="), ("max_id", ">="))
        for column, keeps in widening:
            assignments.append(
                f"{column} = CASE WHEN excluded.{column} IS NULL"
                f" OR {name}.{column} {keeps} excluded.{column}"
                f" THEN {name}.{column} ELSE excluded.{column} END"
            )
        self.update = ", ".join(assignments)

    def as_of(self, *, id_bounds: bool, extremes: bool) -> RollupTable:
        """The table as an older schema has it: with id bounds (0005 to 0009), without extremes
        (before 0008)."""
        return RollupTable(
            self.name,
            self.key_columns,
            self.counters,
            stamped=self.stamped,
            zero_column=self.zero_column,
            sums=self.sums,
            extremes=self.extremes if extremes else (),
            bounded=id_bounds,
        )


def is_least(extreme_column: str) -> bool:
    """Whether an extremes column holds a least value (`*_min`) rather than a greatest."""
    return extreme_column.endswith("_min")


def child_table(name: str, *columns: str) -> RollupTable:
    """A table of a cell's details: a count per (cell, `columns`), such as per label or bin."""
    return RollupTable(
        name,
        (*CELL_COLUMNS, *columns),
        ("record_count",),
        stamped=False,
        zero_column="record_count",
    )
