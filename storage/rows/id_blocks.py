"""Time bounds of each block of ids of the listed tables, so a keyset page with a time range
scans only the ids whose rows can fall in the range, however times and ids relate.

Every write transaction widens the bounds of the blocks its new rows fall in (BlockChanges);
deletes leave them alone, so they stay supersets: a page filtered by time through them is
exact, and at worst reads a few ids too many.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from storage.rows.bulk_insert import MAX_VARIABLES
from storage.rows.row_codec import CODECS, MARKS, Dialect
from storage.schema.models import ListIdBlockRow

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from storage.rows.bulk_insert import Execute

BLOCK_IDS = 1024
"""Ids per block: a page scans at most one partly matching block at each end of its range."""

TIME_COLUMNS: dict[str, str] = {
    "feedback": "create_time",
    "interactions": "occur_time",
    "events": "event_time",
}
"""Per listed table (the block's kind), the time column its lists' time ranges filter on."""

_BLOCKS = ListIdBlockRow.__table__
_TABLE = ListIdBlockRow.__tablename__
_COLUMNS = ("kind", "block", "min_time", "max_time", "row_count")

_FIRST_READ = 16
"""Blocks read by a page's first lookup; each further lookup reads twice as many, up to
_MAX_READ, so a page that fills in its first run pays for few."""
_MAX_READ = 1024


class BlockChanges:
    """The blocks one write transaction widens, written at its end in one statement per chunk.

    The caller writes them after its raw rows and before its rollups, and rows go in key order,
    so concurrent PostgreSQL writers lock block rows in one global order (see
    storage.aggregates.write.RollupChanges).
    """

    def __init__(self) -> None:
        """Start with no changes."""
        self._blocks: dict[tuple[str, int], list[Any]] = {}

    def add(self, kind: str, rows: Iterable[tuple[int, datetime]]) -> None:
        """Widen the blocks of new rows of `kind`, given as (id, time)."""
        blocks = self._blocks
        for row_id, moment in rows:
            key = (kind, row_id // BLOCK_IDS)
            bounds = blocks.get(key)
            if bounds is None:
                blocks[key] = [moment, moment, 1]
                continue
            if moment < bounds[0]:
                bounds[0] = moment
            elif moment > bounds[1]:
                bounds[1] = moment
            bounds[2] += 1

    def apply(self, execute: Execute, dialect: Dialect) -> None:
        """Write every pending change, sorted by key, then forget them."""
        pending, self._blocks = self._blocks, {}
        if not pending:
            return
        encode = CODECS[dialect].encode_time
        rows = [
            (kind, block, encode(low), encode(high), count)
            for (kind, block), (low, high, count) in sorted(pending.items())
        ]
        per_statement = MAX_VARIABLES // len(_COLUMNS)
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            parameters = tuple(value for row in chunk for value in row)
            execute(_upsert_sql(len(chunk), MARKS[dialect]), parameters)


@cache
def _upsert_sql(rows: int, mark: str) -> str:
    table = _TABLE
    values = ", ".join(["(" + ", ".join([mark] * len(_COLUMNS)) + ")"] * rows)
    return (
        f"INSERT INTO {table} ({', '.join(_COLUMNS)}) VALUES {values}"
        " ON CONFLICT (kind, block) DO UPDATE SET"
        f" min_time = CASE WHEN excluded.min_time < {table}.min_time"
        f" THEN excluded.min_time ELSE {table}.min_time END,"
        f" max_time = CASE WHEN excluded.max_time > {table}.max_time"
        f" THEN excluded.max_time ELSE {table}.max_time END,"
        f" row_count = {table}.row_count + excluded.row_count"
    )


def rebuild_statements() -> list[str]:
    """Statements replacing every block with what the raw tables hold now (bulk loads)."""
    table = _TABLE
    return [f"DELETE FROM {table}"] + [
        f"INSERT INTO {table} ({', '.join(_COLUMNS)})"
        f" SELECT '{kind}', id / {BLOCK_IDS}, min({column}), max({column}), count(*)"
        f" FROM {kind} GROUP BY id / {BLOCK_IDS}"
        for kind, column in TIME_COLUMNS.items()
    ]


def rebuild(run: Callable[[str], object]) -> None:
    """Replace every block with what the raw tables hold now, through `run` (one statement)."""
    for statement in rebuild_statements():
        run(statement)


def id_runs(
    connection: Connection,
    kind: str,
    start: datetime | None,
    end: datetime | None,
    cursor: int | None,
    *,
    newest_first: bool,
) -> Iterator[tuple[int, int]]:
    """Id ranges (low, high), in page order from the cursor, holding every row of `kind` whose
    time may lie in [start, end): runs of consecutive blocks whose bounds overlap the range, cut
    into pieces of 2, 4, 8... blocks from the run's start in page order.

    The pieces keep a page's cost bounded whatever plan the database picks: its first statement
    reads at most 2 blocks, while a page whose other filters match few rows needs only a
    logarithmic number of statements per run.
    """
    blocks = _BLOCKS.c
    conditions = [blocks.kind == kind]
    if start is not None:
        conditions.append(blocks.max_time >= start)
    if end is not None:
        conditions.append(blocks.min_time < end)
    next_block = None if cursor is None else cursor // BLOCK_IDS
    read = _FIRST_READ
    while True:
        where = list(conditions)
        if next_block is not None:
            where.append(blocks.block <= next_block if newest_first else blocks.block >= next_block)
        order = blocks.block.desc() if newest_first else blocks.block.asc()
        statement = select(blocks.block).where(*where).order_by(order).limit(read)
        found = list(connection.execute(statement).scalars())
        for low, high in _runs(found, newest_first=newest_first):
            yield from _pieces(low, high, newest_first=newest_first)
        if len(found) < read:
            return
        next_block = found[-1] - 1 if newest_first else found[-1] + 1
        read = min(2 * read, _MAX_READ)


def _pieces(low: int, high: int, *, newest_first: bool) -> Iterator[tuple[int, int]]:
    """[low, high] cut into ranges of 2, 4, 8... blocks, in page order."""
    width = 2 * BLOCK_IDS
    while low <= high:
        if newest_first:
            yield max(low, high - width + 1), high
            high -= width
        else:
            yield low, min(high, low + width - 1)
            low += width
        width *= 2


def _runs(blocks: list[int], *, newest_first: bool) -> Iterator[tuple[int, int]]:
    """The id ranges of runs of consecutive block numbers, given in page order."""
    step = -1 if newest_first else 1
    index = 0
    while index < len(blocks):
        first = last = blocks[index]
        index += 1
        while index < len(blocks) and blocks[index] == last + step:
            last = blocks[index]
            index += 1
        low, high = min(first, last), max(first, last)
        yield low * BLOCK_IDS, high * BLOCK_IDS + BLOCK_IDS - 1
