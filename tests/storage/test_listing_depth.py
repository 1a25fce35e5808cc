"""A page with a time range reads as many rows at any depth, however times fall (id blocks),
and returns exactly what plain SQL does, for every filter, direction and shape of times."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import ColumnElement, Table, select

from storage.records import (
    EventFilter,
    FeedbackFilter,
    InteractionFilter,
    Keyset,
    NewEvent,
    NewFeedback,
    NewInteraction,
    Score,
    Thumb,
)
from storage.rows import id_blocks
from storage.schema.models import EventRow, FeedbackRow, InteractionRow
from tests.storage.factories import T0, delete_events, delete_feedback, delete_interactions

if TYPE_CHECKING:
    from collections.abc import Callable

    from storage import Repository, Storage

# Reads per page at depth


LOADED = 100_000
"""Events loaded within one minute of times, as a bulk import leaves them."""
PAGE = 50


def _load_one_minute(storage: Storage) -> list[datetime]:
    times = [T0 + timedelta(minutes=1) * index / LOADED for index in range(LOADED)]
    for start in range(0, LOADED, 10_000):
        news = [
            NewEvent(user_id="user-1", event_type="view", event_time=time, receive_time=time)
            for time in times[start : start + 10_000]
        ]
        storage.write(partial(_insert_events, news))
    return times


def _insert_events(news: list[NewEvent], repository: Repository) -> None:
    repository.insert_events(news)


def _rows_read(repository: Repository, work: Callable[[], object]) -> int:
    """Rows of the events table the database read while `work` ran, in this transaction.

    PostgreSQL counts them per transaction (pg_stat_xact_user_tables); SQLite does not, so there
    it is the virtual machine's steps (progress handler), proportional to the rows visited.
    """
    connection = repository.session.connection()
    if connection.dialect.name == "sqlite":
        raw = connection.connection.driver_connection
        steps = [0]

        def step() -> int:
            steps[0] += 1
            return 0

        raw.set_progress_handler(step, 10)  # type: ignore[union-attr]
        try:
            work()
        finally:
            raw.set_progress_handler(None, 0)  # type: ignore[union-attr]
        return steps[0] * 10
    counted = (
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
        " FROM pg_stat_xact_user_tables WHERE relname = 'events'"
    )
    before = connection.exec_driver_sql(counted).scalar_one()
    work()
    return int(connection.exec_driver_sql(counted).scalar_one()) - int(before)


def _read_page(selection: EventFilter, pages: list[Any], repository: Repository) -> int:
    """Read one page into `pages`; the rows that cost."""
    return _rows_read(
        repository, lambda: pages.append(repository.event_entries(selection, Keyset(limit=PAGE)))
    )


def test_a_page_by_end_time_reads_as_much_at_any_depth(storage: Storage) -> None:
    times = _load_one_minute(storage)
    reads = {}
    for depth in (0.1, 0.5, 0.9):
        end = times[round(LOADED * (1 - depth))]
        selection = EventFilter(end_time=end)
        pages: list[Any] = []
        reads[depth] = storage.read(partial(_read_page, selection, pages))
        expected = [index + 1 for index, time in enumerate(times) if time < end][::-1][:PAGE]
        assert [entry.id for entry in pages[0]] == expected, depth
    # Plain SQL reads all the newer rows first: 10 % back costs a ninth of 90 % back.
    assert max(reads.values()) < 2 * min(reads.values()), reads
    # And at most the blocks straddling the bound beyond the page, whatever the depth.
    if "sqlite" not in storage.url:
        assert max(reads.values()) <= PAGE + 2 * id_blocks.BLOCK_IDS, reads


# Exactness against plain SQL


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 4 ids, so a few dozen rows span many blocks."""
    monkeypatch.setattr(id_blocks, "BLOCK_IDS", 4)


_USERS = st.sampled_from([None, "u1", "u2"])
_TIME_SHAPES = st.sampled_from(["monotonic", "random", "monotonic with backfills", "one time"])


