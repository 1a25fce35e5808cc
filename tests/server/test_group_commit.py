"""GroupCommitter on a real SQLite file: batching, isolation of bad rows, backpressure, drain."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from server.service.errors import ResourceExhausted, ServiceError, Unavailable
from server.service.group_commit import GroupCommitter, Job
from server.service.write_rules import EVENT, INTERACTION, Rules, apply_batch, message_exists
from storage import Repository, Storage
from storage.records import NewEvent, NewInteraction
from tests.storage.factories import insert_interaction

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def _event(n: int) -> NewEvent:
    return NewEvent(user_id=f"u{n}", event_type="tick", event_time=NOW, receive_time=NOW)


def _interaction(message_id: str) -> NewInteraction:
    return NewInteraction(
        conversation_id="c", message_id=message_id, occur_time=NOW, create_time=NOW
    )


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    storage = Storage.connect(f"sqlite:///{tmp_path}/feedback.sqlite3")
    storage.migrate()
    yield storage
    storage.close()


def _count(storage: Storage, table: str) -> int:
    path = storage.url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        return int(connection.execute(f"select count(*) from {table}").fetchone()[0])


async def _write_all(committer: GroupCommitter, jobs: list[Job]) -> list[Any]:
    return list(await asyncio.gather(*(committer.write(job) for job in jobs)))


def _job(kind: str, items: list[Any]) -> Job:
    return Job(kind, items, asyncio.get_running_loop().create_future())


def test_concurrent_writes_share_transactions(storage: Storage) -> None:
    batches: list[int] = []

    def counting_apply(repository: Repository, batch: Sequence[Job]) -> None:
        batches.append(sum(len(job.items) for job in batch))
        apply_batch(repository, batch, Rules())

    async def scenario() -> list[Any]:
        committer = GroupCommitter(storage, counting_apply)
        try:
            return await _write_all(committer, [_job(EVENT, [_event(n)]) for n in range(300)])
        finally:
            committer.close()

    outcomes = asyncio.run(scenario())

    ids = [outcome[0].id for outcome in outcomes]
    assert sorted(ids) == list(range(1, 301))
    assert sum(batches) == 300
    assert len(batches) < 300  # at least some calls shared a commit
    assert _count(storage, "events") == 300


def test_a_row_only_the_database_rejects_fails_alone(storage: Storage) -> None:
    """A uniqueness race the rules could not see rolls the batch back; the others still land."""
    storage.write(lambda repository: insert_interaction(repository, _interaction("taken")))

    def unchecked_apply(repository: Repository, batch: Sequence[Job]) -> None:
        # Inserts without the rules' duplicate check, as a second replica's race would.
        for job in batch:
            records = repository.insert_interactions(job.items)
            job.outcomes[:] = records

    async def scenario() -> list[Any]:
        committer = GroupCommitter(storage, unchecked_apply)
        jobs = [_job(INTERACTION, [_interaction(f"m{n}")]) for n in range(5)]
        jobs.insert(2, _job(INTERACTION, [_interaction("taken")]))
        jobs[2].on_conflict = lambda item: message_exists(item.message_id)
        try:
            committer.submit(jobs)
            return list(await asyncio.gather(*(job.future for job in jobs)))
        finally:
            committer.close()

    outcomes = asyncio.run(scenario())

    errors = [outcome[0] for outcome in outcomes if isinstance(outcome[0], ServiceError)]
    assert [str(error) for error in errors] == ["message 'taken' was already recorded"]
    assert _count(storage, "interactions") == 6


def test_full_queue_refuses_with_a_retry_delay_and_loses_nothing(storage: Storage) -> None:
    path = storage.url.removeprefix("sqlite:///")
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # the writer waits on this lock (busy timeout 5 s)

    async def scenario() -> tuple[ResourceExhausted, list[Any]]:
        committer = GroupCommitter(storage, partial(apply_batch, rules=Rules()), max_pending=10)
        first = asyncio.ensure_future(committer.write(_job(EVENT, [_event(0)])))
        await asyncio.sleep(0.2)  # the writer has taken it and is stuck on the lock
        queued = [_job(EVENT, [_event(n)]) for n in range(1, 11)]
        committer.submit(queued)
        with pytest.raises(ResourceExhausted) as refused:
            committer.submit([_job(EVENT, [_event(11)])])
        threading.Timer(0.3, blocker.rollback).start()
        results = await asyncio.gather(first, *(job.future for job in queued))
        committer.close()
        return refused.value, results

    refused, results = asyncio.run(scenario())

    assert 0.05 <= refused.retry_after_seconds <= 5.0
    assert "write queue is full (10 writes waiting)" in str(refused)
    assert len(results) == 11
    assert _count(storage, "events") == 11
    blocker.close()


def test_close_commits_everything_queued_then_refuses(storage: Storage) -> None:
    async def scenario() -> list[Job]:
        committer = GroupCommitter(storage, partial(apply_batch, rules=Rules()))
        jobs = [_job(EVENT, [_event(n)]) for n in range(50)]
        committer.submit(jobs)
        await asyncio.get_running_loop().run_in_executor(None, committer.close)
        with pytest.raises(Unavailable):
            committer.submit([_job(EVENT, [_event(99)])])
        await asyncio.sleep(0)  # let the last settle callbacks run
        return jobs

    jobs = asyncio.run(scenario())

    assert all(job.future.done() and not job.future.exception() for job in jobs)
    assert _count(storage, "events") == 50
