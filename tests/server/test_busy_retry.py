"""Group commit on a SQLite file another process keeps locked: batches wait and retry instead of
failing, and a retried batch starts from scratch."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import pytest

from server.service.group_commit import GroupCommitter, Job
from server.service.ports import BatchRepository
from server.service.write_rules import EVENT, Rules, apply_batch
from storage import Storage
from storage.error_translation import driver_errors as sqlite_errors
from tests.server.test_group_commit import _count, _event, _job


@pytest.fixture
def database_file(tmp_path: Path) -> Path:
    path = tmp_path / "feedback.sqlite3"
    with Storage.connect(f"sqlite:///{path}") as storage:
        storage.migrate()
    return path


@pytest.fixture
def storage(database_file: Path) -> Iterator[Storage]:
    """Storage whose writes give up on a taken lock after 50 ms (the server waits 5 s)."""
    with Storage.connect(f"sqlite:///{database_file}", sqlite_busy_timeout_ms=50) as storage:
        yield storage


def test_a_batch_outlasts_a_lock_held_past_the_busy_timeout(
    storage: Storage, database_file: Path
) -> None:
    other_process = sqlite3.connect(database_file, isolation_level=None, check_same_thread=False)
    other_process.execute("BEGIN IMMEDIATE")
    threading.Timer(0.5, other_process.rollback).start()
    committer = GroupCommitter(storage, partial(apply_batch, rules=Rules()))

    async def write() -> list[object]:
        return await committer.write(_job(EVENT, [_event(1), _event(2)]))

    started = time.monotonic()
    try:
        outcomes = asyncio.run(write())
    finally:
        committer.close()
        other_process.close()

    assert time.monotonic() - started >= 0.45
    assert [type(outcome).__name__ for outcome in outcomes] == ["EventRecord", "EventRecord"]
    assert _count(storage, "events") == 2


def test_a_retried_batch_starts_from_scratch(storage: Storage) -> None:
    """The first attempt stores every item, then finds the database locked at the end and rolls
    back: the outcomes it noted must not count, or the callers would hear of rows never kept."""
    attempts = 0

    def locked_once(repository: BatchRepository, batch: Sequence[Job]) -> None:
        nonlocal attempts
        attempts += 1
        apply_batch(repository, batch, Rules())
        if attempts == 1:
            busy = sqlite3.OperationalError("database is locked")
            busy.sqlite_errorname = "SQLITE_BUSY"  # as sqlite3 sets it on a real one
            with sqlite_errors("COMMIT"):
                raise busy

    committer = GroupCommitter(storage, locked_once)

    async def write() -> list[object]:
        return await committer.write(_job(EVENT, [_event(1), _event(2), _event(3)]))

    try:
        outcomes = asyncio.run(write())
    finally:
        committer.close()

    assert attempts == 2
    assert len(outcomes) == 3
    assert _count(storage, "events") == 3
