"""Rollup upkeep: every write's contribution to the cells, kept in the write's own transaction.

GetStats never scans the raw tables. Every write adds its records' contribution (counts, sums,
part counts, exact extremes and log-scale histogram bins) to cells keyed by (level, bucket_start,
dimension, dimension_key), in the same transaction as the rows themselves, so the two can never
disagree. Removing a record applies the same contribution with sign -1.

The primary keys start with (level, bucket_start), so the cells a batch touches are the few current
buckets, a small hot region of each table, rather than one random page per user; readers seek one
bucket at a time with IN lists. rollup_key_spans keeps the first and last day of every dense key so
readers know which buckets to look at when a range is open-ended (a user's or conversation's open
range is bounded by the span of all records instead, at no cost per record).

A transaction's changes are tallied in Python first (one cell per distinct key) and applied at its
end with one multi-row INSERT ... ON CONFLICT DO UPDATE per table, tables in one fixed order and
rows sorted by key, so concurrent PostgreSQL writers lock rows in one order and never deadlock
(see RollupChanges).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from itertools import chain
from operator import attrgetter
from typing import Any

from storage.aggregates.kinds import KINDS, AggregateKind
from storage.aggregates.sql import Dialect, SqlTarget
from storage.aggregates.tables import CELL_COLUMNS, KEY_SPANS_TABLE, RollupTable, is_least
from storage.aggregates.tally import Tally
from storage.calendar import (
    DAY_SECONDS,
    HOUR,
    HOUR_SECONDS,
    MONTH,
    SECOND,
    TOTAL,
    bucket_start,
    epoch_seconds,
    month_start,
    next_bucket_start,
)

Cell = tuple[int, int, int, str]
"""(level, bucket_start, dimension, dimension_key)."""

Spans = dict[tuple[int, str], tuple[int, int]]
"""(dimension, key) -> (first day, last day) of some records, epoch seconds."""


# ---- records -> cells ----


@cache
def _keyed(kind: AggregateKind) -> tuple[tuple[bool, int, Any, bool], ...]:
    """Per dimension: (hourly?, id, the record's key getter, detailed?)."""
    return tuple(
        (
            dimension.dense,
            dimension.id,
            (lambda record: "") if dimension.column is None else attrgetter(dimension.column),
            dimension.detailed,
        )
        for dimension in kind.dimensions
    )


def deltas(
    kind: AggregateKind, records: Iterable[Any], sign: int
) -> tuple[dict[Cell, Tally], Spans]:
    """Per cell, what adding (sign 1) or removing (sign -1) the records changes; and the days
    each dense key's records fall on."""
    hours: dict[tuple[int, int, str], Tally] = {}
    months: dict[tuple[int, int, str], Tally] = {}
    moment = attrgetter(kind.time_column)
    keyed = _keyed(kind)
    facts = kind.record_facts
    contribution_of = kind.contribution
    for record in records:
        seconds = epoch_seconds(moment(record))
        hour = seconds - seconds % HOUR_SECONDS
        month = month_start(hour - hour % DAY_SECONDS)
        contribution = contribution_of(facts(record))
        for hourly, dimension, key_of, detailed in keyed:
            cell = (
                (hour, dimension, key_of(record) or "")
                if hourly
                else (month, dimension, key_of(record) or "")
            )
            cells = hours if hourly else months
            tally = cells.get(cell)
            if tally is None:
                tally = cells[cell] = Tally(kind)
            if detailed:
                tally.add(contribution, sign)
            else:
                tally.add_counts(contribution, sign)
    return _roll_up(kind, hours, months)


def _roll_up(
    kind: AggregateKind,
    hour_cells: dict[tuple[int, int, str], Tally],
    month_cells: dict[tuple[int, int, str], Tally],
) -> tuple[dict[Cell, Tally], Spans]:
    """Cells of every level: dense hour tallies merged into coarser buckets, sparse month
    tallies as they are; and the days each dense key's records fall on."""
    cells: dict[Cell, Tally] = {}
    spans: Spans = {}
    levels = kind.levels
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


# ---- the transaction's changes ----


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
    2. the rollup tables in kinds.ROLLUP_TABLES order, each once per transaction with one merged
       delta per cell (every record added and removed, of every voting round), its rows sorted by
       their full key, since a multi-row INSERT ... ON CONFLICT locks rows in VALUES order; a
       table's emptied cells are deleted before the next table is touched;
    3. rollup_key_spans last, once, sorted by (dimension, key).

    SQLite has a single writer and cannot deadlock; it runs the same code.
    """

    def __init__(self) -> None:
        """No changes yet."""
        self._records: dict[AggregateKind, tuple[list[Any], list[Any]]] = {}

    def add(self, kind: AggregateKind, records: Sequence[Any], sign: int) -> None:
        """Count stored records in (sign 1) or removed ones out (sign -1) when applied."""
        added, removed = self._records.setdefault(kind, ([], []))
        (added if sign > 0 else removed).extend(records)

    def apply(self, target: SqlTarget) -> None:
        """Write every pending change in the order above, then forget them."""
        pending, self._records = self._records, {}
        if not any(added or removed for added, removed in pending.values()):
            return
        stamp = new_stamp()
        spans: Spans = {}
        for kind in KINDS:
            added, removed = pending.get(kind, ([], []))
            if added or removed:
                _apply_kind(target, kind, added, removed, stamp, spans)
        _update_spans(target, spans)


def new_stamp() -> int:
    """A fresh version for the cells a transaction changes (readers cache cells by it).

    From the OS, not the random module: anything that seeds `random` (test frameworks do) would
    repeat stamps and let readers take a changed cell for a cached one.
    """
    return secrets.randbits(62)


def _apply_kind(
    target: SqlTarget,
    kind: AggregateKind,
    added: Sequence[Any],
    removed: Sequence[Any],
    stamp: int,
    spans: Spans,
) -> None:
    """Upsert one kind's tables in their order, widening `spans` by the records added."""
    cells, added_spans = deltas(kind, added, 1)
    removed_cells, _ = deltas(kind, removed, -1)  # removals never narrow a span
    for cell, tally in removed_cells.items():
        existing = cells.get(cell)
        if existing is None:
            cells[cell] = tally
        else:
            existing.merge(tally)
    _widen(spans, added_spans)
    emptied = sorted(removed_cells)
    _upsert(
        target,
        kind.counters,
        [(*cell, stamp, *tally.counts, *tally.extremes.values) for cell, tally in cells.items()],
    )
    _delete_zeros(target, kind.counters, emptied)
    if kind.extreme_columns:
        _refresh_extremes(target, kind, removed_cells)
    detailed = [
        (cell, tally) for cell, tally in cells.items() if kind.dimension_of[cell[2]].detailed
    ]
    emptied_detailed = [cell for cell in emptied if kind.dimension_of[cell[2]].detailed]
    parts = kind.part_rollups
    if parts is not None:
        part_rows: list[tuple[Any, ...]] = [
            (*cell, name, count)
            for cell, tally in detailed
            if kind.keeps_parts(cell[2])
            for name, count in tally.parts.items()
            if count
        ]
        if part_rows:
            _upsert(target, parts, part_rows)
        _delete_zeros(target, parts, emptied_detailed)
    if kind.histograms is not None:
        bin_rows: list[tuple[Any, ...]] = [
            (*cell, metric, bin_index, count)
            for cell, tally in detailed
            for metric, bins in enumerate(tally.bins)
            for bin_index, count in bins.items()
            if count
        ]
        if bin_rows:
            _upsert(target, kind.histograms, bin_rows)
        _delete_zeros(target, kind.histograms, emptied_detailed)


@cache
def _upsert_statement(table: RollupTable, rows: int, dialect: Dialect) -> str:
    target = SqlTarget(lambda sql, parameters: (), dialect)
    return (
        f"INSERT INTO {table.name} ({', '.join(table.columns)})"
        f" VALUES {target.values(len(table.columns), rows)}"
        f" ON CONFLICT ({', '.join(table.key_columns)}) DO UPDATE SET {table.update}"
    )


def _upsert(target: SqlTarget, table: RollupTable, rows: list[tuple[Any, ...]]) -> None:
    """Add the rows' counters to the table, in key order (the lock order on PostgreSQL)."""
    # Whole tuples sort by their key columns first, and keys are unique within a batch.
    rows.sort()
    for chunk in target.chunks(len(table.columns), rows):
        parameters = tuple(chain.from_iterable(chunk))
        target.execute(_upsert_statement(table, len(chunk), target.dialect), parameters)


def _delete_zeros(target: SqlTarget, table: RollupTable, cells: Sequence[Cell]) -> None:
    """Drop rows of the cells whose count fell to zero (removed records leave nothing behind)."""
    width = len(CELL_COLUMNS)
    for chunk in target.chunks(width, cells):
        target.execute(
            f"DELETE FROM {table.name} WHERE {table.zero_column} = 0 AND"
            f" ({', '.join(CELL_COLUMNS)}) IN (VALUES {target.values(width, len(chunk))})",
            tuple(chain.from_iterable(chunk)),
        )


def _update_spans(target: SqlTarget, spans: Spans) -> None:
    """Widen each key's [first day, last day] to cover the records written."""
    rows = sorted(
        (dimension, key, first, last) for (dimension, key), (first, last) in spans.items()
    )
    table = KEY_SPANS_TABLE
    for chunk in target.chunks(4, rows):
        # The WHERE clause skips the write (and the dirty page) when the span already covers it.
        target.execute(
            f"INSERT INTO {table} (dimension, dimension_key, first_day, last_day)"
            f" VALUES {target.values(4, len(chunk))}"
            " ON CONFLICT (dimension, dimension_key) DO UPDATE SET"
            f" first_day = CASE WHEN excluded.first_day < {table}.first_day"
            f" THEN excluded.first_day ELSE {table}.first_day END,"
            f" last_day = CASE WHEN excluded.last_day > {table}.last_day"
            f" THEN excluded.last_day ELSE {table}.last_day END"
            f" WHERE excluded.first_day < {table}.first_day"
            f" OR excluded.last_day > {table}.last_day",
            tuple(chain.from_iterable(chunk)),
        )


def _refresh_extremes(
    target: SqlTarget, kind: AggregateKind, removed: Mapping[Cell, Tally]
) -> None:
    """Re-read the extremes of the cells whose removals may have taken one.

    Extremes cannot be subtracted. A removed value can only have been a stored extreme if it
    is at or beyond it, so the statement's WHERE leaves every other cell alone at the cost of a
    key lookup. A cell that lost its least or greatest value is re-read from the cells of the
    next finer level of its key (a day from its 24 hours, a month from its days, the TOTAL from
    its months), which this loop refreshed first (cells sort finest level first); a cell of the
    finest level from the raw rows in its own index range. Re-reading a TOTAL cell from the raw
    rows scanned the whole table, some 300 ms on SQLite at 500k rows, each time expiry took a
    row holding an all-time extreme. The cells' rows were upserted already in this
    transaction, so no new lock is taken.
    """
    mark = target.mark
    aggregates = ", ".join(
        f"{function}({measure.fact})" for measure in kind.measures for function in ("min", "max")
    )
    finer = ", ".join(
        f"{'min' if is_least(column) else 'max'}({column})" for column in kind.extreme_columns
    )
    touched = " OR ".join(
        f"{column} {'>=' if is_least(column) else '<='} {mark}" for column in kind.extreme_columns
    )
    for cell, tally in sorted(removed.items()):
        level, _, dimension, _ = cell
        if tally.removed_extremes is None or not kind.dimension_of[dimension].detailed:
            continue
        removed_values = tally.removed_extremes.values
        if all(value is None for value in removed_values):
            continue
        levels = kind.dimension_of[dimension].levels
        if level != levels[0]:
            source, parameters = _finer_cells(kind, levels[levels.index(level) - 1], cell, mark)
            select = finer
        else:
            source, parameters = _raw_rows(kind, cell, target)
            select = aggregates
        target.execute(
            f"UPDATE {kind.counters.name} SET ({', '.join(kind.extreme_columns)}) ="
            f" (SELECT {select} FROM {source})"
            f" WHERE level = {mark} AND bucket_start = {mark} AND dimension = {mark}"
            f" AND dimension_key = {mark} AND ({touched})",
            (*parameters, *cell, *removed_values),
        )


def _finer_cells(kind: AggregateKind, finer: int, cell: Cell, mark: str) -> tuple[str, list[Any]]:
    """The FROM clause and parameters of the cells of level `finer` within `cell`'s bucket."""
    level, start, dimension, key = cell
    where = f"level = {mark} AND dimension = {mark} AND dimension_key = {mark}"
    parameters: list[Any] = [finer, dimension, key]
    if level != TOTAL:
        where += f" AND bucket_start >= {mark} AND bucket_start < {mark}"
        parameters += [start, next_bucket_start(level, start)]
    return f"{kind.counters.name} WHERE {where}", parameters


def _raw_rows(kind: AggregateKind, cell: Cell, target: SqlTarget) -> tuple[str, list[Any]]:
    """The FROM clause and parameters of the raw rows `cell` counts."""
    level, start, dimension, key = cell
    mark = target.mark
    where: list[str] = []
    parameters: list[Any] = []
    if level != TOTAL:
        where.append(f"{kind.time_column} >= {mark} AND {kind.time_column} < {mark}")
        end = next_bucket_start(level, start)
        parameters += [target.time_parameter(start * SECOND), target.time_parameter(end * SECOND)]
    column = kind.dimension_of[dimension].column
    if column is not None:
        if key:
            where.append(f"{column} = {mark}")
            parameters.append(key)
        else:
            where.append(f"({column} IS NULL OR {column} = '')")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"{kind.raw_table}{clause}", parameters


def _widen(spans: Spans, more: Spans) -> None:
    """Grow each key's span in `spans` to cover its span in `more`."""
    for key, (first, last) in more.items():
        known = spans.get(key)
        spans[key] = (first, last) if known is None else (min(first, known[0]), max(last, known[1]))
