"""Pages with a time range stay exact however times and ids relate (id blocks), and writes keep
the rollups' id bounds."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest

from storage.records import EventFilter, FeedbackFilter, InteractionFilter, Keyset
from storage.rows import id_blocks
from tests.storage.factories import (
    T0,
    delete_events,
    delete_feedback,
    delete_interactions,
    insert_feedback,
    insert_interaction,
    new_event,
    new_feedback,
    new_interaction,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from storage import Storage

DAYS = 75
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
"""Times spread over this many days from T0: ranges span hours, days and whole months."""


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 8 ids, so the few hundred rows of a test span dozens of blocks."""
    monkeypatch.setattr(id_blocks, "BLOCK_IDS", 8)


def _random_time(rng: random.Random) -> datetime:
    return T0 + timedelta(seconds=rng.randrange(DAYS * 86_400), microseconds=rng.randrange(10**6))


def _insert_feedback(time: datetime, repository: Any) -> Any:
    return insert_feedback(repository, new_feedback(create_time=time))


def _insert_interaction(time: datetime, repository: Any) -> Any:
    return insert_interaction(repository, new_interaction(occur_time=time, create_time=time))


class _Kind:
    """One listable kind: how to insert, delete and page it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def insert(self, storage: Storage, times: Sequence[datetime]) -> list[int]:
        if self.name == "events":
            news = [new_event(event_time=time) for time in times]
            records: list[Any] = storage.write(lambda r: r.insert_events(news))
        elif self.name == "feedback":
            records = [storage.write(partial(_insert_feedback, time)) for time in times]
        else:
            records = [storage.write(partial(_insert_interaction, time)) for time in times]
        return [record.id for record in records]

    def delete(self, storage: Storage, ids: Sequence[int]) -> None:
        delete: Callable[[Any], Any] = {
            "events": lambda r: delete_events(r, ids),
            "feedback": lambda r: delete_feedback(r, ids),
            "interactions": lambda r: delete_interactions(r, ids),
        }[self.name]
        storage.write(delete)

    def page(
        self, storage: Storage, start: datetime | None, end: datetime | None, keyset: Keyset
    ) -> list[int]:
        if self.name == "events":
            events = EventFilter(start_time=start, end_time=end)
            entries: list[Any] = storage.read(lambda r: r.event_entries(events, keyset))
        elif self.name == "feedback":
            feedback = FeedbackFilter(start_time=start, end_time=end)
            entries = storage.read(lambda r: r.feedback_entries(feedback, keyset))
        else:
            interactions = InteractionFilter(start_time=start, end_time=end)
            entries = storage.read(lambda r: r.interaction_entries(interactions, keyset))
        return [entry.id for entry in entries]


KINDS = [_Kind("events"), _Kind("feedback"), _Kind("interactions")]


def _all_pages(
    kind: _Kind,
    storage: Storage,
    start: datetime | None,
    end: datetime | None,
    newest_first: bool,
    *,
    between_pages: Callable[[], None] | None = None,
) -> list[int]:
    ids: list[int] = []
    cursor = None
    while True:
        page = kind.page(storage, start, end, Keyset(cursor, newest_first, limit=9))
        ids.extend(page)
        if len(page) < 9:
            return ids
        cursor = page[-1]
        if between_pages is not None:
            between_pages()


def _expected(
    rows: dict[int, datetime], start: datetime | None, end: datetime | None, newest_first: bool
) -> list[int]:
    return sorted(
        (
            row_id
            for row_id, time in rows.items()
            if (start is None or time >= start) and (end is None or time < end)
        ),
        reverse=newest_first,
    )


def _ranges(rng: random.Random) -> list[tuple[datetime | None, datetime | None]]:
    ranges: list[tuple[datetime | None, datetime | None]] = [
        (None, None),
        (T0 + timedelta(days=3), None),
        (None, T0 + timedelta(days=40, minutes=7)),
        (T0 + timedelta(days=2), T0 + timedelta(days=2, hours=1)),  # one hour
        (T0 + timedelta(days=5, minutes=13), T0 + timedelta(days=6, hours=2)),  # a day, ragged
        (T0 - timedelta(days=3), T0 + timedelta(days=DAYS + 3)),  # beyond every record
        (T0 + timedelta(days=DAYS + 10), T0 + timedelta(days=DAYS + 11)),  # no records
        (EARLIEST, T0 + timedelta(days=9)),  # the protobuf Timestamp's extremes
        (T0 + timedelta(days=9), LATEST),
    ]
    for _ in range(5):
        first, second = sorted((_random_time(rng), _random_time(rng)))
        ranges.append((first, second))
    return ranges


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_pages_are_exact_when_times_and_ids_disagree(storage: Storage, kind: _Kind) -> None:
    rng = random.Random(5)
    # Rows in time order (ids follow times), then imports with random, mostly older, times,
    # then more rows in order: each hour's ids may span most of the table.
    ordered = sorted(_random_time(rng) for _ in range(120))
    scattered = [_random_time(rng) for _ in range(60)]
    later = sorted(_random_time(rng) for _ in range(40))
    times = [*ordered[:80], *scattered, *ordered[80:], *later]
    rows = dict(zip(kind.insert(storage, times), times, strict=True))
    # Deletes leave the bounds loose; a whole hour emptied drops its cells.
    removed = rng.sample(sorted(rows), 50)
    kind.delete(storage, removed)
    for row_id in removed:
        del rows[row_id]

    for start, end in _ranges(rng):
        for newest_first in (True, False):
            got = _all_pages(kind, storage, start, end, newest_first)
            assert got == _expected(rows, start, end, newest_first), (start, end, newest_first)


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_rows_stored_while_paging_are_found_in_order(storage: Storage, kind: _Kind) -> None:
    rng = random.Random(6)
    times = [_random_time(rng) for _ in range(80)]
    rows = dict(zip(kind.insert(storage, times), times, strict=True))
    start, end = T0 + timedelta(days=10, minutes=30), T0 + timedelta(days=50)

    def store_more() -> None:
        # Backdated and forward times inside and outside the range, at new (higher) ids.
        more = [
            start + (end - start) * rng.random(),
            start - timedelta(days=1),
            end + timedelta(hours=5),
        ]
        rows.update(zip(kind.insert(storage, more), more, strict=True))

    before = dict(rows)
    newest = _all_pages(kind, storage, start, end, True, between_pages=store_more)
    # Newest first, later rows lie behind the first page's start: exactly the rows of then.
    assert newest == _expected(before, start, end, newest_first=True)

    oldest = _all_pages(kind, storage, start, end, False, between_pages=store_more)
    # Oldest first, every row stored meanwhile lies ahead of the cursor: all of them show.
    assert oldest == _expected(rows, start, end, newest_first=False)
