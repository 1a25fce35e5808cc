"""Rows bulk-loaded past the service count in GetStats once the rollups are rebuilt."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from typing import TYPE_CHECKING

from storage import Storage
from storage.records import StatsQuery

if TYPE_CHECKING:
    from pathlib import Path


def test_rebuild_rollups_command_counts_rows_loaded_with_executemany(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/bulk.sqlite3"
    with Storage.connect(url) as storage:
        storage.migrate()
    with sqlite3.connect(tmp_path / "bulk.sqlite3") as connection:
        connection.executemany(
            "INSERT INTO feedback (conversation_id, user_id, model, rating_kind, score, latency_ms,"
            " metadata, create_time) VALUES (?, ?, 'gpt-4o', 'score', ?, ?, '{}', ?)",
            [
                (
                    f"conv-{i % 7}",
                    f"user-{i % 3}",
                    1 + i % 5,
                    10.0 * i,
                    f"2025-03-0{1 + i % 3} 1{i % 10}:00:00.000000",
                )
                for i in range(300)
            ],
        )

    result = subprocess.run(
        [sys.executable, "-m", "server", "rebuild-rollups", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stderr.splitlines()[-1])["message"] == "rebuilt rollups"
    with Storage.connect(url) as storage:
        overall = storage.read_stats(StatsQuery()).overall.feedback
        user = storage.read_stats(StatsQuery(user_id="user-1")).overall.feedback
    assert overall is not None
    assert user is not None
    assert (overall.total_count, overall.scored_count, overall.avg_score) == (300, 300, 3.0)
    assert user.total_count == 100
    assert overall.avg_latency_ms == sum(10.0 * i for i in range(300)) / 300
