"""Every write transaction takes rollup rows in the one global order (rollups.RollupChanges):
raw rows first, then each rollup table once in ROLLUP_TABLES order, its rows sorted by key, and
rollup_key_spans last. Checked on the statements a real database is sent."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine, event

from storage import Storage
from storage.records import FeedbackRecord, Label, Score, Thumb
from storage.repository import Repository
from storage.rollups import KEY_SPANS_TABLE, ROLLUP_TABLES
from tests.storage.factories import minutes, new_event, new_feedback, new_interaction

LOCK_ORDER = [table.name for table in ROLLUP_TABLES] + [KEY_SPANS_TABLE]
WIDTHS = {table.name: len(table.columns) for table in ROLLUP_TABLES} | {KEY_SPANS_TABLE: 4}
KEY_WIDTHS = {table.name: len(table.key_columns) for table in ROLLUP_TABLES} | {KEY_SPANS_TABLE: 2}


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
    """The rollup table a statement writes, if it writes one."""
    words = statement.split()
    if words[:2] in (["INSERT", "INTO"], ["DELETE", "FROM"]) and words[2] in LOCK_ORDER:
        return words[2]
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


def test_a_transaction_locks_rollup_tables_once_each_in_the_global_order_rows_by_key(
    storage: Storage, statements: list[tuple[str, Any]]
) -> None:
    voted = storage.write(
        lambda repository: repository.insert_feedback(
            new_feedback(
                message_id="m1", user_id="u1", rating=Thumb(True), create_time=minutes(-90)
            )
        )
    )
    statements.clear()

    storage.write(lambda repository: _mixed_unit(repository, voted))

    tables = [_table(statement) for statement, _ in statements]
    first_rollup = next(index for index, table in enumerate(tables) if table is not None)
    assert None not in tables[first_rollup:], "a raw row was written after a rollup row"
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
