"""Cached GetStats answers: served again while their cells are unchanged, never after a write."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from storage import Storage
from storage.aggregates.cache import CachedAnswer, CellCache
from storage.records import Score, StatsQuery
from tests.storage.factories import T0, delete_feedback, new_event, new_feedback, new_interaction

if TYPE_CHECKING:
    from storage import Repository
    from storage.records import StatsAnswer

DAY = timedelta(days=1)
MIDNIGHT = T0.replace(hour=0, minute=0, second=0, microsecond=0)
DAILY = StatsQuery(start_time=MIDNIGHT - 3 * DAY, end_time=MIDNIGHT + 4 * DAY, bucket="day")
"""A week of whole days around T0: read from day cells alone, so its answer is cached."""


def write_feedback(storage: Storage, score: int, moment_offset: timedelta = timedelta()) -> int:
    """Store one feedback entry at T0 plus `moment_offset`; its id."""

    def insert(repository: Repository) -> int:
        records = repository.insert_feedback_entries(
            [new_feedback(rating=Score(score), create_time=T0 + moment_offset, latency_ms=5.0)]
        )
        return records[0].id

    return storage.write(insert)


def fresh_read(database_url: str, query: StatsQuery) -> StatsAnswer:
    """The answer of another Storage, with caches of its own: the reference."""
    with Storage.connect(database_url) as other:
        return other.read_stats(query)


def feedback_count(answer: StatsAnswer) -> int:
    assert answer.overall.feedback is not None
    return answer.overall.feedback.total_count


def test_an_unchanged_answer_is_served_again_as_the_same_object(storage: Storage) -> None:
    write_feedback(storage, 4)
    first = storage.read_stats(DAILY)
    assert storage.read_stats(DAILY) is first
    assert feedback_count(first) == 1


def test_a_write_between_two_identical_queries_changes_the_answer(
    storage: Storage, database_url: str
) -> None:
    write_feedback(storage, 4)
    first = storage.read_stats(DAILY)
    write_feedback(storage, 2, timedelta(days=1))

    second = storage.read_stats(DAILY)

    assert second is not first
    assert feedback_count(second) == 2
    assert second == fresh_read(database_url, DAILY)
    day = next(bucket for bucket in second.buckets if bucket.start_time == MIDNIGHT + DAY)
    assert day.stats.feedback is not None
    assert day.stats.feedback.score_counts[2] == 1


def test_a_write_to_the_same_key_outside_the_range_keeps_the_answer(
    storage: Storage, database_url: str
) -> None:
    # The key's total cell changes, the cells of the range do not: the answer stands, and the
    # next write inside the range is still seen.
    write_feedback(storage, 4)
    first = storage.read_stats(DAILY)
    write_feedback(storage, 1, timedelta(days=30))
    assert storage.read_stats(DAILY) is first
    assert storage.read_stats(DAILY) is first
    write_feedback(storage, 2)

    second = storage.read_stats(DAILY)

    assert (feedback_count(first), feedback_count(second)) == (1, 2)
    assert second == fresh_read(database_url, DAILY)


def test_a_write_to_another_kind_changes_only_that_kind(
    storage: Storage, database_url: str
) -> None:
    write_feedback(storage, 4)
    first = storage.read_stats(DAILY)
    storage.write(lambda repository: repository.insert_events([new_event()]))
    storage.write(lambda repository: repository.insert_interactions([new_interaction()]))

    second = storage.read_stats(DAILY)

    assert second.overall.feedback is first.overall.feedback
    assert second.overall.events is not None
    assert second.overall.events.total_count == 1
    assert second.overall.interactions is not None
    assert second.overall.interactions.total_count == 1
    assert second == fresh_read(database_url, DAILY)


def test_a_delete_changes_the_answer(storage: Storage, database_url: str) -> None:
    removed = write_feedback(storage, 4)
    write_feedback(storage, 5)
    first = storage.read_stats(DAILY)
    storage.write(lambda repository: delete_feedback(repository, {removed}))

    second = storage.read_stats(DAILY)

    assert feedback_count(first) == 2
    assert feedback_count(second) == 1
    assert second == fresh_read(database_url, DAILY)


def test_answers_with_raw_edges_are_recomputed(storage: Storage) -> None:
    # An unaligned end reads the raw rows of a partial hour: nothing about it is cached.
    query = StatsQuery(start_time=MIDNIGHT - DAY, end_time=T0 + timedelta(minutes=1), bucket="day")
    write_feedback(storage, 4)
    first = storage.read_stats(query)
    write_feedback(storage, 1)
    second = storage.read_stats(query)
    assert (feedback_count(first), feedback_count(second)) == (1, 2)


def test_a_write_beyond_the_span_of_an_open_range_changes_the_answer(
    storage: Storage, database_url: str
) -> None:
    # An open end is planned up to the span of the records: a write past it adds cells the
    # cached answer never read; the span's change must reveal them.
    query = StatsQuery(start_time=MIDNIGHT - 3 * DAY)
    write_feedback(storage, 4)
    first = storage.read_stats(query)
    assert storage.read_stats(query) is first
    write_feedback(storage, 2, timedelta(days=70))

    second = storage.read_stats(query)

    assert (feedback_count(first), feedback_count(second)) == (1, 2)
    assert second == fresh_read(database_url, query)


def test_a_users_answer_follows_writes_in_new_months(storage: Storage, database_url: str) -> None:
    # A user's cells are months, planned within the span of all records.
    query = StatsQuery(user_id="u1")

    def write(user: str, offset: timedelta) -> None:
        storage.write(
            lambda repository: repository.insert_feedback_entries(
                [new_feedback(user_id=user, create_time=T0 + offset)]
            )
        )

    write("u1", timedelta())
    first = storage.read_stats(query)
    assert storage.read_stats(query) is first
    write("u2", timedelta(days=-100))
    assert storage.read_stats(query) == first
    write("u1", timedelta(days=-70))

    second = storage.read_stats(query)

    assert (feedback_count(first), feedback_count(second)) == (1, 2)
    assert second == fresh_read(database_url, query)


def test_the_cache_keeps_to_its_budget(storage: Storage) -> None:
    write_feedback(storage, 4)
    answer = storage.read_stats(DAILY)
    cache = CellCache(max_answer_weight=50)
    # A week is 8 intervals (the whole range and 7 days) of 3 kinds: 25 with the range itself.
    weight = 25
    queries = [
        StatsQuery(start_time=MIDNIGHT - days * DAY, end_time=MIDNIGHT + DAY, bucket="day")
        for days in range(3)
    ]
    for query in queries:
        cache.put_answer(query, CachedAnswer({}, {}, answer, weight))
    assert cache.answer(queries[0]) is None
    assert cache.answer(queries[1]) is not None
    assert cache.answer(queries[2]) is not None
