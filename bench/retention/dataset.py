"""The prepared file: a year of rows older than every retention period, plus recent chat turns.

The old rows come from bench.read's bulk loader (raw executemany in the project's encodings), in
its proportions: for every 7 rows 4 feedback entries, 1 interaction and 2 events. They span the
365 days that end OLD_DATA_AGE ago, so all of them have expired under RETENTION. The recent
turns are what every SubmitFeedback of the bench rates (a conversation-level rating, linked to
the conversation's latest turn), so writes take the ordinary path that reads the interaction
first; they are stored through the storage layer, and the rollups are then rebuilt from every
row, as `feedback-server rebuild-rollups` does.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import payloads
from bench.read.dataset import BulkLoader, Progress, Shape, Year, create_database, sqlite_time
from storage import Storage
from storage.records import NewInteraction

RETENTION = "feedback=400d,events=180d,interactions=90d"
"""The server flag of the rounds with the sweep: the periods the issue names. The sweep takes the
kinds in this order, so a window shorter than the whole expiry sees feedback's."""
KIND_TABLES = {
    "feedback": ("feedback", "feedback_history"),
    "events": ("events",),
    "interactions": ("interactions",),
}
"""The tables each kind's expiry deletes from (replaced votes expire with feedback)."""
OLD_DATA_AGE = timedelta(days=435)
"""How old the newest old row is: past the longest period, with a month to spare."""
RATED_TURNS = 20
"""Recent turns of the conversation every SubmitFeedback rates."""
RATED_TURNS_AGE = timedelta(hours=1)
"""How long ago the first recent turn happened; the interactions' period is 90 days."""
TIME_COLUMNS = {
    "feedback": "create_time",
    "feedback_history": "create_time",
    "interactions": "occur_time",
    "events": "event_time",
}
"""The time each table's rows expire by (server.service.retention)."""


def kind_retention(kind: str) -> str:
    """The --retention of RETENTION's period for `kind` alone."""
    return next(part for part in RETENTION.split(",") if part.startswith(f"{kind}="))


def shape_for(rows: int) -> Shape:
    """The smallest bulk-loader shape with at least `rows` rows in its three tables."""
    feedback = -(-rows * 4 // 7)
    while (shape := Shape(feedback)).feedback + shape.interactions + shape.events < rows:
        feedback += 1
    return shape


def old_year(now: datetime) -> Year:
    """The 365 days that end OLD_DATA_AGE before today's midnight UTC."""
    end = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - OLD_DATA_AGE
    return Year(end - timedelta(days=365), end)


@dataclass(frozen=True, slots=True)
class Prepared:
    """The file every round starts from, and what it holds."""

    database: Path
    expirable: dict[str, int]
    """Rows per table older than their kind's period."""
    cutoff: datetime
    """Every old row is older than this and every row the bench writes newer."""
    load_seconds: float
    rollup_seconds: float

    @property
    def expirable_rows(self) -> int:
        """Expirable rows in all tables."""
        return sum(self.expirable.values())

    def copy_to(self, target: Path) -> Path:
        """A copy of the file (and any write-ahead log) on disk, so rounds start equal.

        Synced before it is used: otherwise the kernel would still be writing the copy back while
        the round's fsyncs run, and the first round of a pair would pay for it.
        """
        for suffix in ("", "-wal"):
            source = self.database.with_name(self.database.name + suffix)
            if source.exists():
                copy = target.with_name(target.name + suffix)
                shutil.copyfile(source, copy)
                with copy.open("rb") as file:
                    os.fsync(file.fileno())
        return target


def prepare(database: Path, rows: int, progress: Progress, now: datetime | None = None) -> Prepared:
    """Create `database` with `rows` expired rows, the rated turns and rebuilt rollups."""
    moment = now or datetime.now(UTC)
    year = old_year(moment)
    shape = shape_for(rows)
    create_database(database)
    progress(
        f"loading {shape.feedback:,} feedback, {shape.interactions:,} interactions and "
        f"{shape.events:,} events dated {year.start:%Y-%m-%d} to {year.end:%Y-%m-%d}"
    )
    load = BulkLoader(database, year).extend_to(shape, progress)
    with Storage.connect(f"sqlite:///{database}") as storage:
        storage.write(lambda repository: repository.insert_interactions(rated_turns(moment)))
        started = time.perf_counter()
        storage.rebuild_rollups()
        rollup_seconds = time.perf_counter() - started
        storage.checkpoint()
    expirable = expirable_counts(database, year.end)
    progress(
        f"loaded {sum(expirable.values()):,} expirable rows in {load.seconds:.0f} s; "
        f"rollups rebuilt in {rollup_seconds:.0f} s"
    )
    return Prepared(database, expirable, year.end, load.seconds, rollup_seconds)


def rated_turns(now: datetime) -> list[NewInteraction]:
    """The recent turns of payloads.CONVERSATION_ID, one a minute, the last the newest."""
    first = now - RATED_TURNS_AGE
    return [
        NewInteraction(
            conversation_id=payloads.CONVERSATION_ID,
            message_id=f"bench-turn-{number:03d}",
            user_id=payloads.USER_ID,
            model="gpt-4o-mini",
            latency_ms=420.0,
            prompt_tokens=180,
            completion_tokens=65,
            total_tokens=245,
            occur_time=first + timedelta(minutes=number),
            create_time=first + timedelta(minutes=number),
        )
        for number in range(RATED_TURNS)
    ]


def expirable_counts(database: Path, cutoff: datetime) -> dict[str, int]:
    """Rows per table whose time is before `cutoff` (each table's time index answers it)."""
    with closing(sqlite3.connect(database, timeout=30)) as connection:
        return {
            table: int(
                connection.execute(
                    f"SELECT count(*) FROM {table} WHERE {column} < ?", (sqlite_time(cutoff),)
                ).fetchone()[0]
            )
            for table, column in TIME_COLUMNS.items()
        }


def rows_since(database: Path, table: str, cutoff: datetime) -> int:
    """Rows of `table` whose time is at or after `cutoff`: what the bench wrote."""
    column = TIME_COLUMNS[table]
    with closing(sqlite3.connect(database, timeout=30)) as connection:
        (count,) = connection.execute(
            f"SELECT count(*) FROM {table} WHERE {column} >= ?", (sqlite_time(cutoff),)
        ).fetchone()
    return int(count)
