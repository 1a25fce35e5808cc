"""The physical limit of event ingestion: raw sqlite3 executemany, one commit per 1000 rows.

Same schema (the project's migrations), same column values (copied from a row the server stored)
and the same durability pragmas as the server (WAL, synchronous=FULL), with no server around it.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from storage import Storage

EVENT_COLUMNS = ("user_id", "event_type", "details", "event_time", "receive_time")
ROWS_PER_TRANSACTION = 1000

EventValues = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class RawInsertRun:
    """Rows inserted, rows found afterwards and the time it took."""

    rows: int
    rows_stored: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        """Inserted rows per second of wall time, commits included."""
        return self.rows / self.seconds


def stored_event_values(database: Path) -> EventValues | None:
    """The columns of the first event the server stored in `database`, or None if it has none."""
    columns = ", ".join(EVENT_COLUMNS)
    with closing(sqlite3.connect(database, timeout=30)) as connection:
        row = connection.execute(f"SELECT {columns} FROM events ORDER BY id LIMIT 1").fetchone()
    return None if row is None else tuple(row)


def create_events_schema(database: Path) -> None:
    """Create the project's schema in a new SQLite file by running its migrations."""
    with Storage.connect(f"sqlite:///{database}") as storage:
        storage.migrate()


def insert_events(database: Path, values: EventValues, rows: int) -> RawInsertRun:
    """Insert `rows` copies of `values` into `database`'s events table, committing every 1000."""
    columns = ", ".join(EVENT_COLUMNS)
    placeholders = ", ".join("?" for _ in EVENT_COLUMNS)
    insert = f"INSERT INTO events ({columns}) VALUES ({placeholders})"
    with closing(sqlite3.connect(database, isolation_level=None)) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        start = time.perf_counter()
        remaining = rows
        while remaining > 0:
            size = min(ROWS_PER_TRANSACTION, remaining)
            connection.execute("BEGIN")
            connection.executemany(insert, [values] * size)
            connection.execute("COMMIT")
            remaining -= size
        seconds = time.perf_counter() - start
        (stored,) = connection.execute("SELECT count(*) FROM events").fetchone()
    return RawInsertRun(rows=rows, rows_stored=int(stored), seconds=seconds)
