"""Every write transaction takes rows in the one global order (aggregates.write.RollupChanges):
raw rows first, then list_id_blocks (storage.rows.id_blocks), then each rollup table once in
ROLLUP_TABLES order, each table's rows sorted by key, rollup_key_spans, and the change log
(storage.rows.changes: its clock, then its entries) last of all. Checked on the statements a real
database is sent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine, event

from storage import Storage
from storage.aggregates.kinds import ROLLUP_TABLES
from storage.aggregates.tables import KEY_SPANS_TABLE
from storage.records import FeedbackRecord, Label, Score, Thumb
from storage.rows.repository import Repository
from storage.schema.models import ChangeClockRow, ChangeRow, ListIdBlockRow
from tests.databases import empty_postgres_tables
from tests.storage.factories import (
    insert_feedback,
    minutes,
    new_event,
    new_feedback,
    new_interaction,
)

BLOCKS_TABLE = ListIdBlockRow.__tablename__
CLOCK_TABLE = ChangeClockRow.__tablename__
CHANGES_TABLE = ChangeRow.__tablename__
LOCK_ORDER = [
    BLOCKS_TABLE,
    *(table.name for table in ROLLUP_TABLES),
    KEY_SPANS_TABLE,
    CLOCK_TABLE,
    CHANGES_TABLE,
]
WIDTHS = {BLOCKS_TABLE: 5, KEY_SPANS_TABLE: 4, CHANGES_TABLE: 7} | {
    table.name: len(table.columns) for table in ROLLUP_TABLES
}
WAIT_SECONDS = 10.0
KEY_WIDTHS = {BLOCKS_TABLE: 2, KEY_SPANS_TABLE: 2, CHANGES_TABLE: 2} | {
    table.name: len(table.key_columns) for table in ROLLUP_TABLES
}


@pytest.fixture
def statements() -> Iterator[list[tuple[str, Any]]]:
    """(SQL, parameters) of every statement any engine sends while the test runs."""
    sent: list[tuple[str, Any]] = []

    def record(*args: Any) -> None:
        _connection, _cursor, statement, parameters, _context, _many = args
        sent.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", record)
    yield sent
    event.remove(Engine, "before_cursor_execute", record)


def _table(statement: str) -> str | None:
    """The id block or rollup table a statement writes, if it writes one."""
    words = statement.split()
    if words[:2] in (["INSERT", "INTO"], ["DELETE", "FROM"]) and words[2] in LOCK_ORDER:
        return words[2]
    if words[:2] == ["UPDATE", CLOCK_TABLE]:
        return CLOCK_TABLE
    return None


def _mixed_unit(repository: Repository, voted: FeedbackRecord) -> None:
    """Interactions, feedback replacing a vote, and events, over several hours, models, users:
    everything a group-commit batch may hold, in the order apply_batch writes it."""
    repository.insert_interactions(
        [
            new_interaction(
                model=f"model-{n % 3}",
                user_id=f"u{n % 2}",
                latency_ms=10.0 * n,
                occur_time=minutes(n * 70),
            )
            for n in range(6)
        ]
    )
    repository.retire_votes([voted])
    vote, *_ = repository.insert_feedback_entries(
        [new_feedback(message_id="m1", user_id="u1", rating=Score(5), replaces_id=voted.id)]
        + [
            new_feedback(
                model=f"model-{n}",
                rating=Label("good") if n else Score(n + 1),
                tokens_used=100 * n,
                create_time=minutes(n * 90),
            )
            for n in range(3)
        ]
    )
    repository.insert_history(
        [replace(voted, replace_time=vote.create_time, replaced_by_id=vote.id)]
    )
    repository.insert_events([new_event(event_type=f"type-{n}") for n in range(3)])


def test_a_transaction_locks_blocks_and_rollup_tables_once_each_in_the_global_order_rows_by_key(
    storage: Storage, statements: list[tuple[str, Any]]
) -> None:
    voted = storage.write(
        lambda repository: insert_feedback(
            repository,
            new_feedback(
                message_id="m1", user_id="u1", rating=Thumb(True), create_time=minutes(-90)
            ),
        )
    )
    statements.clear()

    storage.write(lambda repository: _mixed_unit(repository, voted))

    # PostgreSQL's NOTIFY after the change log entries writes no table.
    tables = [_table(statement) for statement, _ in statements if "pg_notify" not in statement]
    first_rollup = next(index for index, table in enumerate(tables) if table is not None)
    assert None not in tables[first_rollup:], "a raw row was written after a block or rollup row"
    written = [table for table in tables if table is not None]
    # Each table in one run (its upsert, then the delete of emptied cells), runs in lock order.
    runs = [
        table for index, table in enumerate(written) if index == 0 or written[index - 1] != table
    ]
    assert runs == [table for table in LOCK_ORDER if table in runs]
    assert set(runs) == set(LOCK_ORDER)
    for statement, parameters in statements[first_rollup:]:
        table = _table(statement)
        if table is None or not statement.startswith("INSERT"):
            continue
        width, key_width = WIDTHS[table], KEY_WIDTHS[table]
        keys = [
            tuple(parameters[row : row + key_width]) for row in range(0, len(parameters), width)
        ]
        assert keys == sorted(keys), f"{table} rows are not in key order"


def _replace_vote(
    repository: Repository, rating: Thumb, claimed: threading.Event, go_on: threading.Event
) -> FeedbackRecord | None:
    """u1's new vote on m1, as group commit stores it; signals once the voter is claimed and
    waits for `go_on` before writing. Returns the vote it replaced."""
    voter = ("m1", "u1")
    old = repository.current_votes({voter}).get(voter)
    claimed.set()
    assert go_on.wait(WAIT_SECONDS)
    if old is not None:
        repository.retire_votes([old])
    [new] = repository.insert_feedback_entries(
        [
            new_feedback(
                message_id="m1",
                user_id="u1",
                rating=rating,
                replaces_id=None if old is None else old.id,
            )
        ]
    )
    if old is not None:
        repository.insert_history(
            [replace(old, replace_time=new.create_time, replaced_by_id=new.id)]
        )
    return old


@pytest.mark.postgres
def test_a_replica_replacing_the_same_vote_waits_and_then_replaces_the_newer_one(
    postgres_database_url: str,
) -> None:
    empty_postgres_tables(postgres_database_url)
    go_on = threading.Event()
    replaced: dict[str, FeedbackRecord | None] = {}
    with Storage.connect(postgres_database_url) as storage:
        original = storage.write(
            lambda repository: insert_feedback(
                repository, new_feedback(message_id="m1", user_id="u1", rating=Thumb(True))
            )
        )

        def replica(name: str, rating: Thumb, claimed: threading.Event) -> None:
            replaced[name] = storage.write(
                lambda repository: _replace_vote(repository, rating, claimed, go_on)
            )

        first_claimed, second_claimed = threading.Event(), threading.Event()
        first = threading.Thread(target=replica, args=("first", Thumb(False), first_claimed))
        first.start()
        assert first_claimed.wait(WAIT_SECONDS)
        second = threading.Thread(target=replica, args=("second", Thumb(True), second_claimed))
        second.start()
        # The second waits for the first's claim, not for a row or key it would deadlock on.
        assert not second_claimed.wait(0.5)
        go_on.set()
        first.join(WAIT_SECONDS)
        second.join(WAIT_SECONDS)
        current, history = storage.read(
            lambda repository: (
                repository.current_votes({("m1", "u1")}),
                repository.feedback_history("m1", "u1", 10),
            )
        )

    assert replaced["first"] == original
    newer = replaced["second"]
    assert newer is not None
    assert newer.id != original.id
    assert newer.rating == Thumb(False)
    assert current[("m1", "u1")].rating == Thumb(True)
    assert [vote.id for vote in history] == [original.id, newer.id, current[("m1", "u1")].id]
