"""Group commit's batch application (write_rules.apply_batch) over in-memory storage ports.

No database: these pin the rules themselves (idempotent repeats, vote replacement, linking
feedback to interactions of the same batch, conflicts) in milliseconds; tests/storage and
tests/e2e prove the database implementations and the server keep them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.service.errors import AlreadyExists, FailedPrecondition, NotFound
from server.service.group_commit import Job
from server.service.ports import Vote
from server.service.write_rules import (
    EVENT,
    FEEDBACK,
    INTERACTION,
    Duplicate,
    Rules,
    apply_batch,
)
from storage.errors import Conflict
from storage.records import (
    FeedbackRecord,
    NewEvent,
    NewFeedback,
    NewInteraction,
    Score,
    Thumb,
)
from tests.server.memory_storage import MemoryRows, MemoryStorage

NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)
RULES = Rules()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


def _turn(message_id: str | None, **changes: Any) -> NewInteraction:
    new = NewInteraction(
        conversation_id="c1", message_id=message_id, occur_time=NOW, create_time=NOW
    )
    return dataclasses.replace(new, **changes)


def _rating(message_id: str | None = "m1", **changes: Any) -> NewFeedback:
    new = NewFeedback(conversation_id=None, message_id=message_id, rating=Score(4), create_time=NOW)
    return dataclasses.replace(new, **changes)


def _event(**changes: Any) -> NewEvent:
    new = NewEvent(user_id="u1", event_type="click", event_time=NOW, receive_time=NOW)
    return dataclasses.replace(new, **changes)


def _apply(
    storage: MemoryStorage,
    loop: asyncio.AbstractEventLoop,
    *jobs: tuple[str, list[Any]],
    rules: Rules = RULES,
) -> list[list[Any]]:
    """Apply one batch of jobs (kind, items) in one unit of work; each job's outcomes."""
    batch = [Job(kind, items, loop.create_future()) for kind, items in jobs]
    for job in batch:
        job.reset()
    storage.write(lambda rows: apply_batch(rows, batch, rules))
    return [job.outcomes for job in batch]


def test_feedback_links_to_an_interaction_of_the_same_batch(
    storage: MemoryStorage, loop: asyncio.AbstractEventLoop
) -> None:
    turn = _turn("m1", user_id="u1", model="gpt", latency_ms=12.5, total_tokens=30)

    [[interaction], [feedback]] = _apply(
        storage, loop, (INTERACTION, [turn]), (FEEDBACK, [_rating("m1")])
    )

    assert feedback.interaction_id == interaction.id
    assert (feedback.conversation_id, feedback.user_id, feedback.model) == ("c1", "u1", "gpt")
    assert (feedback.latency_ms, feedback.tokens_used) == (12.5, 30)
    assert storage.rows.feedback == [feedback]


def test_conversation_feedback_links_to_the_latest_turn(
    storage: MemoryStorage, loop: asyncio.AbstractEventLoop
) -> None:
    [[_, latest]] = _apply(storage, loop, (INTERACTION, [_turn("m1"), _turn("m2")]))

    [[feedback]] = _apply(storage, loop, (FEEDBACK, [_rating(None, conversation_id="c1")]))

    assert feedback.interaction_id == latest.id


def test_feedback_on_an_unrecorded_message_is_refused_unless_the_rules_accept_it(
    storage: MemoryStorage, loop: asyncio.AbstractEventLoop
) -> None:
    [[refused]] = _apply(storage, loop, (FEEDBACK, [_rating("never")]))
    lenient = Rules(accept_unknown_conversations=True)
    [[accepted]] = _apply(storage, loop, (FEEDBACK, [_rating("never")]), rules=lenient)

    assert isinstance(refused, NotFound)
    assert isinstance(accepted, FeedbackRecord)
    assert accepted.interaction_id is None
    assert storage.rows.feedback == [accepted]


def test_feedback_from_another_user_than_the_turns_is_refused(
    storage: MemoryStorage, loop: asyncio.AbstractEventLoop
) -> None:
    _apply(storage, loop, (INTERACTION, [_turn("m1", user_id="u1")]))

    [[refused]] = _apply(storage, loop, (FEEDBACK, [_rating("m1", user_id="u2")]))

    assert isinstance(refused, FailedPrecondition)
    assert storage.rows.feedback == []


def test_a_repeated_request_is_answered_with_the_stored_record(
    storage: MemoryStorage, loop: asyncio.AbstractEventLoop
) -> None:
    _apply(storage, loop, (INTERACTION, [_turn("m1")]))
    rating = _rating("m1", request_id="r1", request_digest="d1")

    [[first]] = _apply(storage, loop, (FEEDBACK, [rating]))
    [[again]] = _apply(storage, loop, (FEEDBACK, [rating]))

    assert again == Duplicate(first)
    assert storage.rows.feedback == [first]


