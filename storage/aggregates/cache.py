"""The one cache of GetStats: cells by stamp, sums of cells, and whole answers with their proof.

A cell's stamp is a random 62-bit version written with every change of the cell (and a fresh one
by every rebuild), so equal stamps mean equal contents: a cell's labels, event types and histogram
bins are fetched again only after a write changed it, and a year of daily buckets costs one query
per kind once the past days are cached.

Whole answers read from cells alone (one rollup key per kind, no groups, no raw rows) are cached
per query too, with what they were made of: the stamp of each kind's total cell, a fingerprint of
the stamps of the cells read, and the key spans that bounded the plans. A later call checks those
in one or two statements (unchanged_kinds) and, when nothing changed, hands out the same answer
objects again (the response mapping then reuses its serialized buckets as well).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from storage.aggregates.kinds import AggregateKind
from storage.aggregates.sql import SqlTarget
from storage.aggregates.sums import ReadCell
from storage.aggregates.tables import KEY_SPANS_TABLE
from storage.calendar import TOTAL
from storage.records import StatsAnswer, StatsQuery

Fingerprint = tuple[int, int, int]
"""Count of a set of cells, sum of the low 32 bits and sum of the high bits of their stamps.

Every write gives the cells it touches one fresh random 62-bit stamp, so the sums move with any
change of any cell (a new cell moves the count): as reliable as comparing stamps one by one, and
the database adds them up without handing a row to Python.
"""

_LOW_BITS = (1 << 32) - 1

Key = TypeVar("Key")
Value = TypeVar("Value")


def fingerprint(stamps: Iterable[int]) -> Fingerprint:
    """What CellRead.sql answers for cells with these stamps."""
    listed = list(stamps)
    return (
        len(listed),
        sum(stamp & _LOW_BITS for stamp in listed),
        sum(stamp >> 32 for stamp in listed),
    )


@dataclass(slots=True)
class CacheCounts:
    """How often the cache answered: whole answers, and cells at their stamps."""

    answer_hits: int = 0
    """Queries answered with a cached answer whose cells had not changed."""
    answer_misses: int = 0
    """Queries that could have been cached (cells only) but were read again, in whole or part."""
    cell_hits: int = 0
    """Cells found at the stamp the database gave them."""
    cell_misses: int = 0
    """Cells read from the database: absent from the cache, or changed since."""


@dataclass(frozen=True, slots=True)
class CellRead:
    """The cells one kind's answer was made of: a query for their fingerprint, and its value."""

    sql: str
    parameters: tuple[Any, ...]
    fingerprint: Fingerprint


@dataclass(frozen=True, slots=True)
class Guard:
    """The total cell of a dense key and its stamp (None: no such cell) when an answer was read."""

    table: str
    dimension: int
    key: str
    stamp: int | None


@dataclass(frozen=True, slots=True)
class KindAnswer:
    """One kind's stats per interval of a query, valid while its cells' fingerprints hold."""

    reads: tuple[CellRead, ...]
    results: list[Any]
    guard: Guard | None
    """Unchanged, it vouches for every cell of the key; changed, the reads' fingerprints decide."""


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A whole answer read from cells and spans alone (no raw rows), with what it was made of."""

    kinds: Mapping[str, KindAnswer]
    spans: Mapping[tuple[int, str], tuple[int, int] | None]
    """The key spans that bounded open or months-only ranges: a change moves the plans."""
    answer: StatsAnswer
    weight: int
    """Intervals times kinds: what the cache's budget counts."""


class _Budgeted(Generic[Key, Value]):
    """Entries dropped oldest first (insertion order) once their weights exceed a budget.

    Reordering on every hit cost more than it saved, so hits leave the order alone.
    """

    def __init__(self, budget: int, weigh: Callable[[Value], int]) -> None:
        self.entries: OrderedDict[Key, Value] = OrderedDict()
        self._weight = 0
        self._budget = budget
        self._weigh = weigh

    def put(self, key: Key, value: Value) -> None:
        previous = self.entries.pop(key, None)
        if previous is not None:
            self._weight -= self._weigh(previous)
        self.entries[key] = value
        self._weight += self._weigh(value)
        while self._weight > self._budget and self.entries:
            _, evicted = self.entries.popitem(last=False)
            self._weight -= self._weigh(evicted)