def _times(shape: str, count: int, rng: random.Random) -> list[datetime]:
    def moment() -> datetime:
        return T0 + timedelta(seconds=rng.randrange(600))

    if shape == "random":
        return [moment() for _ in range(count)]
    if shape == "one time":
        return [T0] * count
    times = sorted(moment() for _ in range(count))
    if shape == "monotonic with backfills":
        for index in rng.sample(range(count), count // 5):
            times[index] = T0 - timedelta(seconds=rng.randrange(600))
    return times


_KINDS: dict[str, Table] = {
    "events": EventRow.__table__,  # type: ignore[dict-item]
    "feedback": FeedbackRow.__table__,  # type: ignore[dict-item]
    "interactions": InteractionRow.__table__,  # type: ignore[dict-item]
}


def _store(repository: Repository, kind: str, times: list[datetime], rng: random.Random) -> None:
    users = ["u1", "u2"]
    if kind == "events":
        repository.insert_events(
            [
                NewEvent(
                    user_id=rng.choice(users),
                    event_type=rng.choice(["view", "click"]),
                    event_time=time,
                    receive_time=time,
                )
                for time in times
            ]
        )
    elif kind == "feedback":
        repository.insert_feedback_entries(
            [
                NewFeedback(
                    conversation_id="c",
                    user_id=rng.choice([*users, None]),
                    model=rng.choice(["m1", None]),
                    rating=Score(rng.randint(1, 5)) if rng.random() < 0.5 else Thumb(up=True),
                    create_time=time,
                )
                for time in times
            ]
        )
    else:
        repository.insert_interactions(
            [
                NewInteraction(
                    conversation_id="c",
                    user_id=rng.choice(users),
                    model=rng.choice(["m1", "m2"]),
                    occur_time=time,
                    create_time=time,
                )
                for time in times
            ]
        )


class _Query(NamedTuple):
    """One page asked of one kind: equality filters, time range, keyset."""

    kind: str
    equal: dict[str, Any]
    window: tuple[datetime | None, datetime | None]
    keyset: Keyset


def _page_ids(repository: Repository, query: _Query) -> list[int]:
    kind, equal, window, keyset = query
    start, end = window
    if kind == "events":
        events = EventFilter(start_time=start, end_time=end, **equal)
        entries: list[Any] = repository.event_entries(events, keyset)
    elif kind == "feedback":
        feedback = FeedbackFilter(start_time=start, end_time=end, **equal)
        entries = repository.feedback_entries(feedback, keyset)
    else:
        interactions = InteractionFilter(start_time=start, end_time=end, **equal)
        entries = repository.interaction_entries(interactions, keyset)
    return [entry.id for entry in entries]


def _plain_sql(repository: Repository, query: _Query) -> list[int]:
    kind, equal, window, keyset = query
    table = _KINDS[kind]
    time = table.c[id_blocks.TIME_COLUMNS[kind]]
    where: list[ColumnElement[bool]] = [table.c[name] == value for name, value in equal.items()]
    start, end = window
    if start is not None:
        where.append(time >= start)
    if end is not None:
        where.append(time < end)
    if keyset.cursor is not None:
        where.append(
            table.c.id < keyset.cursor if keyset.newest_first else table.c.id > keyset.cursor
        )
    order = table.c.id.desc() if keyset.newest_first else table.c.id.asc()
    statement = select(table.c.id).where(*where).order_by(order).limit(keyset.limit)
    return list(repository.session.execute(statement).scalars())


def _both(query: _Query, repository: Repository) -> tuple[list[int], list[int]]:
    """The page, and what plain SQL returns for it, in one snapshot."""
    return _page_ids(repository, query), _plain_sql(repository, query)


_FILTERS = {"events": ("user_id", "event_type"), "feedback": ("user_id", "model")}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    kind=st.sampled_from(sorted(_KINDS)),
    shape=_TIME_SHAPES,
    count=st.integers(0, 60),
    seed=st.integers(0, 2**32),
    data=st.data(),
)
def test_pages_equal_plain_sql(
    storage: Storage,
    small_blocks: None,
    kind: str,
    shape: str,
    count: int,
    seed: int,
    data: st.DataObject,
) -> None:
    rng = random.Random(seed)
    times = _times(shape, count, rng)
    storage.write(lambda repository: _store(repository, kind, times, rng))
    offsets = st.none() | st.integers(-700, 700).map(
        lambda seconds: T0 + timedelta(seconds=seconds)
    )
    values = {"user_id": _USERS, "event_type": st.sampled_from([None, "view"])}
    values["model"] = st.sampled_from([None, "m1"])
    try:
        for _ in range(8):
            equal = {
                name: value
                for name in _FILTERS.get(kind, ("user_id", "model"))
                if (value := data.draw(values[name])) is not None
            }
            window = (data.draw(offsets), data.draw(offsets))
            newest_first = data.draw(st.booleans())
            cursor = data.draw(st.none() | st.integers(0, 200))
            keyset = Keyset(cursor, newest_first, limit=data.draw(st.integers(1, 12)))

            query = _Query(kind, equal, window, keyset)
            got, expected = storage.read(partial(_both, query))
            assert got == expected, query
    finally:
        storage.write(lambda repository: _empty(repository, kind))


def _empty(repository: Repository, kind: str) -> None:
    """Delete every row of `kind` (ids are not reused, so the next example's blocks are new)."""
    ids = list(repository.session.execute(select(_KINDS[kind].c.id)).scalars())
    {"events": delete_events, "feedback": delete_feedback, "interactions": delete_interactions}[
        kind
    ](repository, ids)