def test_a_repeat_within_one_batch_shares_the_first_outcome(
    storage: MemoryStorage, loop: asyncio.AbstractEventLoop
) -> None:
    turn = _turn("m1", request_id="r1", request_digest="d1")

    [[first], [again]] = _apply(storage, loop, (INTERACTION, [turn]), (INTERACTION, [turn]))

    assert again == Duplicate(first)
    assert storage.rows.interactions == [first]


def test_a_request_id_reused_with_other_content_is_refused(
    storage: MemoryStorage, loop: asyncio.AbstractEventLoop
) -> None:
    original = _event(request_id="r1", request_digest="d1")
    other = _event(request_id="r1", request_digest="d2")

    [[stored, same_batch]] = _apply(storage, loop, (EVENT, [original, other]))
    [[later]] = _apply(storage, loop, (EVENT, [other]))

    assert isinstance(same_batch, AlreadyExists)
    assert isinstance(later, AlreadyExists)
    assert storage.rows.events == [stored]


def test_a_new_vote_replaces_the_voters_current_one(
    storage: MemoryStorage, loop: asyncio.AbstractEventLoop
) -> None:
    _apply(storage, loop, (INTERACTION, [_turn("m1")]))
    later = NOW + timedelta(minutes=1)

    [[old]] = _apply(storage, loop, (FEEDBACK, [_rating(user_id="u1", rating=Score(2))]))
    [[new]] = _apply(
        storage, loop, (FEEDBACK, [_rating(user_id="u1", rating=Thumb(up=True), create_time=later)])
    )

    assert new.replaces_id == old.id
    assert storage.rows.feedback == [new]
    assert storage.rows.history == [
        dataclasses.replace(old, replace_time=later, replaced_by_id=new.id)
    ]


def test_two_votes_of_one_voter_in_one_batch_replace_in_order(
    storage: MemoryStorage, loop: asyncio.AbstractEventLoop
) -> None:
    _apply(storage, loop, (INTERACTION, [_turn("m1")]))
    votes = [_rating(user_id="u1", rating=Score(score)) for score in (1, 2, 3)]

    [[first, second, third]] = _apply(storage, loop, (FEEDBACK, votes))

    assert (second.replaces_id, third.replaces_id) == (first.id, second.id)
    assert storage.rows.feedback == [third]
    assert [record.id for record in storage.rows.history] == [first.id, second.id]


def test_a_replayed_replaced_vote_answers_as_it_was_while_current(
    storage: MemoryStorage, loop: asyncio.AbstractEventLoop
) -> None:
    _apply(storage, loop, (INTERACTION, [_turn("m1")]))
    vote = _rating(user_id="u1", request_id="r1", request_digest="d1")
    [[old]] = _apply(storage, loop, (FEEDBACK, [vote]))
    _apply(storage, loop, (FEEDBACK, [_rating(user_id="u1", rating=Score(1))]))

    [[replayed]] = _apply(storage, loop, (FEEDBACK, [vote]))

    assert replayed == Duplicate(old)


def test_a_message_recorded_twice_is_refused(
    storage: MemoryStorage, loop: asyncio.AbstractEventLoop
) -> None:
    [[stored, twice_in_batch]] = _apply(storage, loop, (INTERACTION, [_turn("m1"), _turn("m1")]))
    [[later]] = _apply(storage, loop, (INTERACTION, [_turn("m1")]))

    assert isinstance(twice_in_batch, AlreadyExists)
    assert isinstance(later, AlreadyExists)
    assert storage.rows.interactions == [stored]


def test_an_event_id_is_stored_once_whatever_later_copies_say(
    storage: MemoryStorage, loop: asyncio.AbstractEventLoop
) -> None:
    [[first, copy]] = _apply(
        storage, loop, (EVENT, [_event(event_id="e1"), _event(event_id="e1", event_type="other")])
    )
    [[later]] = _apply(storage, loop, (EVENT, [_event(event_id="e1", user_id="u2")]))

    assert copy == Duplicate(first)
    assert later == Duplicate(first)
    assert storage.rows.events == [first]


class _RacedRows(MemoryRows):
    """Another replica stored this voter's vote after the lookup: the lookup misses it."""

    def current_votes(self, voters: Collection[Vote]) -> dict[Vote, FeedbackRecord]:
        return {}


def test_a_conflict_only_the_storage_sees_fails_the_whole_batch(
    loop: asyncio.AbstractEventLoop,
) -> None:
    storage = MemoryStorage()
    storage.rows = _RacedRows()
    _apply(storage, loop, (INTERACTION, [_turn("m1")]))
    _apply(storage, loop, (FEEDBACK, [_rating(user_id="u1")]))
    rows_before = dataclasses.replace(storage.rows)

    with pytest.raises(Conflict):
        _apply(storage, loop, (INTERACTION, [_turn("m2")]), (FEEDBACK, [_rating(user_id="u1")]))

    assert storage.rows == rows_before  # the unit's interaction is not kept either
