"""The SQL of a stats read: cells with their details (through the cache), and raw rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from storage.aggregates.cache import CellCache, CellRead, fingerprint
from storage.aggregates.histogram import Extremes
from storage.aggregates.kinds import AggregateKind
from storage.aggregates.plan import Interval
from storage.aggregates.sql import SqlTarget
from storage.aggregates.sums import ReadCell
from storage.aggregates.tables import RollupTable

_FEW_CELLS = 32
"""Cells read with their counters in one query rather than stamps first."""

CellKey = tuple[int, int, str]
"""(level, bucket_start, dimension_key) of a cell of a known dimension."""

Details = tuple[dict[str, int], dict[int, dict[int, int]]]
"""A cell's part counts, and bin counts per metric."""


def key_position(kind: AggregateKind, dimension: int) -> int:
    """Where a dimension's key is in a raw row of raw_rows(): after the time."""
    keyed = [d.id for d in kind.dimensions if d.column is not None]
    return 1 + keyed.index(dimension)


def facts_start(kind: AggregateKind) -> int:
    """Where the facts begin in a raw row of raw_rows(): after the time and the keys."""
    return 1 + sum(1 for d in kind.dimensions if d.column is not None)


class Reads:
    """Reads of one transaction, remembering whether any raw row was read and which cells."""

    def __init__(self, target: SqlTarget, cache: CellCache) -> None:
        """Read through `target`, cells through `cache`."""
        self._target = target
        self._cache = cache
        self.cell_reads: list[CellRead] | None = None
        """While answering a kind that may be cached: the cells it read."""
        self.outside_cells = False
        """Whether raw rows were read: such answers are not cached."""

    def cells(
        self,
        kind: AggregateKind,
        dimension: int,
        keys: Sequence[str],
        wanted: Mapping[int, list[int]],
    ) -> dict[CellKey, ReadCell]:
        """The cells of the keys at the wanted buckets that hold records, with their details.

        Stamps first: a cell cached at its stamp needs nothing more, and fetching the counters
        of a year of cells costs three times as much as their stamps. A few cells (a user's
        months) come with their counters at once: a second query would cost more.
        """
        if not wanted or not keys:
            return {}
        table = kind.counters
        stamps_sql, stamps_parameters = self._cell_select(table, "stamp", dimension, keys, wanted)
        extremes_count = len(table.extremes)
        counters = ", ".join(table.counters + table.extremes)
        small = len(keys) * sum(map(len, wanted.values())) <= _FEW_CELLS
        stamps = self._target.query(
            *(
                self._cell_select(table, f"stamp, {counters}", dimension, keys, wanted)
                if small
                else (stamps_sql, stamps_parameters)
            )
        )
        if self.cell_reads is not None:
            self.cell_reads.append(
                CellRead(
                    stamps_sql,
                    tuple(stamps_parameters),
                    fingerprint(int(row[3]) for row in stamps),
                )
            )
        cached = self._cache.get_many(
            [((table.name, row[0], row[1], dimension, row[2]), row[3]) for row in stamps]
        )
        found: dict[CellKey, ReadCell] = {}
        stale: dict[int, list[int]] = {}
        for row, cell in zip(stamps, cached, strict=True):
            if cell is not None:
                found[(row[0], row[1], row[2])] = cell
            else:
                stale.setdefault(row[0], []).append(row[1])
        if not stale:
            return found
        missing: dict[CellKey, tuple[int, tuple[Any, ...]]] = {
            (row[0], row[1], row[2]): (row[3], tuple(row[4:]))
            for row in (
                stamps
                if small
                else self._target.query(
                    *self._cell_select(table, f"stamp, {counters}", dimension, keys, stale)
                )
            )
            if not small or (row[0], row[1], row[2]) not in found
        }
        details = self._details(kind, dimension, missing)
        measures = len(kind.measures)
        for cell_key, (stamp, values) in missing.items():
            parts, histograms = details.get(cell_key, ({}, {}))
            extremes = Extremes(measures)
            if extremes_count:
                counts = values[:-extremes_count]
                extremes.values = list(values[-extremes_count:])
            else:
                counts = values
            cell = ReadCell(
                counts,
                parts,
                tuple(
                    extremes.histogram(metric, histograms.get(metric, {}).items())
                    for metric in range(measures)
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
        key_sql, key_parameters = self._target.in_list("dimension_key", keys)
        for level, starts in wanted.items():
            bucket_sql, bucket_parameters = self._target.in_list("bucket_start", starts)
            selects.append(
                f"SELECT level, bucket_start, dimension_key, {columns} FROM {table.name}"
                f" WHERE level = {level} AND {bucket_sql} AND dimension = {dimension}"
                f" AND {key_sql}"
            )
            parameters += [*bucket_parameters, *key_parameters]
        return " UNION ALL ".join(selects), parameters

    def _details(
        self,
        kind: AggregateKind,
        dimension: int,
        cells: Mapping[CellKey, tuple[int, tuple[Any, ...]]],
    ) -> dict[CellKey, Details]:
        """Parts and histogram bins of the cells, read in one statement for both child tables."""
        by_level: dict[int, set[int]] = {}
        keys: set[str] = set()
        for level, start, key in cells:
            by_level.setdefault(level, set()).add(start)
            keys.add(key)
        details: dict[CellKey, Details] = {}

        def entry(cell_key: CellKey) -> Details:
            found = details.get(cell_key)
            if found is None:
                found = details[cell_key] = ({}, {})
            return found

        key_sql, key_parameters = self._target.in_list("dimension_key", sorted(keys))
        # Parts (a name) and bins (metric, bin) in one statement, padded to the same columns.
        children = [
            (child, columns)
            for child, columns, kept in (
                (kind.part_rollups, "{}, 0, 0", kind.keeps_parts(dimension)),
                (kind.histograms, "NULL, {}", kind.histograms is not None),
            )
            if child is not None and kept
        ]
        selects, parameters = [], []
        for child, columns in children:
            names = columns.format(", ".join(child.key_columns[4:]))
            for level, starts in by_level.items():
                bucket_sql, bucket_parameters = self._target.in_list("bucket_start", sorted(starts))
                selects.append(
                    f"SELECT level, bucket_start, dimension_key, {names}, record_count"
                    f" FROM {child.name} WHERE level = {level} AND {bucket_sql}"
                    f" AND dimension = {dimension} AND {key_sql}"
                )
                parameters += [*bucket_parameters, *key_parameters]
        rows = self._target.query(" UNION ALL ".join(selects), parameters) if selects else []
        for row in rows:
            cell_key = (row[0], row[1], row[2])
            if cell_key not in cells:
                continue
            parts, histograms = entry(cell_key)
            if row[3] is not None:
                parts[row[3]] = row[6]
            else:
                histograms.setdefault(row[4], {})[row[5]] = row[6]
        if dimension == kind.part_dimension:
            # A cell keyed by a part name counts that name alone.
            for cell_key, (_, cell_counts) in cells.items():
                entry(cell_key)[0][cell_key[2]] = cell_counts[0]
        return details

    def raw_rows(
        self,
        kind: AggregateKind,
        conditions: Sequence[tuple[str, str]],
        ranges: Sequence[Interval],
        *,
        narrow: bool,
        key_in: tuple[str, Sequence[str]] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Raw rows (time in epoch microseconds, keys, facts) matching the conditions in the
        ranges, sorted by time.

        `narrow` lets the database pick the conditions' index (a message, conversation or user
        filter); otherwise SQLite is kept on the time index, whose ranges are partial hours.
        """
        self.outside_cells = True
        target = self._target
        mark = target.mark
        keys = [d.column for d in kind.dimensions if d.column is not None]
        selected = ", ".join([kind.time_column, *keys, *(fact.select for fact in kind.facts)])
        where: list[str] = []
        parameters: list[Any] = []
        for index, (column, value) in enumerate(conditions):
            # SQLite uses no index for "+column": only the time index (or the first, narrowest
            # condition when narrow) drives the search.
            unary = "+" if target.dialect == "sqlite" and (index > 0 or not narrow) else ""
            where.append(f"{unary}{column} = {mark}")
            parameters.append(value)
        if key_in is not None:
            # "" stands for records without a key; the index finds the others.
            column, wanted = key_in
            named = [key for key in wanted if key]
            matches = []
            if named:
                in_sql, in_parameters = target.in_list(column, named)
                matches.append(in_sql)
                parameters += in_parameters
            if len(named) < len(wanted):
                matches.append(f"{column} IS NULL")
            where.append(f"({' OR '.join(matches)})")
        if not ranges:
            return []
        selects, all_parameters = [], []
        for low, high in ranges:
            bounds, bound_parameters = list(where), list(parameters)
            if low is not None:
                bounds.append(f"{kind.time_column} >= {mark}")
                bound_parameters.append(target.time_parameter(low))
            if high is not None:
                bounds.append(f"{kind.time_column} < {mark}")
                bound_parameters.append(target.time_parameter(high))
            clause = f" WHERE {' AND '.join(bounds)}" if bounds else ""
            selects.append(f"SELECT {selected} FROM {kind.raw_table}{clause}")
            all_parameters += bound_parameters
        rows = [
            (target.time_value(row[0]), *row[1:])
            for row in target.query(" UNION ALL ".join(selects), all_parameters)
        ]
        rows.sort(key=lambda row: row[0])
        return rows
