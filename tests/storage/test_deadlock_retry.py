"""A write PostgreSQL rolls back to break a real deadlock is run again whole, and is never taken
for an unavailable database."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from server.service.ports import BatchRepository
from storage import Storage, TransactionRolledBack
from tests.databases import empty_postgres_tables, libpq_url
from tests.storage.factories import insert_event, new_event

pytestmark = pytest.mark.postgres

WAIT_SECONDS = 10.0


@pytest.fixture
def database(postgres_database_url: str) -> str:
    """The session's PostgreSQL database, emptied, holding one event (so its rollup rows and key
    spans exist for another transaction to lock)."""
    empty_postgres_tables(postgres_database_url)
    with Storage.connect(postgres_database_url) as storage:
        storage.write(lambda repository: insert_event(repository, new_event()))
    return postgres_database_url


def _deadlocks(connection: psycopg.Connection[Any]) -> int:
    connection.execute("SELECT pg_stat_clear_snapshot()")
    row = connection.execute(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    return int(row[0]) if row else 0


@dataclass(slots=True)
class DeadlockRun:
    """What one write that ran into a deadlock did."""

    outcome: object = None
    """What write() returned, or the exception it raised."""
    attempts: int = 0
    """How many times the unit of work ran."""
    reports: int = 0
    """How many times the storage reported the database unavailable."""
    events_added: int = 0
    """Events stored by the write."""


def _deadlocked_write(database: str, busy_retry_seconds: float) -> DeadlockRun:
    """Run a dedicated writer's event insert into a real deadlock with another transaction.

    The other transaction holds the key span of "all", which the writer's rollups lock last;
    once the writer waits for it, the other updates the all-time event cell the writer already
    holds. The writer waited first and the other checks for deadlocks only after 20 s, so
    PostgreSQL rolls the writer back; the other then commits.
    """
    run = DeadlockRun()
    with (
        Storage.connect(database) as storage,
        psycopg.connect(libpq_url(database)) as other,
        psycopg.connect(libpq_url(database), autocommit=True) as observer,
    ):
        storage.on_unavailable(lambda: setattr(run, "reports", run.reports + 1))
        writer = storage.dedicated_writer()
        (events_before,) = observer.execute("SELECT count(*) FROM events").fetchone() or (0,)
        deadlocks_before = _deadlocks(observer)
        # The writer must be the victim even on a loaded machine, where its own deadlock check
        # (after deadlock_timeout, 1 s) could otherwise run later than the other's.
        other.execute("SET deadlock_timeout = '20s'")
        other.execute("SELECT 1 FROM rollup_key_spans WHERE dimension = 0 FOR UPDATE")

        def work(repository: BatchRepository) -> None:
            run.attempts += 1
            repository.insert_events([new_event()])

        def write() -> None:
            try:
                run.outcome = writer.write(work, busy_retry_seconds=busy_retry_seconds)
            except Exception as error:
                run.outcome = error

        thread = threading.Thread(target=write)
        thread.start()
        give_up_at = time.monotonic() + WAIT_SECONDS
        # Only the writer can wait for a lock in this database: the other transaction holds its.
        while observer.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone() != (1,):
            assert time.monotonic() < give_up_at, "the writer never waited for the key span"
            time.sleep(0.01)
        other.execute("UPDATE event_rollups SET total_count = total_count WHERE level = 3")
        other.commit()
        thread.join(WAIT_SECONDS)
        writer.close()
        assert _deadlocks(observer) == deadlocks_before + 1
        (events_after,) = observer.execute("SELECT count(*) FROM events").fetchone() or (0,)
        run.events_added = events_after - events_before
    return run


def test_a_deadlocked_batch_runs_again_from_scratch_and_is_stored_once(database: str) -> None:
    run = _deadlocked_write(database, busy_retry_seconds=5.0)

    assert run.outcome is None
    assert run.attempts == 2
    assert run.events_added == 1
    assert run.reports == 0


def test_a_deadlock_without_retries_is_a_rolled_back_transaction_not_an_outage(
    database: str,
) -> None:
    run = _deadlocked_write(database, busy_retry_seconds=0.0)

    assert isinstance(run.outcome, TransactionRolledBack)
    assert "deadlock detected" in str(run.outcome)
    assert run.attempts == 1
    assert run.events_added == 0
    assert run.reports == 0
