"""A watch's filter (server.service.watch_matching) accepts exactly the rows the list's SQL
(storage.rows.listing) returns, for any rows and any filter, and the watcher index finds every
watcher whose filter accepts a row."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from server.service.watch_matching import WatcherIndex, match_of
from storage import Storage
from storage.records import EventFilter, FeedbackFilter, Keyset, Label, Score, Thumb
from storage.rows.repository import Repository
from tests.storage.factories import new_event, new_feedback

_VALUES = st.sampled_from(["a", "b"])
_MAYBE = st.none() | _VALUES
_RATINGS = st.one_of(
    st.integers(1, 5).map(Score),
    st.booleans().map(Thumb),
    st.sampled_from(["good", "bad"]).map(Label),
)
_FEEDBACK = st.lists(
    st.fixed_dictionaries(
        {
            "conversation_id": _VALUES,
            "message_id": _MAYBE,
            "user_id": _MAYBE,
            "model": _MAYBE,
            "rating": _RATINGS,
            "text": st.sampled_from([None, "", "some text"]),
        }
    ),
    min_size=1,
    max_size=12,
)
_FEEDBACK_FILTERS = st.builds(
    FeedbackFilter,
    conversation_id=_MAYBE,
    message_id=_MAYBE,
    user_id=_MAYBE,
    model=_MAYBE,
    min_score=st.none() | st.integers(1, 5),
    max_score=st.none() | st.integers(1, 5),
    rating_kind=st.sampled_from([None, "score", "thumb", "label"]),
    label=st.sampled_from([None, "good", "bad"]),
    has_text=st.sampled_from([None, True, False]),
)
_EVENTS = st.lists(
    st.fixed_dictionaries({"user_id": _VALUES, "event_type": st.sampled_from(["click", "view"])}),
    min_size=1,
    max_size=8,
)
_EVENT_FILTERS = st.builds(
    EventFilter, user_id=_MAYBE, event_type=st.sampled_from([None, "click", "view"])
)
_EVERYTHING = Keyset(None, False, 1000)
_FIXTURE = HealthCheck.function_scoped_fixture
"""Each example starts from an emptied table of the test's one file."""
_DELETE_ALL = text("DELETE FROM feedback")


def _fresh(tmp_path: Path) -> Storage:
    storage = Storage.connect(f"sqlite:///{tmp_path / 'feedback.sqlite3'}")
    storage.migrate()
    storage.write(lambda repository: repository.session.execute(_DELETE_ALL))
    return storage


@settings(
    max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(rows=_FEEDBACK, filters=st.lists(_FEEDBACK_FILTERS, min_size=1, max_size=8))
def test_feedback_predicates_equal_the_list_sql(
    tmp_path: Path, rows: list[dict[str, Any]], filters: list[FeedbackFilter]
) -> None:
    with _fresh(tmp_path) as storage:
        news = [new_feedback(**row) for row in _one_vote_each(rows)]
        storage.write(lambda repository: repository.insert_feedback_entries(news))
        everything = storage.read(lambda r: r.feedback_entries(FeedbackFilter(), _EVERYTHING))
        index: WatcherIndex[int] = WatcherIndex("feedback")
        for number, selection in enumerate(filters):
            index.add(number, match_of("feedback", selection))
        for number, selection in enumerate(filters):
            listed = storage.read(partial(_feedback_page, selection=selection))
            accepts = match_of("feedback", selection).accepts
            assert [e.id for e in everything if accepts(e)] == [e.id for e in listed], selection
            for entry in everything:
                assert (number in set(index.accepting(entry))) == accepts(entry)


@settings(
    max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(rows=_EVENTS, filters=st.lists(_EVENT_FILTERS, min_size=1, max_size=6))
def test_event_predicates_equal_the_list_sql(
    tmp_path: Path, rows: list[dict[str, Any]], filters: list[EventFilter]
) -> None:
    with _fresh(tmp_path) as storage:
        news = [new_event(**row) for row in rows]
        storage.write(lambda repository: repository.insert_events(news))
        everything = storage.read(lambda r: r.event_entries(EventFilter(), _EVERYTHING))
        for selection in filters:
            listed = storage.read(partial(_event_page, selection=selection))
            accepts = match_of("events", selection).accepts
            assert [e.id for e in everything if accepts(e)] == [e.id for e in listed]


def test_a_removed_watcher_is_found_no_more() -> None:
    index: WatcherIndex[str] = WatcherIndex("events")
    match = match_of("events", EventFilter(user_id="a"))
    index.add("w", match)
    index.remove("w", match)
    index.remove("w", match)
    assert index.size == 0
    assert list(index.accepting(new_event(user_id="a"))) == []


def _feedback_page(repository: Repository, selection: FeedbackFilter) -> list[Any]:
    return repository.feedback_entries(selection, _EVERYTHING)


def _event_page(repository: Repository, selection: EventFilter) -> list[Any]:
    return repository.event_entries(selection, _EVERYTHING)


def _one_vote_each(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with at most one current vote per (message, user), as the table requires."""
    seen: set[tuple[Any, Any]] = set()
    kept = []
    for row in rows:
        voter = (row["message_id"], row["user_id"])
        if None not in voter and voter in seen:
            continue
        seen.add(voter)
        kept.append(row)
    return kept
