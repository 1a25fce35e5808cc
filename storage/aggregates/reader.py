"""GetStats from rollup cells: exact answers that never scan the raw tables.

One read plans each kind's scope and intervals (plan), fetches the cells and the few raw rows
at unaligned ends (reads), adds them up (sums), and keeps answers made of cells alone in the
cache (cache). Groups rank keys by their cells' counts; the details of the top conversations of a
group-by-conversation come from their rows (conversation cells count, nothing more).
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from storage.aggregates.cache import CachedAnswer, CellCache, Guard, KindAnswer, unchanged_kinds
from storage.aggregates.kinds import ALL, CONVERSATION, EVENT_TYPE, MODEL, USER, AggregateKind
from storage.aggregates.plan import (
    BucketKey,
    Interval,
    Planner,
    RawScope,
    RollupScope,
    Scope,
    by_level,
    query_kinds,
    scope_of,
    union,
)
from storage.aggregates.reads import Reads, facts_start, key_position
from storage.aggregates.sql import Dialect, Execute, SqlTarget
from storage.aggregates.sums import ReadCell, Sum, tally_rows
from storage.calendar import BUCKET_LEVELS, HOUR, SECOND, TOTAL, bucket_bounds, epoch_microseconds
from storage.records import (
    GroupBy,
    StatsAnswer,
    StatsBucket,
    StatsGroup,
    StatsPeriod,
    StatsQuery,
    StatsSet,
)

GROUP_DIMENSIONS: Mapping[GroupBy, int] = {
    "model": MODEL,
    "event_type": EVENT_TYPE,
    "conversation": CONVERSATION,
    "user": USER,
}

Ranked = tuple[list[BucketKey], dict[str, list[Sequence[Any]]]]
"""What ranking a group's keys read: the cells of the plan, and the edge rows per key."""


