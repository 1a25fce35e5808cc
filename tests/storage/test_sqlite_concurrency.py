"""Many threads writing one SQLite file with default settings: they queue, and none fails."""

from __future__ import annotations

import threading
from functools import partial
from typing import TYPE_CHECKING

from storage import Storage
from storage.records import Score, StatsFilter
from tests.databases import sqlite_url
from tests.storage import full_scan
from tests.storage.factories import (
    insert_feedback,
    insert_interaction,
    interaction_by_message,
    latest_interaction,
    new_feedback,
    new_interaction,
)

if TYPE_CHECKING:
    from pathlib import Path

    from storage import Repository

WRITERS = 8
UNITS_PER_WRITER = 25


def record_then_rate(
    repository: Repository, *, conversation_id: str, message_id: str, score: int
) -> None:
    """The service's shape of unit: read (is the message known? which turn is latest?), write."""
    if interaction_by_message(repository, message_id) is None:
        insert_interaction(
            repository, new_interaction(conversation_id=conversation_id, message_id=message_id)
        )
    latest = latest_interaction(repository, conversation_id)
    assert latest is not None
    insert_feedback(
        repository,
        new_feedback(
            conversation_id=conversation_id, interaction_id=latest.id, rating=Score(score)
        ),
    )


def test_concurrent_read_then_write_units_never_fail(tmp_path: Path) -> None:
    """In a deferred SQLite transaction, reading then writing fails at once with "database is
    locked" when another writer commits in between; BEGIN IMMEDIATE makes the unit wait instead.
    """
    failures: list[BaseException] = []
    start = threading.Barrier(WRITERS)

    with Storage.connect(sqlite_url(tmp_path / "feedback.sqlite3")) as storage:
        storage.migrate()

        def writer(number: int) -> None:
            start.wait()
            for unit in range(UNITS_PER_WRITER):
                work = partial(
                    record_then_rate,
                    conversation_id=f"conv-{number % 2}",  # four writers per conversation
                    message_id=f"msg-{number}-{unit}",
                    score=1 + unit % 5,
                )
                try:
                    storage.write(work)
                except BaseException as failure:  # collected, and every one reported below
                    failures.append(failure)

        threads = [threading.Thread(target=writer, args=(number,)) for number in range(WRITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        interactions = storage.read(
            lambda repository: full_scan.interaction_stats(repository, StatsFilter())
        )
        feedback = storage.read(
            lambda repository: full_scan.feedback_stats(repository, StatsFilter())
        )

    assert failures == []
    assert interactions.total_count == WRITERS * UNITS_PER_WRITER
    assert feedback.total_count == WRITERS * UNITS_PER_WRITER
    assert feedback.score_counts == dict.fromkeys(range(1, 6), WRITERS * UNITS_PER_WRITER // 5)
