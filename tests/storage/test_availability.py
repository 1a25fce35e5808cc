"""When the database cannot serve, callers get StorageUnavailable, and nothing else leaks out."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import threading
import time
from typing import TYPE_CHECKING

import psycopg
import pytest
from sqlalchemy.engine import make_url

from storage import Storage, StorageUnavailable
from storage.records import StatsFilter
from tests.databases import empty_postgres_tables, libpq_url, sqlite_url
from tests.storage import full_scan
from tests.storage.factories import insert_event, new_event

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from storage import Repository


def closed_port() -> int:
    """A local TCP port nobody listens on (just released by the kernel)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def migrated_sqlite(path: Path) -> str:
    """The URL of a freshly migrated SQLite file."""
    url = sqlite_url(path)
    with Storage.connect(url) as storage:
        storage.migrate()
    return url


def test_unreachable_postgres_is_unavailable_for_every_operation() -> None:
    storage = Storage.connect(f"postgresql://postgres:secret@127.0.0.1:{closed_port()}/feedback")
    operations: list[Callable[[], object]] = [
        storage.ping,
        storage.migrate,
        lambda: storage.read(lambda repository: full_scan.event_stats(repository, StatsFilter())),
        lambda: storage.write(lambda repository: insert_event(repository, new_event())),
    ]
    try:
        for operation in operations:
            with pytest.raises(StorageUnavailable) as raised:
                operation()
            assert "secret" not in str(raised.value)
    finally:
        storage.close()


def test_read_only_sqlite_file_refuses_writes_as_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "feedback.sqlite3"
    migrated_sqlite(path)
    path.chmod(0o444)
    # Root ignores file modes, so also open the file read-only as SQLite understands it.
    read_only_url = f"sqlite:///file:{path}?mode=ro&uri=true"

    with Storage.connect(read_only_url) as storage:
        with pytest.raises(StorageUnavailable, match="readonly"):
            storage.write(lambda repository: insert_event(repository, new_event()))
        assert event_count(storage) == 0


def test_sqlite_writer_waits_for_the_busy_timeout_then_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "feedback.sqlite3"
    url = migrated_sqlite(path)
    other_writer = sqlite3.connect(path, isolation_level=None)
    other_writer.execute("BEGIN IMMEDIATE")  # holds the write lock until rolled back
    try:
        with Storage.connect(url, sqlite_busy_timeout_ms=300) as storage:
            started = time.monotonic()
            with pytest.raises(StorageUnavailable, match="locked"):
                storage.write(lambda repository: insert_event(repository, new_event()))
            waited = time.monotonic() - started
            # WAL: readers are not blocked by the writer.
            stats = storage.read(
                lambda repository: full_scan.event_stats(repository, StatsFilter())
            )
    finally:
        other_writer.rollback()
        other_writer.close()

    assert waited >= 0.25
    assert stats.total_count == 0


def test_sqlite_writer_proceeds_once_the_lock_is_released(tmp_path: Path) -> None:
    path = tmp_path / "feedback.sqlite3"
    url = migrated_sqlite(path)
    other_writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other_writer.execute("BEGIN IMMEDIATE")
    with Storage.connect(url) as storage:
        storage.ping()  # open the pool before the lock matters
        release_after_s = 0.2
        releaser = _after(release_after_s, other_writer.rollback)
        storage.write(lambda repository: insert_event(repository, new_event()))
        releaser.join()
        assert event_count(storage) == 1
    other_writer.close()


def _after(delay_s: float, action: Callable[[], object]) -> threading.Thread:
    """Run `action` on another thread after `delay_s` seconds."""

    def wait_then_act() -> None:
        time.sleep(delay_s)
        action()

    thread = threading.Thread(target=wait_then_act)
    thread.start()
    return thread


def event_count(storage: Storage) -> int:
    """How many events are stored."""
    return storage.read(event_count_of)


def event_count_of(repository: Repository) -> int:
    """How many events `repository` sees."""
    return full_scan.event_stats(repository, StatsFilter()).total_count


@pytest.mark.postgres
def test_postgres_restart_is_survived_without_reconnecting_by_hand(
    postgres_database_url: str,
) -> None:
    empty_postgres_tables(postgres_database_url)
    with Storage.connect(postgres_database_url) as storage:
        storage.ping()
        storage.write(lambda repository: insert_event(repository, new_event()))
        # What a server restart does to our pooled connections: the server ends their sessions.
        with psycopg.connect(libpq_url(postgres_database_url), autocommit=True) as admin:
            terminated = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (make_url(postgres_database_url).database,),
            ).fetchone()
        assert terminated is not None
        assert terminated[0] >= 1

        storage.ping()
        stats = storage.read(lambda repository: full_scan.event_stats(repository, StatsFilter()))

    assert stats.total_count == 1


def _set_immutable(path: Path, immutable: bool) -> None:
    """Make the file unwritable for SQLite: root ignores file modes, so it gets chattr +i."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i" if immutable else "-i", str(path)], check=True)
    else:
        path.chmod(0o444 if immutable else 0o644)


def test_the_writer_never_reconnects_on_a_connection_opened_during_the_outage(
    tmp_path: Path,
) -> None:
    """Readers' connections opened while the file was read-only stay read-only; once the probe
    passes, the writer's first write must not be handed one of them."""
    path = tmp_path / "feedback.sqlite3"
    url = migrated_sqlite(path)
    with Storage.connect(url) as storage:
        writer = storage.dedicated_writer()
        _set_immutable(path, True)
        try:
            # Three readers at once leave three connections in the pool, opened read-only.
            storage.read(lambda _a: storage.read(lambda _b: storage.read(event_count_of)))
            with pytest.raises(StorageUnavailable):
                writer.write(lambda rows: rows.insert_events([new_event()]))
            with pytest.raises(StorageUnavailable):
                storage.check_writable()
        finally:
            _set_immutable(path, False)
        storage.check_writable()
        for _ in range(3):
            writer.write(lambda rows: rows.insert_events([new_event()]))
        writer.close()
        assert event_count(storage) == 3