class StatsReader:
    """Answers StatsQuery in the caller's read transaction (one snapshot for every query)."""

    def __init__(self, execute: Execute, dialect: Dialect, cache: CellCache) -> None:
        """Read through `execute` (driver-level SQL) and cache cells in `cache`."""
        self._target = SqlTarget(execute, dialect)
        self._cache = cache
        self._planner = Planner(self._target)
        self._reads = Reads(self._target, cache)

    def read(self, query: StatsQuery) -> StatsAnswer:
        """Aggregate everything the query asks for."""
        kinds = query_kinds(query)
        cacheable = query.group_by is None and all(
            isinstance(scope_of(kind, query), RollupScope) for kind in kinds
        )
        cached = self._cache.answer(query) if cacheable else None
        unchanged = (
            unchanged_kinds(self._target, self._cache, query, cached)
            if cached is not None
            else set()
        )
        if cached is not None and len(unchanged) == len(cached.kinds) == len(kinds):
            # Every cell it was made of is unchanged: the same answer, down to its objects.
            self._cache.note_answer(reused=True)
            return cached.answer
        if cacheable:
            self._cache.note_answer(reused=False)
        low = None if query.start_time is None else epoch_microseconds(query.start_time)
        high = None if query.end_time is None else epoch_microseconds(query.end_time)
        intervals: list[Interval] = [(low, high)]
        bounds: list[datetime] = []
        if query.bucket is not None:
            assert query.start_time is not None
            assert query.end_time is not None
            assert low is not None
            assert high is not None
            bounds = bucket_bounds(query.bucket, query.start_time, query.end_time, 1 << 30) or []
            level = BUCKET_LEVELS.get(query.bucket)
            for start, end in itertools.pairwise(epoch_microseconds(b) for b in bounds):
                if level is not None and low <= start and end <= high:
                    # A whole bucket of a rollup level: its plan is its own cell.
                    self._planner.whole[(start, end)] = (level, start // SECOND)
                intervals.append((max(start, low), min(end, high)))
        previous: Interval | None = None
        if query.compare_previous:
            assert low is not None
            assert high is not None
            previous = (low - (high - low), low)
            intervals.append(previous)

        results: dict[str, list[Any]] = {}
        kind_answers: dict[str, KindAnswer] = {}
        for kind in kinds:
            if cached is not None and kind.name in unchanged:
                kind_answers[kind.name] = cached.kinds[kind.name]
                results[kind.name] = cached.kinds[kind.name].results
                continue
            self._reads.cell_reads = [] if cacheable else None
            scope = scope_of(kind, query)
            results[kind.name] = self._interval_stats(kind, scope, intervals)
            if self._reads.cell_reads is not None:
                assert isinstance(scope, RollupScope)
                kind_answers[kind.name] = KindAnswer(
                    tuple(self._reads.cell_reads), results[kind.name], self._guard(kind, scope)
                )
            self._reads.cell_reads = None

        absent = [None] * len(intervals)

        def stats_set(index: int) -> StatsSet:
            return StatsSet(
                *(
                    results.get(name, absent)[index]
                    for name in ("feedback", "interactions", "events")
                )
            )

        buckets = [
            StatsBucket(start, end, stats_set(index))
            for index, (start, end) in enumerate(itertools.pairwise(bounds), start=1)
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
        if cacheable and not self._reads.outside_cells:
            # Kinds taken from the cached answer were planned with the same spans (else none is).
            spans = {**(cached.spans if cached is not None else {}), **self._planner.spans}
            self._cache.put_answer(
                query,
                CachedAnswer(kind_answers, spans, answer, len(intervals) * len(kinds) + 1),
            )
        return answer

    def _guard(self, kind: AggregateKind, scope: RollupScope) -> Guard | None:
        """The total cell of the kind's key, if the key keeps one (dense keys do)."""
        if TOTAL not in kind.levels[scope.dimension]:
            return None
        table = kind.counters.name
        rows = self._target.query(
            f"SELECT stamp FROM {table} WHERE level = {TOTAL} AND bucket_start = 0"
            f" AND dimension = {scope.dimension} AND dimension_key = {self._target.mark}",
            (scope.key,),
        )
        return Guard(table, scope.dimension, scope.key, int(rows[0][0]) if rows else None)

    # -- intervals --

    def _interval_stats(
        self, kind: AggregateKind, scope: Scope, intervals: Sequence[Interval]
    ) -> list[Any]:
        if isinstance(scope, RawScope):
            return self._raw_interval_stats(kind, scope, intervals)
        return [
            total.own_stats(kind)
            if isinstance(total, ReadCell)
            else total.stats(kind, scope.part, self._cache)
            for total in self._rollup_sums(kind, scope, intervals)
        ]

    def _raw_interval_stats(
        self, kind: AggregateKind, scope: RawScope, intervals: Sequence[Interval]
    ) -> list[Any]:
        rows = self._reads.raw_rows(kind, scope.conditions, union(intervals), narrow=True)
        times = [row[0] for row in rows]
        start = facts_start(kind)
        results = []
        for low, high in intervals:
            first = 0 if low is None else bisect_left(times, low)
            last = len(rows) if high is None else bisect_left(times, high)
            total = Sum()
            total.add_tally(tally_rows(kind, rows[first:last], start))
            results.append(total.stats(kind, None, self._cache))
        return results

    def _rollup_sums(
        self, kind: AggregateKind, scope: RollupScope, intervals: Sequence[Interval]
    ) -> list[Sum | ReadCell]:
        """Per interval, the cells and raw edge rows of one key, added up.

        An interval that is exactly one present cell, with no part to pick out of it, is the
        cell itself; one with no cells and no rows is an empty Sum.
        """
        levels = kind.levels[scope.dimension]
        plans, wanted, raw_ranges = self._planner.plans_of(
            intervals, levels, scope.dimension, scope.key
        )
        cells = self._reads.cells(kind, scope.dimension, [scope.key], wanted)
        conditions: tuple[tuple[str, str], ...] = ()
        column = kind.dimension_of[scope.dimension].column
        if column is not None:
            conditions = ((column, scope.key),)
        if scope.part is not None:
            assert kind.part is not None
            conditions += ((kind.part.fact, scope.part),)
        # A user's partial months are that user's rows (user index); partial hours of the dense
        # dimensions are every row of the hour (time index).
        sparse = HOUR not in levels
        rows = (
            self._reads.raw_rows(kind, conditions, raw_ranges, narrow=sparse) if raw_ranges else []
        )
        times = [row[0] for row in rows]
        start = facts_start(kind)
        key = scope.key
        whole_cell = scope.part is None
        sums: list[Sum | ReadCell] = []
        for plan_cells, edges in plans:
            if whole_cell and not edges and len(plan_cells) == 1:
                level, bucket = plan_cells[0]
                cell = cells.get((level, bucket, key))
                sums.append(cell if cell is not None else Sum())
                continue
            total = Sum()
            found = total.cells
            for level, bucket in plan_cells:
                cell = cells.get((level, bucket, key))
                if cell is not None:
                    found.append(cell)
            for low, high in edges:
                assert low is not None
                assert high is not None
                edge_rows = rows[bisect_left(times, low) : bisect_left(times, high)]
                total.add_tally(tally_rows(kind, edge_rows, start))
            sums.append(total)
        return sums

    # -- groups --

    def _groups(
        self,
        query: StatsQuery,
        kinds: Sequence[AggregateKind],
        interval: Interval,
        overall: Mapping[str, Any],
    ) -> list[StatsGroup]:
        assert query.group_by is not None
        dimension = GROUP_DIMENSIONS[query.group_by]
        group_kinds = [kind for kind in kinds if dimension in kind.levels]
        per_kind: dict[str, dict[str, Any]] = {}
        counts: dict[str, int] = {}
        pending: list[AggregateKind] = []
        for kind in group_kinds:
            scope = scope_of(kind, query)
            if isinstance(scope, RollupScope) and scope.dimension == ALL:
                pending.append(kind)
                continue
            stats = self._group_stats_by_filter(
                kind, scope, dimension, interval, overall[kind.name]
            )
            per_kind[kind.name] = stats
            for key, kind_stats in stats.items():
                counts[key] = counts.get(key, 0) + kind_stats.total_count
        ranked_pending = {kind.name: self._rank(kind, dimension, interval) for kind in pending}
        for ranking in ranked_pending.values():
            for key, count in ranking[0].items():
                counts[key] = counts.get(key, 0) + count
        ranked = sorted(
            ((key, count) for key, count in counts.items() if count > 0),
            key=lambda item: (-item[1], item[0]),
        )[: query.top_n]
        top = [key for key, _ in ranked]
        for kind in pending:
            per_kind[kind.name] = self._group_stats(
                kind, dimension, top, interval, ranked_pending[kind.name][1]
            )
        groups = []
        for key in top:
            sets = {
                kind.name: per_kind[kind.name].get(key) or kind.empty
                for kind in kinds
                if kind in group_kinds
            }
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
        self, kind: AggregateKind, scope: Scope, dimension: int, interval: Interval, overall: Any
    ) -> dict[str, Any]:
        """Groups of a filtered selection: derived from the totals, or from the filter's rows."""
        if dimension == kind.part_dimension:
            # Groups by part name are the overall part counts (events by type).
            return {
                name: kind.stats(({"total_count": count}, {name: count}, ()))
                for name, count in overall.type_counts.items()
            }
        if isinstance(scope, RollupScope) and scope.dimension == dimension:
            return {scope.key: overall} if overall.total_count else {}
        if isinstance(scope, RollupScope):
            column = kind.dimension_of[scope.dimension].column
            assert column is not None
            conditions: tuple[tuple[str, str], ...] = ((column, scope.key),)
            if scope.part is not None:
                assert kind.part is not None
                conditions += ((kind.part.fact, scope.part),)
        else:
            conditions = scope.conditions
        rows = self._reads.raw_rows(kind, conditions, [interval], narrow=True)
        return self._stats_by_key(kind, dimension, rows, None)

    def _stats_by_key(
        self,
        kind: AggregateKind,
        dimension: int,
        rows: Sequence[Sequence[Any]],
        keys: Sequence[str] | None,
    ) -> dict[str, Any]:
        """Stats of raw rows per key of the dimension (of the given keys, or of every key)."""
        position = key_position(kind, dimension)
        by_key: dict[str, list[Sequence[Any]]] = {}
        for row in rows:
            by_key.setdefault(row[position] or "", []).append(row)
        start = facts_start(kind)
        result = {}
        for key in by_key if keys is None else keys:
            total = Sum()
            total.add_tally(tally_rows(kind, by_key.get(key, []), start))
            result[key] = total.stats(kind, None, self._cache)
        return result

    def _rank(
        self, kind: AggregateKind, dimension: int, interval: Interval
    ) -> tuple[dict[str, int], Ranked]:
        """Record counts per key of the dimension over the interval, and what was read for it."""
        # Open ends reach as far as any record (the span of ALL).
        cells, edges = self._planner.plan(interval, kind.levels[dimension], ALL, "")
        counts: dict[str, int] = {}
        for level, starts in by_level(cells).items():
            sql, parameters = self._target.in_list("bucket_start", starts)
            for key, count in self._target.query(
                f"SELECT dimension_key, sum(total_count) FROM {kind.counters.name}"
                f" WHERE level = {level} AND {sql} AND dimension = {dimension}"
                " GROUP BY dimension_key",
                parameters,
            ):
                counts[key] = counts.get(key, 0) + int(count)
        rows_by_key: dict[str, list[Sequence[Any]]] = {}
        if edges:
            position = key_position(kind, dimension)
            for row in self._reads.raw_rows(kind, (), union(edges), narrow=False):
                key = row[position] or ""
                rows_by_key.setdefault(key, []).append(row)
                counts[key] = counts.get(key, 0) + 1
        return counts, (cells, rows_by_key)

    def _group_stats(
        self,
        kind: AggregateKind,
        dimension: int,
        keys: Sequence[str],
        interval: Interval,
        read: Ranked,
    ) -> dict[str, Any]:
        """Full stats of the top keys from the same cells and edge rows the ranking used."""
        if not keys:
            return {}
        if not kind.dimension_of[dimension].detailed:
            # Conversation cells only count; the top conversations' rows are few.
            column = kind.dimension_of[dimension].column
            assert column is not None
            rows = self._reads.raw_rows(kind, (), [interval], narrow=True, key_in=(column, keys))
            return self._stats_by_key(kind, dimension, rows, keys)
        plan_cells, rows_by_key = read
        cells = self._reads.cells(kind, dimension, keys, by_level(plan_cells))
        start = facts_start(kind)
        result = {}
        for key in keys:
            total = Sum()
            for level, bucket in plan_cells:
                cell = cells.get((level, bucket, key))
                if cell is not None:
                    total.cells.append(cell)
            total.add_tally(tally_rows(kind, rows_by_key.get(key, []), start))
            result[key] = total.stats(kind, None, self._cache)
        return result
