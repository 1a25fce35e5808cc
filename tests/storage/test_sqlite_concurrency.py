"""Many threads writing one SQLite file with default settings: they queue, and none fails."""

from __future__ import annotations

import threading
from functools import partial
from typing import TYPE_CHECKING

from storage import Storage
from storage.records import Score, StatsFilter
from tests.databases import sqlite_url
from tests.storage.factories import new_feedback, new_interaction

if TYPE_CHECKING:
    from pathlib import Path

    from storage import Repository

WRITERS = 8
UNITS_PER_WRITER = 25


def record_then_rate(
    repository: Repository, *, conversation_id: str, message_id: str, score: int
) -> None:
    """The service's shape of unit: read (is the message known? which turn is latest?), write."""
    if repository.interaction_by_message(message_id) is None:
        repository.insert_interaction(
            new_interaction(conversation_id=conversation_id, message_id=message_id)
        )
    latest = repository.latest_interaction(conversation_id)
    assert latest is not None
    repository.insert_feedback(
        new_feedback(conversation_id=conversation_id, interaction_id=latest.id, rating=Score(score))
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

        interactions = storage.read(lambda repository: repository.interaction_stats(StatsFilter()))
        feedback = storage.read(lambda repository: repository.feedback_stats(StatsFilter()))

    assert failures == []
    assert interactions.total_count == WRITERS * UNITS_PER_WRITER
    assert feedback.total_count == WRITERS * UNITS_PER_WRITER
    assert feedback.score_counts == dict.fromkeys(range(1, 6), WRITERS * UNITS_PER_WRITER // 5)
