"""The change log: one entry per kind per write transaction, numbered in commit order, packed
ids that unpack exactly, and compaction that moves every kind's horizon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from storage import Storage
from storage.rows.changes import pack, unpack
from tests.storage.factories import new_event, new_feedback, new_interaction


@given(st.sets(st.integers(min_value=1, max_value=2**62), min_size=1, max_size=300))
def test_packed_ids_unpack_to_the_same_ascending_ids(ids: set[int]) -> None:
    ordered = sorted(ids)
    assert list(unpack(pack(ordered))) == ordered


def test_a_run_of_consecutive_ids_packs_into_a_few_bytes() -> None:
    assert len(pack(list(range(1_000_000, 1_001_000)))) <= 6


def test_each_write_transaction_takes_the_next_number_with_one_entry_per_kind(
    storage: Storage,
) -> None:
    def mixed(repository: object) -> None:
        repository.insert_interactions([new_interaction(message_id=f"m{n}") for n in range(3)])  # type: ignore[attr-defined]
        repository.insert_feedback_entries([new_feedback(), new_feedback()])  # type: ignore[attr-defined]

    storage.write(mixed)
    storage.write(lambda repository: repository.insert_events([new_event()]))
    storage.write(lambda repository: repository.opt_outs)  # adds no record: takes no number

    state = storage.read(lambda repository: repository.change_state())
    entries = storage.read(lambda repository: repository.changes_after(0, 100, 100))
    assert state.head == 2
    assert [(e.seq, e.kind, len(e.ids)) for e in entries] == [
        (1, "feedback", 2),
        (1, "interactions", 3),
        (2, "events", 1),
    ]
    feedback_ids = storage.read(
        lambda repository: [e.id for e in repository.entries_by_ids("feedback", entries[0].ids)]
    )
    assert list(entries[0].ids) == feedback_ids
    assert storage.read(lambda repository: repository.first_change_after_id("feedback", 0)) == 1
    assert storage.read(lambda repository: repository.first_change_after_id("events", 1)) is None


def test_compaction_removes_old_entries_and_moves_every_horizon(storage: Storage) -> None:
    for _ in range(3):
        storage.write(lambda repository: repository.insert_feedback_entries([new_feedback()]))
    later = datetime.now(UTC) + timedelta(seconds=1)

    assert storage.compact_changes(later, 2) == 2
    assert storage.compact_changes(later, 100) == 1
    assert storage.compact_changes(later, 100) == 0

    state = storage.read(lambda repository: repository.change_state())
    assert state.head == 3
    assert {kind: (h.seq, h.last_id) for kind, h in state.horizons.items()} == {
        "feedback": (3, 3),
        "interactions": (3, 0),
        "events": (3, 0),
    }
    assert storage.read(lambda repository: repository.changes_after(0, 100, 100)) == []


def test_entries_younger_than_the_cutoff_stay(storage: Storage) -> None:
    storage.write(lambda repository: repository.insert_feedback_entries([new_feedback()]))
    assert storage.compact_changes(datetime.now(UTC) - timedelta(hours=1), 100) == 0
    assert len(storage.read(lambda repository: repository.changes_after(0, 100, 100))) == 1
