"""Storage.dedicated_writer(): group commit's writer must store exactly what Storage.write does."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage import Conflict, Storage, StorageUnavailable
from storage.records import FeedbackFilter, Keyset, Label, StatsFilter
from tests.storage import full_scan
from tests.storage.factories import (
    feedback_entry,
    interaction_by_message,
    new_event,
    new_feedback,
    new_interaction,
)


def test_records_written_are_the_records_read(storage: Storage) -> None:
    writer = storage.dedicated_writer()
    try:
        interaction, feedback, event = writer.write(
            lambda repository: (
                repository.insert_interactions(
                    [new_interaction(message_id="m1", metadata={"k": ["é", 1.5, None]})]
                )[0],
                repository.insert_feedback_entries([new_feedback(rating=Label("good"))])[0],
                repository.insert_events([new_event(details={"page": "/"})])[0],
            )
        )
        found = writer.write(
            lambda repository: (
                repository.interactions_by_messages({"m1", "nope"}),
                repository.latest_interactions({interaction.conversation_id}),
            )
        )
    finally:
        writer.close()

    by_message, latest = found
    assert by_message == {"m1": interaction}
    assert latest == {interaction.conversation_id: interaction}
    assert storage.read(lambda repository: interaction_by_message(repository, "m1")) == interaction
    listed = storage.read(
        lambda repository: repository.feedback_entries(FeedbackFilter(), Keyset(limit=5))
    )
    assert listed == [feedback_entry(feedback)]
    assert event.id == 1


def test_a_taken_message_id_is_a_conflict_and_rolls_back_the_unit(storage: Storage) -> None:
    writer = storage.dedicated_writer()
    try:
        writer.write(
            lambda repository: repository.insert_interactions([new_interaction(message_id="m")])
        )
        with pytest.raises(Conflict):
            writer.write(
                lambda repository: (
                    repository.insert_events([new_event()]),
                    repository.insert_interactions([new_interaction(message_id="m")]),
                )
            )
        # The writer is still usable after the failed unit.
        writer.write(lambda repository: repository.insert_events([new_event()]))
    finally:
        writer.close()

    stats = storage.read(lambda repository: full_scan.event_stats(repository, StatsFilter()))
    assert stats.total_count == 1


def test_read_only_sqlite_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "feedback.sqlite3"
    with Storage.connect(f"sqlite:///{path}") as storage:
        storage.migrate()
    with Storage.connect(f"sqlite:///file:{path}?mode=ro&uri=true") as storage:
        writer = storage.dedicated_writer()
        with pytest.raises(StorageUnavailable):
            writer.write(lambda repository: repository.insert_events([new_event()]))
        writer.close()
    assert sqlite3.connect(path).execute("select count(*) from events").fetchone() == (0,)
