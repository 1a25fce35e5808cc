"""The storage contract, run unchanged against SQLite and PostgreSQL: what goes in comes out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

from storage import Conflict, StorageError
from storage.records import (
    EventFilter,
    EventRecord,
    EventStats,
    FeedbackEntry,
    FeedbackFilter,
    FeedbackRecord,
    FeedbackStats,
    InteractionFilter,
    InteractionRecord,
    InteractionStats,
    Keyset,
    Label,
    NewEvent,
    NewFeedback,
    Rating,
    Score,
    StatsFilter,
    Thumb,
)
from tests.storage import full_scan
from tests.storage.factories import (
    T0,
    event_entry,
    feedback_entry,
    insert_event,
    insert_feedback,
    insert_interaction,
    interaction_by_message,
    interaction_entry,
    latest_interaction,
    new_event,
    new_feedback,
    new_interaction,
    stored,
    stored_events,
)

if TYPE_CHECKING:
    from storage import Repository, Storage

RICH_METADATA: dict[str, Any] = {
    "source": "web_ui",
    "nested": {"list": [1, 2.5, -0.125, True, False, None, "ü"], "empty": {}, "none": None},
    "emoji": "👍🏽",
    "中文": "値",
    "zero": 0,
    "big": 2**62,
    "empty_string": "",
}

PLUS_0530 = timezone(timedelta(hours=5, minutes=30))


def list_all_feedback(storage: Storage) -> list[FeedbackEntry]:
    """Every stored feedback entry, newest first."""
    return storage.read(
        lambda repository: repository.feedback_entries(FeedbackFilter(), Keyset(limit=1000))
    )


def count_everything(storage: Storage) -> tuple[int, int, int]:
    """(interactions, feedback, events) currently stored."""
    return storage.read(
        lambda repository: (
            full_scan.interaction_stats(repository, StatsFilter()).total_count,
            full_scan.feedback_stats(repository, StatsFilter()).total_count,
            full_scan.event_stats(repository, StatsFilter()).total_count,
        )
    )


# Round trips


def test_interaction_round_trips_every_field(storage: Storage) -> None:
    new = new_interaction(
        conversation_id="conv-ü",
        message_id="msg-1",
        user_id="user-1",
        model="gpt-4o-mini",
        input_hash="a" * 64,
        output_hash="b" * 64,
        latency_ms=125.5,
        prompt_tokens=100,
        completion_tokens=145,
        total_tokens=245,
        metadata=RICH_METADATA,
        occur_time=datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=PLUS_0530),
        create_time=datetime(2025, 1, 2, 3, 4, 6, 1, tzinfo=UTC),
    )

    inserted = storage.write(lambda repository: insert_interaction(repository, new))
    by_message = storage.read(lambda repository: interaction_by_message(repository, "msg-1"))
    latest = storage.read(lambda repository: latest_interaction(repository, "conv-ü"))

    assert inserted == stored(new, InteractionRecord, inserted.id)
    assert by_message == inserted
    assert latest == inserted
    assert storage.read(
        lambda repository: repository.interaction_entries(InteractionFilter(), Keyset())
    ) == [interaction_entry(inserted)]
    assert by_message is not None
    assert by_message.occur_time.tzinfo is UTC
    assert by_message.occur_time == datetime(2025, 1, 1, 21, 34, 5, 678901, tzinfo=UTC)
    assert by_message.create_time.microsecond == 1


def test_interaction_keeps_none_zero_and_empty_apart(storage: Storage) -> None:
    zeros = new_interaction(
        message_id="",
        user_id="",
        model="",
        input_hash="",
        output_hash="",
        latency_ms=0.0,
        prompt_tokens=0,
        completion_tokens=0,
        total_tokens=0,
        metadata={},
    )
    nothing = new_interaction(conversation_id="conv-2")

    storage.write(lambda repository: insert_interaction(repository, zeros))
    storage.write(lambda repository: insert_interaction(repository, nothing))
    read_zeros = storage.read(lambda repository: interaction_by_message(repository, ""))
    read_nothing = storage.read(lambda repository: latest_interaction(repository, "conv-2"))

    assert read_zeros is not None
    assert read_nothing is not None
    assert read_zeros == stored(zeros, InteractionRecord, read_zeros.id)
    assert read_nothing == stored(nothing, InteractionRecord, read_nothing.id)
    assert type(read_zeros.latency_ms) is float
    assert type(read_zeros.total_tokens) is int
    assert read_nothing.message_id is None
    assert read_nothing.latency_ms is None
    assert read_nothing.metadata == {}


@pytest.mark.parametrize(
    "rating", [Score(1), Score(5), Thumb(up=True), Thumb(up=False), Label("good")], ids=repr
)
def test_feedback_round_trips_every_field(storage: Storage, rating: Rating) -> None:
    interaction = storage.write(
        lambda repository: insert_interaction(repository, new_interaction(message_id="msg-1"))
    )
    new = new_feedback(
        conversation_id="conv-1",
        message_id="msg-1",
        user_id="user-ü",
        interaction_id=interaction.id,
        rating=rating,
        text="é" * 2000,
        latency_ms=0.25,
        tokens_used=2**31 - 1,
        input_hash="c" * 64,
        output_hash="d" * 64,
        metadata=RICH_METADATA,
        create_time=datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=PLUS_0530),
    )

    inserted = storage.write(lambda repository: insert_feedback(repository, new))
    listed = list_all_feedback(storage)

    assert inserted == stored(new, FeedbackRecord, inserted.id)
    assert listed == [feedback_entry(inserted)]
    assert listed[0].create_time.tzinfo is UTC


def test_feedback_keeps_none_zero_and_empty_apart(storage: Storage) -> None:
    zeros = new_feedback(text="", latency_ms=0.0, tokens_used=0, user_id="", metadata={})
    nothing = new_feedback()

    storage.write(lambda repository: insert_feedback(repository, zeros))
    storage.write(lambda repository: insert_feedback(repository, nothing))
    newest_first = list_all_feedback(storage)

    assert [record.text for record in newest_first] == [None, ""]
    assert [record.latency_ms for record in newest_first] == [None, 0.0]
    assert [record.tokens_used for record in newest_first] == [None, 0]
    assert [record.user_id for record in newest_first] == [None, ""]
    assert newest_first[1] == feedback_entry(stored(zeros, FeedbackRecord, newest_first[1].id))


def test_feedback_on_an_unknown_message_may_lack_a_conversation(storage: Storage) -> None:
    new = new_feedback(conversation_id=None, message_id="never-recorded", rating=Thumb(up=False))

    inserted = storage.write(lambda repository: insert_feedback(repository, new))

    assert inserted.conversation_id is None
    assert list_all_feedback(storage) == [feedback_entry(inserted)]


def test_event_round_trips_every_field(storage: Storage, database_url: str) -> None:
    new = new_event(
        user_id="user-ü",
        event_type="button_click",
        details=RICH_METADATA,
        event_time=datetime(2025, 6, 30, 23, 59, 59, 500001, tzinfo=PLUS_0530),
        receive_time=datetime(2025, 6, 30, 18, 30, 0, 0, tzinfo=UTC),
    )

    inserted = storage.write(lambda repository: insert_event(repository, new))

    assert inserted == stored(new, EventRecord, inserted.id)
    assert stored_events(database_url) == [inserted]
    assert stored_events(database_url)[0].event_time.tzinfo is UTC
    assert storage.read(lambda repository: repository.event_entries(EventFilter(), Keyset())) == [
        event_entry(inserted)
    ]


def test_ids_increase_in_insertion_order(storage: Storage) -> None:
    first, second = storage.write(
        lambda repository: (
            insert_interaction(repository, new_interaction()),
            insert_interaction(repository, new_interaction()),
        )
    )
    third = storage.write(lambda repository: insert_interaction(repository, new_interaction()))

    assert first.id < second.id < third.id
    assert storage.read(lambda repository: latest_interaction(repository, "conv-1")) == third


def test_a_read_unit_sees_one_snapshot(storage: Storage) -> None:
    def count_twice_around_a_commit(repository: Repository) -> tuple[int, int, int]:
        before = full_scan.event_stats(repository, StatsFilter()).total_count
        storage.write(lambda other: insert_event(other, new_event()))  # commits meanwhile
        again = full_scan.event_stats(repository, StatsFilter()).total_count
        return before, again, count_everything(storage)[2]

    assert storage.read(count_twice_around_a_commit) == (0, 0, 1)


def test_lookups_of_unknown_ids_find_nothing(storage: Storage) -> None:
    storage.write(lambda repository: insert_interaction(repository, new_interaction()))

    assert storage.read(lambda repository: interaction_by_message(repository, "nope")) is None
    assert storage.read(lambda repository: latest_interaction(repository, "nope")) is None


# Conflicts and rollback


def test_duplicate_message_id_conflicts_and_keeps_nothing_of_the_unit(storage: Storage) -> None:
    first = storage.write(
        lambda repository: insert_interaction(repository, new_interaction(message_id="msg-1"))
    )

    def duplicate(repository: Repository) -> None:
        insert_event(repository, new_event())
        insert_feedback(repository, new_feedback())
        insert_interaction(repository, new_interaction(conversation_id="other", message_id="msg-1"))

    with pytest.raises(Conflict) as raised:
        storage.write(duplicate)

    assert raised.value.constraint == "uq_interactions_message_id"
    assert count_everything(storage) == (1, 0, 0)
    assert storage.read(lambda repository: interaction_by_message(repository, "msg-1")) == first


def test_missing_message_ids_never_conflict(storage: Storage) -> None:
    for _ in range(3):
        storage.write(lambda repository: insert_interaction(repository, new_interaction()))

    assert count_everything(storage) == (3, 0, 0)


def test_conflict_surfaces_at_the_insert(storage: Storage) -> None:
    storage.write(
        lambda repository: insert_interaction(repository, new_interaction(message_id="msg-1"))
    )
    seen: list[str | None] = []

    def insert_and_note(repository: Repository) -> None:
        try:
            insert_interaction(repository, new_interaction(message_id="msg-1"))
        except Conflict as conflict:
            seen.append(conflict.constraint)
            raise

    with pytest.raises(Conflict):
        storage.write(insert_and_note)

    assert seen == ["uq_interactions_message_id"]


def test_an_exception_in_a_unit_rolls_back_its_earlier_inserts(storage: Storage) -> None:
    class Abandon(Exception):
        pass

    def partial(repository: Repository) -> None:
        interaction = insert_interaction(repository, new_interaction(message_id="msg-1"))
        insert_feedback(repository, new_feedback(interaction_id=interaction.id))
        insert_event(repository, new_event())
        raise Abandon

    with pytest.raises(Abandon):
        storage.write(partial)

    assert count_everything(storage) == (0, 0, 0)


@pytest.mark.parametrize(
    "invalid",
    [
        pytest.param(new_feedback(rating=Score(6)), id="score-above-5"),
        pytest.param(new_feedback(rating=Score(0)), id="score-below-1"),
        pytest.param(new_feedback(conversation_id=None), id="no-conversation-nor-message"),
        pytest.param(new_feedback(interaction_id=999_999), id="unknown-interaction"),
    ],
)
def test_the_schema_refuses_invalid_feedback_and_keeps_nothing(
    storage: Storage, invalid: NewFeedback
) -> None:
    def insert_after_a_valid_one(repository: Repository) -> None:
        insert_feedback(repository, new_feedback())
        insert_feedback(repository, invalid)

    with pytest.raises(StorageError) as raised:
        storage.write(insert_after_a_valid_one)

    assert not isinstance(raised.value, Conflict)
    assert count_everything(storage) == (0, 0, 0)


@pytest.mark.parametrize(
    ("invalid", "message"),
    [
        pytest.param(new_event(event_time=datetime(2025, 1, 1)), "naive", id="naive-datetime"),
        pytest.param(new_event(details={"ratio": float("nan")}), "JSON", id="nan-in-json"),
    ],
)
def test_invalid_values_raise_value_error_and_keep_nothing(
    storage: Storage, invalid: NewEvent, message: str
) -> None:
    def insert_after_a_valid_one(repository: Repository) -> None:
        insert_event(repository, new_event())
        insert_event(repository, invalid)

    with pytest.raises(ValueError, match=message):
        storage.write(insert_after_a_valid_one)

    assert count_everything(storage) == (0, 0, 0)


# Feedback statistics


@pytest.fixture
def rated(storage: Storage) -> None:
    """Eight feedback entries, one a minute from T0, covering every rating kind.

    Two rate whole conversations: a user's second vote on a message would replace the first.
    """
    entries = [
        new_feedback(conversation_id="conv-a", user_id="user-1", message_id="msg-1",
                     rating=Score(5), latency_ms=100.0, tokens_used=200, text="great"),
        new_feedback(conversation_id="conv-a", user_id="user-1",
                     rating=Score(3), latency_ms=300.0, text=""),
        new_feedback(conversation_id="conv-a", user_id="user-2", message_id="msg-2",
                     rating=Thumb(True), tokens_used=100),
        new_feedback(conversation_id="conv-b", user_id="user-2", message_id="msg-3",
                     rating=Thumb(False), latency_ms=50.5, tokens_used=0, text="meh"),
        new_feedback(conversation_id="conv-b", user_id="user-3", message_id="msg-3",
                     rating=Label("good"), text="ok"),
        new_feedback(conversation_id="conv-b", user_id="user-3", message_id="msg-4",
                     rating=Label("good")),
        new_feedback(conversation_id="conv-c", user_id="user-1", message_id="msg-5",
                     rating=Label("bad")),
        new_feedback(conversation_id="conv-c", user_id="user-1",
                     rating=Score(1), latency_ms=0.0, tokens_used=50),
    ]  # fmt: skip

    def insert_all(repository: Repository) -> None:
        for minute, entry in enumerate(entries):
            insert_feedback(repository, replace(entry, create_time=T0 + timedelta(minutes=minute)))

    storage.write(insert_all)


def scores(**counts: int) -> dict[int, int]:
    """score_counts with every key 1..5: scores(s5=1) -> {1: 0, ..., 5: 1}."""
    return {value: counts.get(f"s{value}", 0) for value in range(1, 6)}


@pytest.mark.usefixtures("rated")
@pytest.mark.parametrize(
    ("stats_filter", "expected"),
    [
        pytest.param(
            StatsFilter(),
            FeedbackStats(
                total_count=8, scored_count=3, avg_score=3.0, score_counts=scores(s1=1, s3=1, s5=1),
                thumbs_up_count=1, thumbs_down_count=1, label_counts={"good": 2, "bad": 1},
                avg_latency_ms=450.5 / 4, avg_tokens=350 / 4, with_text_count=3,
            ),
            id="overall",
        ),
        pytest.param(
            StatsFilter(conversation_id="conv-a"),
            FeedbackStats(
                total_count=3, scored_count=2, avg_score=4.0, score_counts=scores(s3=1, s5=1),
                thumbs_up_count=1, avg_latency_ms=200.0, avg_tokens=150.0, with_text_count=1,
            ),
            id="conversation",
        ),
        pytest.param(
            StatsFilter(user_id="user-2"),
            FeedbackStats(
                total_count=2, thumbs_up_count=1, thumbs_down_count=1, avg_latency_ms=50.5,
                avg_tokens=50.0, with_text_count=1,
            ),
            id="user",
        ),
        pytest.param(
            StatsFilter(message_id="msg-3"),
            FeedbackStats(
                total_count=2, thumbs_down_count=1, label_counts={"good": 1},
                avg_latency_ms=50.5, avg_tokens=0.0, with_text_count=2,
            ),
            id="message",
        ),
        pytest.param(
            StatsFilter(conversation_id="conv-b", user_id="user-3"),
            FeedbackStats(total_count=2, label_counts={"good": 2}, with_text_count=1),
            id="conversation-and-user",
        ),
        pytest.param(
            StatsFilter(start_time=T0 + timedelta(minutes=1), end_time=T0 + timedelta(minutes=3)),
            FeedbackStats(
                total_count=2, scored_count=1, avg_score=3.0, score_counts=scores(s3=1),
                thumbs_up_count=1, avg_latency_ms=300.0, avg_tokens=100.0,
            ),
            id="start-inclusive-end-exclusive",
        ),
        pytest.param(
            StatsFilter(
                start_time=T0 + timedelta(minutes=1, microseconds=1),
                end_time=T0 + timedelta(minutes=3, microseconds=1),
            ),
            FeedbackStats(
                total_count=2, thumbs_up_count=1, thumbs_down_count=1, avg_latency_ms=50.5,
                avg_tokens=50.0, with_text_count=1,
            ),
            id="one-microsecond-later",
        ),
        pytest.param(
            StatsFilter(start_time=T0 + timedelta(minutes=7)),
            FeedbackStats(
                total_count=1, scored_count=1, avg_score=1.0, score_counts=scores(s1=1),
                avg_latency_ms=0.0, avg_tokens=50.0,
            ),
            id="open-end",
        ),
        pytest.param(
            StatsFilter(end_time=T0),
            FeedbackStats(),
            id="end-at-first-entry-excludes-it",
        ),
        pytest.param(StatsFilter(conversation_id="nope"), FeedbackStats(), id="no-match"),
    ],
)  # fmt: skip
def test_feedback_stats_are_exact(
    storage: Storage, stats_filter: StatsFilter, expected: FeedbackStats
) -> None:
    stats = storage.read(lambda repository: full_scan.feedback_stats(repository, stats_filter))

    assert stats == expected
    assert stats.avg_score is None or type(stats.avg_score) is float
    assert stats.avg_tokens is None or type(stats.avg_tokens) is float


def test_feedback_stats_of_an_empty_database_are_zero_and_none(storage: Storage) -> None:
    stats = storage.read(lambda repository: full_scan.feedback_stats(repository, StatsFilter()))

    assert stats == FeedbackStats()
    assert stats.score_counts == {1: 0, 2: 0, 3: 0, 4: 0, 5: 0}
    assert stats.avg_score is None
    assert stats.avg_latency_ms is None
    assert stats.avg_tokens is None


# Interaction and event statistics


@pytest.fixture
def recorded(storage: Storage) -> None:
    """Four interactions, one a minute from T0."""
    entries = [
        new_interaction(conversation_id="conv-a", user_id="user-1", message_id="msg-1",
                        latency_ms=100.0, total_tokens=10),
        new_interaction(conversation_id="conv-a", user_id="user-2", message_id="msg-2",
                        total_tokens=30),
        new_interaction(conversation_id="conv-b", user_id="user-1", message_id="msg-3",
                        latency_ms=250.0),
        new_interaction(conversation_id="conv-b", latency_ms=0.0, total_tokens=0),
    ]  # fmt: skip

    def insert_all(repository: Repository) -> None:
        for minute, entry in enumerate(entries):
            insert_interaction(
                repository, replace(entry, occur_time=T0 + timedelta(minutes=minute))
            )

    storage.write(insert_all)


@pytest.mark.usefixtures("recorded")
@pytest.mark.parametrize(
    ("stats_filter", "expected"),
    [
        pytest.param(StatsFilter(), InteractionStats(
            total_count=4, avg_latency_ms=350.0 / 3, avg_total_tokens=40 / 3), id="overall"),
        pytest.param(StatsFilter(conversation_id="conv-a"), InteractionStats(
            total_count=2, avg_latency_ms=100.0, avg_total_tokens=20.0), id="conversation"),
        pytest.param(StatsFilter(user_id="user-1"), InteractionStats(
            total_count=2, avg_latency_ms=175.0, avg_total_tokens=10.0), id="user"),
        pytest.param(StatsFilter(message_id="msg-2"), InteractionStats(
            total_count=1, avg_latency_ms=None, avg_total_tokens=30.0), id="message"),
        pytest.param(
            StatsFilter(start_time=T0 + timedelta(minutes=1), end_time=T0 + timedelta(minutes=3)),
            InteractionStats(total_count=2, avg_latency_ms=250.0, avg_total_tokens=30.0),
            id="start-inclusive-end-exclusive",
        ),
        pytest.param(StatsFilter(user_id="nope"), InteractionStats(), id="no-match"),
    ],
)  # fmt: skip
def test_interaction_stats_are_exact(
    storage: Storage, stats_filter: StatsFilter, expected: InteractionStats
) -> None:
    assert (
        storage.read(lambda repository: full_scan.interaction_stats(repository, stats_filter))
        == expected
    )


@pytest.fixture
def logged(storage: Storage) -> None:
    """Four events, one a minute from T0."""
    entries = [("user-1", "page_view"), ("user-1", "click"), ("user-2", "page_view"),
               ("user-2", "page_view")]  # fmt: skip

    def insert_all(repository: Repository) -> None:
        for minute, (user_id, event_type) in enumerate(entries):
            insert_event(
                repository,
                new_event(
                    user_id=user_id,
                    event_type=event_type,
                    event_time=T0 + timedelta(minutes=minute),
                    receive_time=T0 + timedelta(hours=1),
                ),
            )

    storage.write(insert_all)


@pytest.mark.usefixtures("logged")
@pytest.mark.parametrize(
    ("stats_filter", "expected"),
    [
        pytest.param(StatsFilter(), EventStats(
            total_count=4, type_counts={"page_view": 3, "click": 1}), id="overall"),
        pytest.param(StatsFilter(user_id="user-1"), EventStats(
            total_count=2, type_counts={"page_view": 1, "click": 1}), id="user"),
        pytest.param(
            StatsFilter(start_time=T0 + timedelta(minutes=1), end_time=T0 + timedelta(minutes=3)),
            EventStats(total_count=2, type_counts={"click": 1, "page_view": 1}),
            id="start-inclusive-end-exclusive",
        ),
        pytest.param(StatsFilter(user_id="nope"), EventStats(), id="no-match"),
    ],
)  # fmt: skip
def test_event_stats_are_exact(
    storage: Storage, stats_filter: StatsFilter, expected: EventStats
) -> None:
    assert (
        storage.read(lambda repository: full_scan.event_stats(repository, stats_filter)) == expected
    )


@pytest.mark.parametrize(
    "stats_filter", [StatsFilter(conversation_id="conv-a"), StatsFilter(message_id="msg-1")]
)
def test_event_stats_refuse_filters_events_cannot_match(
    storage: Storage, stats_filter: StatsFilter
) -> None:
    with pytest.raises(ValueError, match="events"):
        storage.read(lambda repository: full_scan.event_stats(repository, stats_filter))


def test_stats_of_an_empty_database(storage: Storage) -> None:
    assert storage.read(
        lambda repository: full_scan.interaction_stats(repository, StatsFilter())
    ) == (InteractionStats())
    assert (
        storage.read(lambda repository: full_scan.event_stats(repository, StatsFilter()))
        == EventStats()
    )
