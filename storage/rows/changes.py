"""The change log: which rows each write transaction added, numbered in commit order, so the live
tail can read new records by position on any replica.

Every write transaction that inserts feedback, interactions or events ends by taking the next
number of the one-row change clock and writing one entry per kind with the ids it added. The
clock's row lock is held from that update to the commit, so numbers follow commit order on
PostgreSQL too, where ids do not: a sequence hands out ids as rows are inserted, and a
transaction holding a lower id may commit after one holding a higher. A reader that has seen
entry n has therefore seen every entry before it, and one that passes over an id never finds it
committed later. On PostgreSQL the transaction also sends one NOTIFY with its number: a wake-up
for the other replicas' tails, which then read the entries; nothing is taken from the hint.

The lock serializes the last moment of concurrent write transactions (the update, the entry,
the commit), as a NOTIFY per transaction does anyway; group commit makes those few per second.

Old entries are compacted after the watch history period. Each kind's horizon keeps the newest
compacted number and the highest id compacted, so a position or a list token from before the
horizon is answered "compacted" rather than silently resumed with a gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select

from storage.records import ChangeEntry, Horizon, LogState
from storage.rows.row_codec import CODECS, MARKS, Dialect
from storage.schema.models import ChangeClockRow, ChangeHorizonRow, ChangeRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from storage.rows.bulk_insert import Execute

WATCHED_KINDS = ("feedback", "interactions", "events")
"""The record kinds whose new rows the log holds (their table names)."""
CHANNEL = "feedback_changes"
"""The PostgreSQL NOTIFY channel; the payload is the entry's number."""

_CLOCK = ChangeClockRow.__tablename__
_CHANGES = ChangeRow.__tablename__


class ChangeCollector:
    """The ids one write transaction adds, written at its end as one log entry per kind."""

    def __init__(self) -> None:
        self._ids: dict[str, list[int]] = {}
        self.seq: int | None = None
        """The transaction's number once apply() wrote its entries (None: it added nothing)."""

    def add(self, kind: str, ids: Sequence[int]) -> None:
        """Note new rows of `kind` (one of WATCHED_KINDS)."""
        self._ids.setdefault(kind, []).extend(ids)

    def apply(self, execute: Execute, dialect: Dialect, now: datetime) -> None:
        """Take the next number and write the entries; the last statements before the commit,
        so the clock's lock is held for as short a time as the commit takes."""
        if not self._ids:
            return
        ((seq,),) = execute(f"UPDATE {_CLOCK} SET seq = seq + 1 WHERE id = 1 RETURNING seq", ())
        mark = MARKS[dialect]
        at = CODECS[dialect].encode_time(now)
        values: list[Any] = []
        for kind, ids in sorted(self._ids.items()):
            ordered = sorted(ids)
            values.extend((seq, kind, ordered[0], ordered[-1], len(ordered), pack(ordered), at))
        row = f"({', '.join([mark] * 7)})"
        execute(
            f"INSERT INTO {_CHANGES} (seq, kind, first_id, last_id, row_count, ids, commit_time) "
            f"VALUES {', '.join([row] * len(self._ids))}",
            tuple(values),
        )
        if dialect == "postgresql":
            execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(seq)))
        self.seq = seq


class ChangeLog:
    """Reads and compaction of the change log, through one session whose transaction the
    caller owns."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def state(self) -> LogState:
        """The clock and every kind's horizon."""
        clock = self._session.get_one(ChangeClockRow, 1)
        horizons = {
            row.kind: Horizon(row.seq, row.last_id)
            for row in self._session.scalars(select(ChangeHorizonRow))
        }
        return LogState(clock.epoch, clock.seq, horizons)

    def entries_after(self, seq: int, through: int, limit: int) -> list[ChangeEntry]:
        """Up to `limit` entries numbered after `seq` and at most `through`, in commit order."""
        rows = self._session.execute(
            select(ChangeRow.seq, ChangeRow.kind, ChangeRow.ids, ChangeRow.commit_time)
            .where(ChangeRow.seq > seq, ChangeRow.seq <= through)
            .order_by(ChangeRow.seq, ChangeRow.kind)
            .limit(limit)
        )
        return [ChangeEntry(seq, kind, unpack(ids), at) for seq, kind, ids, at in rows]

    def first_after_id(self, kind: str, row_id: int) -> int | None:
        """The number of the oldest entry of `kind` holding an id above `row_id`, if any."""
        return self._session.scalars(
            select(func.min(ChangeRow.seq)).where(
                ChangeRow.kind == kind, ChangeRow.last_id > row_id
            )
        ).one()

    def compact(self, before: datetime, limit: int) -> int:
        """Remove up to `limit` of the oldest entries committed before `before`, moving every
        kind's horizon past them; how many were removed.

        The horizons are locked first, so replicas compacting at once take turns. Every
        horizon moves, those of kinds without entries in the range too: a position is
        resumable only while every entry after it is still here.
        """
        horizons = list(self._session.scalars(select(ChangeHorizonRow).with_for_update()))
        oldest = self._session.execute(
            select(ChangeRow.seq, ChangeRow.commit_time).order_by(ChangeRow.seq).limit(limit)
        ).all()
        through = None
        for seq, commit_time in oldest:
            if commit_time >= before:
                break
            through = seq
        if through is None:
            return 0
        last_ids = dict(
            self._session.execute(
                select(ChangeRow.kind, func.max(ChangeRow.last_id))
                .where(ChangeRow.seq <= through)
                .group_by(ChangeRow.kind)
            ).all()
        )
        for horizon in horizons:
            horizon.seq = max(horizon.seq, through)
            horizon.last_id = max(horizon.last_id, last_ids.get(horizon.kind, 0))
        deleted = self._session.execute(delete(ChangeRow).where(ChangeRow.seq <= through))
        return int(getattr(deleted, "rowcount", 0))


def pack(ids: Sequence[int]) -> bytes:
    """Ascending ids as runs of consecutive ids: each run its gap from the previous run's end
    and its length, as unsigned LEB128 varints. One run per kind is usual (one writer's batch)."""
    out = bytearray()
    previous = 0
    start = ids[0]
    length = 0
    for row_id in ids:
        if row_id == start + length:
            length += 1
            continue
        _varint(out, start - previous)
        _varint(out, length)
        previous = start + length
        start, length = row_id, 1
    _varint(out, start - previous)
    _varint(out, length)
    return bytes(out)


def unpack(data: bytes) -> tuple[int, ...]:
    """The ids pack() packed."""
    ids: list[int] = []
    previous = 0
    position = 0
    while position < len(data):
        gap, position = _read_varint(data, position)
        length, position = _read_varint(data, position)
        start = previous + gap
        ids.extend(range(start, start + length))
        previous = start + length
    return tuple(ids)


def _varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
