"""A read-only or full SQLite file: writers get UNAVAILABLE, health NOT_SERVING, and the server
recovers by itself once the file is fixed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.pool import Pool

from llmfeedback import EventItem, FeedbackClient, RetryPolicy, UnavailableError
from server.config import Settings
from storage import Storage
from tests.databases import sqlite_url
from tests.e2e.health_checks import NOT_SERVING, SERVING, stays, wait_for_health
from tests.server_harness import ServerThread


@pytest.fixture
def database_file(tmp_path: Path) -> Path:
    """A migrated SQLite file with no rows."""
    path = tmp_path / "feedback.sqlite3"
    with Storage.connect(sqlite_url(path)) as storage:
        storage.migrate()
    return path


def _settings(path: Path) -> Settings:
    return Settings(database_url=sqlite_url(path), storage_threads=2, log_level="CRITICAL")


def _set_read_only(path: Path, read_only: bool) -> None:
    """Make the file unwritable for the server: root ignores file modes, so it gets chattr +i."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i" if read_only else "-i", str(path)], check=True)
    else:
        path.chmod(0o444 if read_only else 0o644)


def _event_count(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        count: int = connection.execute("SELECT count(*) FROM events").fetchone()[0]
    return count


def test_a_read_only_file_refuses_writes_until_it_is_writable_again(database_file: Path) -> None:
    _set_read_only(database_file, True)
    try:
        with (
            ServerThread(_settings(database_file)) as server,
            FeedbackClient(server.address, retry=RetryPolicy(max_attempts=1)) as client,
        ):
            with pytest.raises(UnavailableError) as caught:
                client.log_event("u", "refused")
            wait_for_health(server.address, NOT_SERVING, within=1)
            stays(server.address, NOT_SERVING, seconds=1.5)  # the probe writes, and fails too
            assert client.get_stats().events.total_count == 0  # reads still work

            _set_read_only(database_file, False)
            wait_for_health(server.address, SERVING, within=3)
            client.log_event("u", "stored")
    finally:
        _set_read_only(database_file, False)

    assert "retry later" in caught.value.message
    assert _event_count(database_file) == 1


@pytest.fixture
def capped_pages(database_file: Path) -> Iterator[int]:
    """Every SQLite connection opened meanwhile is capped at 120 pages more than the file has:
    SQLITE_FULL, as on a full disk, but only for this test's file."""
    with sqlite3.connect(database_file) as connection:
        cap: int = connection.execute("PRAGMA page_count").fetchone()[0] + 120

    def cap_size(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.execute(f"PRAGMA max_page_count = {cap}")

    event.listen(Pool, "connect", cap_size)
    try:
        yield cap
    finally:
        event.remove(Pool, "connect", cap_size)


@pytest.mark.usefixtures("capped_pages")
def test_a_full_file_refuses_writes_until_space_is_freed(database_file: Path) -> None:
    with (
        ServerThread(_settings(database_file)) as server,
        FeedbackClient(server.address, retry=RetryPolicy(max_attempts=1)) as client,
    ):
        acknowledged, refusal = _fill(client)
        wait_for_health(server.address, NOT_SERVING, within=1)
        stays(server.address, NOT_SERVING, seconds=1.5)

        # An operator frees space: the deleted rows' pages become free for new ones.
        with sqlite3.connect(database_file) as connection:
            connection.execute("DELETE FROM events")
        wait_for_health(server.address, SERVING, within=3)
        client.log_event("u", "stored")

    assert acknowledged > 0
    assert "retry later" in refusal.message
    assert _event_count(database_file) == 1


def _fill(client: FeedbackClient) -> tuple[int, UnavailableError]:
    """Write events until the server refuses; returns how many it took and the refusal."""
    acknowledged = 0
    for _ in range(100):
        try:
            result = client.log_events(EventItem("u", "filler") for _ in range(100))
        except UnavailableError as error:
            return acknowledged, error
        acknowledged += len(result.results)
    raise AssertionError(f"{acknowledged} events fitted in the capped file")
