"""The erasure log and its gate: an erasure or an opt-out commits only once the write transactions
that checked before it have committed (so their rows are there to erase), every later write
transaction sees it, and an erasure's batches and counts add up."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from server.service.subjects import Subjects
from storage import Storage
from storage.records import ErasedCounts
from tests.storage.factories import new_event, new_interaction

NOW = datetime(2026, 12, 3, tzinfo=UTC)
SUBJECT = Subjects().of("user", "gated-user")


CHANGES = {
    "erasure": lambda unit: unit.erasures.begin(SUBJECT, "test", NOW),
    "opt-out": lambda unit: unit.opt_outs.opt_out(SUBJECT, "test", NOW, erase=False),
}


@pytest.mark.parametrize("change", CHANGES)
def test_erasures_and_opt_outs_wait_for_the_writes_that_checked_before_them(
    storage: Storage, change: str
) -> None:
    writer = storage.dedicated_writer()
    checked, release, began = threading.Event(), threading.Event(), threading.Event()

    def write(rows: Any) -> None:
        assert not rows.running_erasures()
        assert not rows.opted_out([SUBJECT.hash])
        rows.insert_interactions([new_interaction(user_id="gated-user")])
        checked.set()
        assert release.wait(10)

    def begin() -> None:
        storage.write(CHANGES[change])
        began.set()

    writing = threading.Thread(target=writer.write, args=(write,))
    writing.start()
    assert checked.wait(10)
    beginning = threading.Thread(target=begin)
    beginning.start()
    try:
        assert not began.wait(0.5)  # the erasure waits for the write that checked before it
    finally:
        release.set()
        writing.join(10)
        beginning.join(10)
    assert began.is_set()
    seen = writer.write(lambda rows: (rows.running_erasures(), rows.opted_out([SUBJECT.hash])))
    if change == "erasure":
        assert seen == (frozenset({("user", SUBJECT.hash)}), frozenset())
    else:
        assert seen == (frozenset(), frozenset({SUBJECT.hash}))
    erased = storage.write(lambda unit: unit.erase("user_id", "gated-user", 100))
    assert erased == ErasedCounts(interactions=1)  # committed before the change: there to erase
    writer.close()


def test_begin_resumes_the_running_entry_and_counts_add_up(storage: Storage) -> None:
    storage.write(
        lambda unit: (
            unit.insert_interactions([new_interaction(user_id="gated-user") for _ in range(3)]),
            unit.insert_events([new_event(user_id="gated-user") for _ in range(2)]),
        )
    )
    first = storage.write(lambda unit: unit.erasures.begin(SUBJECT, "first", NOW))
    again = storage.write(lambda unit: unit.erasures.begin(SUBJECT, "second", NOW))
    assert again == first  # one running entry per subject: the second caller resumes it

    def batch(unit: Any) -> ErasedCounts:
        erased: ErasedCounts = unit.erase("user_id", "gated-user", 2)
        unit.erasures.count(first.id, erased)
        return erased

    batches = [storage.write(batch) for _ in range(3)]
    assert batches == [
        ErasedCounts(interactions=2, events=2),
        ErasedCounts(interactions=1),
        ErasedCounts(),
    ]
    storage.write(lambda unit: unit.erasures.finish(first.id, NOW))
    done = storage.read(lambda unit: unit.erasures.by_id(first.id))
    assert done is not None
    assert done.erased == ErasedCounts(interactions=3, events=2)
    assert (done.batches, done.finish_time, done.requested_by) == (4, NOW, "first")
    assert storage.read(lambda unit: unit.erasures.newest(10, None, SUBJECT)) == [done]
    new = storage.write(lambda unit: unit.erasures.begin(SUBJECT, "later", NOW))
    assert new.id > first.id  # a finished erasure is not resumed
    assert storage.write(lambda unit: unit.running_erasures()) == {("user", SUBJECT.hash)}


def test_vacuum_rewrites_the_database_and_keeps_every_row(storage: Storage) -> None:
    storage.write(lambda unit: unit.insert_events([new_event(user_id="kept") for _ in range(3)]))
    storage.vacuum()
    kept = storage.write(lambda unit: unit.erase("user_id", "kept", 10))
    assert kept == ErasedCounts(events=3)
