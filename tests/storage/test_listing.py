"""Keyset pages of feedback, interactions and events, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

from storage.records import (
    EventEntry,
    EventFilter,
    FeedbackEntry,
    FeedbackFilter,
    InteractionEntry,
    InteractionFilter,
    Keyset,
    Label,
    NewFeedback,
    Score,
    Thumb,
)
from tests.storage.factories import (
    event_entry,
    feedback_entry,
    insert_event,
    insert_feedback,
    interaction_entry,
    minutes,
    new_event,
    new_feedback,
    new_interaction,
)

if TYPE_CHECKING:
    from storage import Storage

FEEDBACK = {
    "f1": new_feedback(
        conversation_id="conv-a",
        user_id="user-1",
        message_id="m1",
        model="gpt-4o",
        rating=Score(1),
        text="bad answer",
        create_time=minutes(1),
    ),
    "f2": new_feedback(
        conversation_id="conv-a",
        user_id="user-2",
        message_id="m2",
        model="llama-3",
        rating=Score(3),
        create_time=minutes(2),
    ),
    "f3": new_feedback(
        conversation_id="conv-b",
        user_id="user-1",
        message_id="m3",
        model="gpt-4o",
        rating=Score(5),
        text="",
        create_time=minutes(3),
    ),
    "f4": new_feedback(
        conversation_id="conv-b",
        user_id="user-2",
        message_id="m3",
        model="gpt-4o",
        rating=Thumb(True),
        text="love it",
        create_time=minutes(4),
    ),
    "f5": new_feedback(
        conversation_id="conv-a", user_id="user-1", rating=Label("good"), create_time=minutes(5)
    ),
    "f6": new_feedback(
        conversation_id="conv-c",
        user_id="user-3",
        message_id="m4",
        rating=Score(4),
        create_time=minutes(6),
    ),
    "f7": new_feedback(
        conversation_id=None,
        user_id="user-3",
        message_id="m9",
        rating=Thumb(False),
        create_time=minutes(7),
    ),
    "f8": new_feedback(
        conversation_id="conv-c", rating=Label("bad"), text="meh", create_time=minutes(8)
    ),
    "f9": new_feedback(conversation_id="conv-c", rating=Score(2), create_time=minutes(9)),
}
"""Inserted in this order, so ids (and create_time) grow from f1 to f9."""

NEWEST_FIRST = Keyset()
ALL_NEWEST_FIRST = ["f9", "f8", "f7", "f6", "f5", "f4", "f3", "f2", "f1"]


@pytest.fixture
def feedback(storage: Storage) -> dict[str, FeedbackEntry]:
    """FEEDBACK stored in order, each in a unit of its own, as the entries a list reads."""
    return {name: feedback_entry(_insert(storage, new)) for name, new in FEEDBACK.items()}


def _insert(storage: Storage, new: NewFeedback) -> Any:
    return storage.write(lambda repository: insert_feedback(repository, new))


def feedback_page(
    storage: Storage,
    feedback: dict[str, FeedbackEntry],
    selection: FeedbackFilter,
    keyset: Keyset,
) -> list[str]:
    """The names of the entries on one page."""
    names = {entry.id: name for name, entry in feedback.items()}
    entries = storage.read(lambda repository: repository.feedback_entries(selection, keyset))
    return [names[entry.id] for entry in entries]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, ALL_NEWEST_FIRST),
        ({"conversation_id": "conv-a"}, ["f5", "f2", "f1"]),
        ({"message_id": "m3"}, ["f4", "f3"]),
        ({"user_id": "user-1"}, ["f5", "f3", "f1"]),
        ({"conversation_id": "conv-a", "user_id": "user-1"}, ["f5", "f1"]),
        ({"model": "gpt-4o"}, ["f4", "f3", "f1"]),
        ({"model": "GPT-4O"}, []),
        ({"min_score": 3}, ["f6", "f3", "f2"]),
        ({"max_score": 3}, ["f9", "f2", "f1"]),
        ({"min_score": 3, "max_score": 3}, ["f2"]),
        ({"min_score": 2, "max_score": 4}, ["f9", "f6", "f2"]),
        ({"min_score": 1}, ["f9", "f6", "f3", "f2", "f1"]),
        ({"max_score": 5}, ["f9", "f6", "f3", "f2", "f1"]),
        ({"min_score": 4, "max_score": 2}, []),
        ({"rating_kind": "score"}, ["f9", "f6", "f3", "f2", "f1"]),
        ({"rating_kind": "thumb"}, ["f7", "f4"]),
        ({"rating_kind": "label"}, ["f8", "f5"]),
        ({"label": "good"}, ["f5"]),
        ({"rating_kind": "label", "label": "bad"}, ["f8"]),
        ({"rating_kind": "score", "label": "bad"}, []),
        ({"has_text": True}, ["f8", "f4", "f1"]),
        ({"has_text": False}, ["f9", "f7", "f6", "f5", "f3", "f2"]),
        ({"has_text": True, "rating_kind": "score"}, ["f1"]),
        ({"start_time": minutes(7)}, ["f9", "f8", "f7"]),
        ({"end_time": minutes(3)}, ["f2", "f1"]),
        ({"start_time": minutes(2), "end_time": minutes(4)}, ["f3", "f2"]),
        ({"start_time": minutes(4), "end_time": minutes(4)}, []),
        (
            {"start_time": minutes(2) + timedelta(microseconds=1), "end_time": minutes(9)},
            ["f8", "f7", "f6", "f5", "f4", "f3"],
        ),
        ({"conversation_id": "conv-c", "min_score": 2, "has_text": False}, ["f9", "f6"]),
        ({"conversation_id": "nope"}, []),
    ],
)
def test_feedback_filters(
    storage: Storage,
    feedback: dict[str, FeedbackEntry],
    changes: dict[str, Any],
    expected: list[str],
) -> None:
    selection = FeedbackFilter(**changes)
    newest = feedback_page(storage, feedback, selection, Keyset(limit=100))
    oldest = feedback_page(storage, feedback, selection, Keyset(newest_first=False, limit=100))

    assert newest == expected
    assert oldest == expected[::-1]


def test_feedback_entries_carry_every_field(
    storage: Storage, feedback: dict[str, FeedbackEntry]
) -> None:
    listed = storage.read(
        lambda repository: repository.feedback_entries(FeedbackFilter(), Keyset(limit=100))
    )

    assert listed == [feedback[name] for name in ALL_NEWEST_FIRST]
    thumbs = [entry.thumb_up for entry in listed if entry.rating_kind == "thumb"]
    assert thumbs == [False, True]
    assert all(type(thumb) is bool for thumb in thumbs)
    assert all(entry.create_time.tzinfo is UTC for entry in listed)


@pytest.mark.parametrize("newest_first", [True, False])
def test_keyset_pages_never_skip_or_repeat(
    storage: Storage, feedback: dict[str, FeedbackEntry], newest_first: bool
) -> None:
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = feedback_page(
            storage, feedback, FeedbackFilter(), Keyset(cursor, newest_first, limit=4)
        )
        if not page:
            break
        pages.append(page)
        cursor = feedback[page[-1]].id

    expected = ALL_NEWEST_FIRST if newest_first else ALL_NEWEST_FIRST[::-1]
    assert [len(page) for page in pages] == [4, 4, 1]
    assert [name for page in pages for name in page] == expected


def test_keyset_combines_with_filters(storage: Storage, feedback: dict[str, FeedbackEntry]) -> None:
    f5 = feedback["f5"].id

    assert feedback_page(storage, feedback, FeedbackFilter(user_id="user-1"), Keyset(f5)) == [
        "f3",
        "f1",
    ]
    assert (
        feedback_page(storage, feedback, FeedbackFilter(user_id="user-1"), Keyset(f5, False)) == []
    )
    assert feedback_page(storage, feedback, FeedbackFilter(), Keyset(feedback["f1"].id)) == []
    assert (
        feedback_page(storage, feedback, FeedbackFilter(), Keyset(feedback["f9"].id, False)) == []
    )


def test_a_non_positive_limit_is_a_bug(storage: Storage) -> None:
    with pytest.raises(ValueError, match="limit"):
        storage.read(lambda repository: repository.event_entries(EventFilter(), Keyset(limit=0)))


# Interactions


def test_interaction_filters_and_order(storage: Storage) -> None:
    news = [
        new_interaction(conversation_id="c1", message_id="m1", user_id="u1", model="gpt-4o"),
        new_interaction(conversation_id="c1", user_id="u2", occur_time=minutes(-10)),
        new_interaction(conversation_id="c2", message_id="m3", user_id="u1", model="gpt-4o"),
        new_interaction(conversation_id="c2", model="llama-3", occur_time=minutes(10)),
    ]
    stored = storage.write(lambda repository: repository.insert_interactions(news))
    entries = [interaction_entry(record) for record in stored]

    def page(keyset: Keyset = NEWEST_FIRST, **changes: Any) -> list[InteractionEntry]:
        selection = InteractionFilter(**changes)
        return storage.read(lambda repository: repository.interaction_entries(selection, keyset))

    assert page() == entries[::-1]
    assert page(Keyset(newest_first=False)) == entries
    assert page(conversation_id="c1") == [entries[1], entries[0]]
    assert page(message_id="m3") == [entries[2]]
    assert page(user_id="u1") == [entries[2], entries[0]]
    assert page(model="gpt-4o") == [entries[2], entries[0]]
    assert page(start_time=minutes(0)) == [entries[3], entries[2], entries[0]]
    assert page(end_time=minutes(0)) == [entries[1]]
    assert page(start_time=minutes(-10), end_time=minutes(10)) == entries[:3][::-1]
    assert page(Keyset(entries[2].id, limit=1), conversation_id="c1") == [entries[1]]
    assert page(Keyset(entries[0].id, newest_first=False), model="gpt-4o") == [entries[2]]


# Events


def test_event_filters_and_order(storage: Storage) -> None:
    news = [
        new_event(user_id="u1", event_type="page_view", event_time=minutes(1)),
        new_event(user_id="u2", event_type="click", details={"x": 1}, event_time=minutes(2)),
        new_event(user_id="u1", event_type="click", event_time=minutes(3)),
        new_event(user_id="u2", event_type="page_view", event_time=minutes(-5)),
    ]
    stored = storage.write(lambda repository: repository.insert_events(news))
    entries = [event_entry(record) for record in stored]

    def page(keyset: Keyset = NEWEST_FIRST, **changes: Any) -> list[EventEntry]:
        selection = EventFilter(**changes)
        return storage.read(lambda repository: repository.event_entries(selection, keyset))

    assert page() == entries[::-1]
    assert page(Keyset(newest_first=False, limit=2)) == entries[:2]
    assert page(user_id="u1") == [entries[2], entries[0]]
    assert page(event_type="click") == [entries[2], entries[1]]
    assert page(user_id="u2", event_type="click") == [entries[1]]
    assert page(start_time=minutes(2)) == [entries[2], entries[1]]
    assert page(start_time=minutes(-5), end_time=minutes(2)) == [entries[3], entries[0]]
    assert page(Keyset(entries[2].id), event_type="click") == [entries[1]]
    assert page()[2].details == {"x": 1}


def test_times_in_any_zone_select_the_same_instants(storage: Storage) -> None:
    storage.write(lambda repository: insert_event(repository, new_event(event_time=minutes(0))))
    same_instant = minutes(0).astimezone(timezone(timedelta(hours=5, minutes=30)))

    def count(selection: EventFilter) -> int:
        return len(storage.read(lambda repository: repository.event_entries(selection, Keyset())))

    assert count(EventFilter(start_time=same_instant)) == 1
    assert count(EventFilter(end_time=same_instant)) == 0


# Time ranges stay exact when backfilled rows (old times, new ids) widen the id blocks


@pytest.mark.parametrize(
    ("window", "cursor", "newest_first"),
    [
        # Minute 15 was backfilled at the end: the last block's times span the table.
        ((10, 20), None, True),
        ((250, 298), None, True),
        ((600, 660), None, True),
        ((10, 20), 150, False),  # behind the cursor
        ((160, 170), 150, False),  # minute 165 was backfilled too
        ((100, 250), 200, True),
        ((2000, 2100), None, True),  # nothing in range
    ],
)
def test_time_ranges_are_exact_with_backfilled_rows(
    storage: Storage,
    window: tuple[int, int],
    cursor: int | None,
    newest_first: bool,
) -> None:
    # Backfilled rows (old times, new ids) keep the choice honest: it may only cost, never err.
    times = [minutes(n) for n in range(1500)] + [minutes(15), minutes(165), minutes(-1)]
    news = [new_event(event_time=time) for time in times]
    stored = storage.write(lambda repository: repository.insert_events(news))
    ids = [record.id for record in stored]
    start, end = minutes(window[0]), minutes(window[1])
    selection = EventFilter(start_time=start, end_time=end)
    keyset = Keyset(None if cursor is None else ids[cursor], newest_first, limit=7)

    page = storage.read(lambda repository: repository.event_entries(selection, keyset))

    matching = [i for i, time in zip(ids, times, strict=True) if start <= time < end]
    if keyset.cursor is not None:
        past = keyset.cursor
        matching = [i for i in matching if (i < past if newest_first else i > past)]
    expected = sorted(matching, reverse=newest_first)[:7]
    assert [entry.id for entry in page] == expected
