"""Rows in a SQLite file: the ground truth every acknowledged write is checked against."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

TABLES = frozenset({"feedback", "events", "interactions"})


def count_rows(database: Path, table: str) -> int:
    """The number of rows in `table`; WAL lets this read while the server keeps writing."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}")
    with closing(sqlite3.connect(database, timeout=30)) as connection:
        (count,) = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(count)