class CellCache:
    """Cells by (table, level, bucket, dimension, key) at a stamp, sums of cached cells, and whole
    answers; shared by the threads that serve reads, so every access holds its lock."""

    def __init__(
        self, max_weight: int = 4_000_000, max_answer_weight: int = 50_000, max_sums: int = 4096
    ) -> None:
        """A cache holding about `max_weight` counters and bins (8 bytes each in arrays).

        It also keeps whole answers of the queries read only from cells, up to
        `max_answer_weight` intervals (buckets) in all, and `max_sums` sums of several cells;
        their stats objects are mostly the cells' own, so an answer costs little beyond its lists.
        """
        self._cells: _Budgeted[tuple[Any, ...], tuple[int, ReadCell]] = _Budgeted(
            max_weight, lambda entry: entry[1].weight()
        )
        self._answers: _Budgeted[StatsQuery, CachedAnswer] = _Budgeted(
            max_answer_weight, lambda answer: answer.weight
        )
        self._sums: _Budgeted[tuple[Any, ...], tuple[tuple[ReadCell, ...], Any]] = _Budgeted(
            max_sums, lambda _: 1
        )
        self._lock = threading.Lock()
        self._counts = CacheCounts()

    @property
    def counts(self) -> CacheCounts:
        """Hits and misses so far, for metrics (a copy)."""
        with self._lock:
            return replace(self._counts)

    def note_answer(self, *, reused: bool) -> None:
        """Count a query that could be answered from the cache: reused whole, or read again."""
        with self._lock:
            if reused:
                self._counts.answer_hits += 1
            else:
                self._counts.answer_misses += 1

    def get_many(self, wanted: Sequence[tuple[tuple[Any, ...], int]]) -> list[ReadCell | None]:
        """The cached cells of many (key, stamp) pairs; None where absent or at another stamp."""
        entries = self._cells.entries
        found: list[ReadCell | None] = []
        hits = 0
        with self._lock:
            for key, stamp in wanted:
                entry = entries.get(key)
                if entry is not None and entry[0] == stamp:
                    found.append(entry[1])
                    hits += 1
                else:
                    found.append(None)
            self._counts.cell_hits += hits
            self._counts.cell_misses += len(wanted) - hits
        return found

    def put(self, key: tuple[Any, ...], stamp: int, cell: ReadCell) -> None:
        """Remember a cell at `stamp`."""
        with self._lock:
            self._cells.put(key, (stamp, cell))

    def sum(
        self,
        kind: AggregateKind,
        part: str | None,
        cells: Sequence[ReadCell],
        add_up: Callable[[AggregateKind, Sequence[ReadCell], str | None], Any],
    ) -> Any:
        """The stats of these cached cells added up, made by `add_up` once per set of cells.

        Keyed by the cells' identities: the entry holds the cells, so no identity is reused
        while it is cached, and a changed cell is a new object.
        """
        key = (kind.name, part, *map(id, cells))
        with self._lock:
            cached = self._sums.entries.get(key)
        if cached is not None and all(a is b for a, b in zip(cached[0], cells, strict=True)):
            return cached[1]
        stats = add_up(kind, cells, part)
        with self._lock:
            self._sums.put(key, (tuple(cells), stats))
        return stats

    def answer(self, query: StatsQuery) -> CachedAnswer | None:
        """The answer last computed for `query`, to be checked with unchanged_kinds()."""
        with self._lock:
            return self._answers.entries.get(query)

    def put_answer(self, query: StatsQuery, answer: CachedAnswer) -> None:
        """Remember an answer; the oldest go first beyond `max_answer_weight` intervals."""
        with self._lock:
            self._answers.put(query, answer)


def unchanged_kinds(
    target: SqlTarget, cache: CellCache, query: StatsQuery, cached: CachedAnswer
) -> set[str]:
    """The kinds of a cached answer whose cells all still have their fingerprints.

    None of them once a span it was planned with has changed. A kind whose key's total cell
    kept its stamp is unchanged without looking further: every write to a dense key's cells
    writes its total cell too, with the same fresh stamp (as does a rebuild). Other kinds'
    cells are fingerprinted, all in one more statement; where they hold, the answer is cached
    again with the new total stamps, so the next call stops at the first statement.
    """
    mark = target.mark
    selects: list[str] = []
    parameters: list[Any] = []
    spans = list(cached.spans.items())
    for index, ((dimension, key), _) in enumerate(spans):
        selects.append(
            f"SELECT {index}, count(*), coalesce(max(first_day), 0),"
            f" coalesce(max(last_day), 0) FROM {KEY_SPANS_TABLE}"
            f" WHERE dimension = {dimension} AND dimension_key = {mark}"
        )
        parameters.append(key)
    guarded = [(name, answer) for name, answer in cached.kinds.items() if answer.guard is not None]
    for index, (_, kind_answer) in enumerate(guarded):
        guard = kind_answer.guard
        assert guard is not None
        selects.append(
            f"SELECT {len(spans) + index}, count(*), coalesce(max(stamp), 0), 0"
            f" FROM {guard.table} WHERE level = {TOTAL} AND bucket_start = 0"
            f" AND dimension = {guard.dimension} AND dimension_key = {mark}"
        )
        parameters.append(guard.key)
    guards: dict[str, int | None] = {}
    if selects:
        for row in target.query(" UNION ALL ".join(selects), parameters):
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
        for row in target.query(" UNION ALL ".join(selects), parameters):
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
        cache.put_answer(query, replace(cached, kinds={**cached.kinds, **refreshed}))
    return unchanged | checked
