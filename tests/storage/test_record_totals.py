"""Storage.record_totals: the stored records per kind from the rollups' total cells, looked up by
their primary keys (never a scan of a table that may hold 10M rows)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage import Storage
from storage.aggregates.totals import TOTALS_SQL
from tests.databases import sqlite_url


def test_an_empty_database_has_no_records_of_any_kind(storage: Storage) -> None:
    assert storage.record_totals() == {"feedback": 0, "interactions": 0, "events": 0}


def test_the_totals_are_primary_key_lookups(migrated_sqlite_file: Path) -> None:
    with sqlite3.connect(migrated_sqlite_file) as connection:
        plan = [row[-1] for row in connection.execute(f"EXPLAIN QUERY PLAN {TOTALS_SQL}")]

    searches = [step for step in plan if step.startswith(("SEARCH", "SCAN"))]
    assert len(searches) == 3, plan
    assert all(step.startswith("SEARCH") and "PRIMARY KEY" in step for step in searches), plan


def test_totals_follow_the_total_cells(migrated_sqlite_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "feedback.sqlite3"
    path.write_bytes(migrated_sqlite_file.read_bytes())
    with sqlite3.connect(path) as connection:
        columns = "level, bucket_start, dimension, dimension_key, stamp, total_count"
        connection.execute(f"INSERT INTO event_rollups ({columns}) VALUES (3, 0, 0, '', 1, 7)")
        # A model's total cell and a day's "all" cell are not the kind's total.
        connection.execute(f"INSERT INTO event_rollups ({columns}) VALUES (3, 0, 4, 'x', 1, 5)")
        connection.execute(f"INSERT INTO event_rollups ({columns}) VALUES (1, 86400, 0, '', 1, 2)")

    with Storage.connect(sqlite_url(path)) as storage:
        assert storage.record_totals() == {"feedback": 0, "interactions": 0, "events": 7}
