"""A write whose deadline expired may be stored anyway; retried with the error's request id, it is
stored once.

The server's write queue is stalled for real: another connection holds the database's write lock
(SQLite's reserved lock, a PostgreSQL table lock), so the write waits in its batch and the caller's
deadline expires. Once the lock is released the server commits the queued write, which the caller
cannot know. The retry with `request_id=error.request_id` returns the record stored the first time.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from llmfeedback import DeadlineExceededError, FeedbackClient
from tests.databases import libpq_url

if TYPE_CHECKING:
    from llmfeedback import Event, Feedback, Interaction
    from server.config import Settings

    Write = Callable[[FeedbackClient, str | None, float | None], Interaction | Feedback | Event]
    """Makes one write with the given request id (None: a new one) and timeout."""

# A deadline the stalled write cannot meet, and far longer than a write to an idle database takes.
DEADLINE_SECONDS = 0.5
STORE_WAIT_SECONDS = 10.0


@contextlib.contextmanager
def write_lock(database_url: str, table: str) -> Iterator[None]:
    """Hold the lock every write to `table` needs, from a connection of the test's own."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        lite = sqlite3.connect(url.database or "", isolation_level=None, timeout=10)
        try:
            lite.execute("BEGIN IMMEDIATE")  # the one write lock of the file
            yield
            lite.execute("ROLLBACK")
        finally:
            lite.close()
        return
    with psycopg.connect(libpq_url(database_url)) as connection:
        # EXCLUSIVE blocks inserts and updates but not the reads the test makes meanwhile.
        connection.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.Identifier(table)))
        yield
        connection.rollback()


def stored_count(client: FeedbackClient, table: str) -> int:
    """How many rows the server reports for the table's kind."""
    stats = client.get_stats()
    counts = {
        "interactions": stats.interactions.total_count,
        "feedback": stats.feedback.total_count,
        "events": stats.events.total_count,
    }
    return counts[table]


def wait_until_stored(client: FeedbackClient, table: str, count: int) -> None:
    """Wait for the server to commit the write the caller gave up on."""
    deadline = time.monotonic() + STORE_WAIT_SECONDS
    while stored_count(client, table) < count:
        assert time.monotonic() < deadline, f"the queued write to {table} was never committed"
        time.sleep(0.05)


# Each single write, and the table it writes to.
WRITES: list[tuple[str, Write]] = [
    (
        "interactions",
        lambda client, request_id, timeout: client.record_interaction(
            "conv-2", message_id="msg-2", user_id="alice", request_id=request_id, timeout=timeout
        ),
    ),
    (
        "feedback",
        lambda client, request_id, timeout: client.submit_feedback(
            message_id="msg-1", user_id="bob", score=4, request_id=request_id, timeout=timeout
        ),
    ),
    (
        "events",
        lambda client, request_id, timeout: client.log_event(
            "alice", "page_view", details={"page": "/"}, request_id=request_id, timeout=timeout
        ),
    ),
]


@pytest.mark.parametrize(("table", "write"), WRITES, ids=[table for table, _ in WRITES])
def test_a_write_past_its_deadline_is_stored_once_when_retried_with_its_request_id(
    client: FeedbackClient,
    settings: Settings,
    table: str,
    write: Write,
) -> None:
    client.record_interaction("conv-1", message_id="msg-1")  # what the feedback rates
    before = stored_count(client, table)

    with write_lock(settings.database_url, table), pytest.raises(DeadlineExceededError) as raised:
        write(client, None, DEADLINE_SECONDS)
    wait_until_stored(client, table, before + 1)
    retried = write(client, raised.value.request_id, None)

    assert raised.value.request_id is not None
    assert stored_count(client, table) == before + 1
    listed = {
        "interactions": lambda: [row.id for row in client.iter_interactions()],
        "feedback": lambda: [row.id for row in client.iter_feedback()],
        "events": lambda: [row.id for row in client.iter_events()],
    }[table]()
    assert retried.id == max(listed)
    assert len(listed) == before + 1
