"""Percentiles stay within the values stored: one value, or a percentile at an end, is exact.

Histogram bins are 2 % wide and report their midpoint, so without the cells' exact extremes one
latency of 150.5 ms came back as 151.4 at every percentile. Every way a GetStats answer is
made is read here: total, day and model cells, raw rows of partial hours, a conversation's rows,
and cells whose extreme value was removed again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from storage import Storage
from storage.aggregates.histogram import Histogram, bin_value, histogram_bin
from storage.records import Percentiles, StatsQuery
from tests.storage.factories import (
    T0,
    delete_feedback,
    delete_interactions,
    new_feedback,
    new_interaction,
)

if TYPE_CHECKING:
    from storage import Repository
    from storage.records import FeedbackStats, InteractionStats, StatsAnswer

DAY = timedelta(days=1)
MIDNIGHT = T0.replace(hour=0, minute=0, second=0, microsecond=0)

QUERIES = {
    "total": StatsQuery(),
    "days": StatsQuery(start_time=MIDNIGHT - DAY, end_time=MIDNIGHT + 2 * DAY, bucket="day"),
    "partial hour": StatsQuery(
        start_time=T0 - timedelta(minutes=1), end_time=T0 + timedelta(minutes=1)
    ),
    "model": StatsQuery(model="m1"),
    "user": StatsQuery(user_id="u1"),
    "conversation": StatsQuery(conversation_id="conv-1"),
    "grouped by model": StatsQuery(group_by="model"),
}
"""Cells of every level and dimension, and raw rows, each answer made another way."""


def exactly(value: float) -> Percentiles:
    """p50 to p99 all equal to `value`."""
    return Percentiles(p50=value, p90=value, p95=value, p99=value)


def write(storage: Storage, latencies: list[float], tokens: list[int]) -> tuple[list[int], ...]:
    """Feedback and interactions at T0 with these latencies and tokens; their ids."""

    def insert_all(repository: Repository) -> tuple[list[int], list[int]]:
        feedback = repository.insert_feedback_entries(
            [
                new_feedback(
                    model="m1",
                    user_id="u1",
                    message_id=f"msg-{index}",
                    latency_ms=latency,
                    tokens_used=tokens[index],
                )
                for index, latency in enumerate(latencies)
            ]
        )
        interactions = repository.insert_interactions(
            [
                new_interaction(
                    model="m1", user_id="u1", latency_ms=latency, total_tokens=tokens[index]
                )
                for index, latency in enumerate(latencies)
            ]
        )
        return [record.id for record in feedback], [record.id for record in interactions]

    return storage.write(insert_all)


def every_stats(answer: StatsAnswer) -> list[FeedbackStats | InteractionStats]:
    """The feedback and interaction stats of the answer's overall set, buckets and groups."""
    sets = [answer.overall, *(bucket.stats for bucket in answer.buckets)]
    sets += [group.stats for group in answer.groups]
    found: list[FeedbackStats | InteractionStats] = []
    for stats_set in sets:
        if stats_set.feedback is not None and stats_set.feedback.total_count:
            found.append(stats_set.feedback)
        if stats_set.interactions is not None and stats_set.interactions.total_count:
            found.append(stats_set.interactions)
    assert found, "the query read no stored record"
    return found


def latency_and_tokens(stats: FeedbackStats | InteractionStats) -> tuple[Percentiles, Percentiles]:
    """The latency and token percentiles of either kind."""
    if hasattr(stats, "tokens_percentiles"):
        return stats.latency_ms_percentiles, stats.tokens_percentiles
    return stats.latency_ms_percentiles, stats.total_tokens_percentiles


def assert_exact(answer: StatsAnswer, latency: float, tokens: float) -> None:
    """Every percentile of every stats in the answer is exactly `latency` and `tokens`."""
    for stats in every_stats(answer):
        assert latency_and_tokens(stats) == (exactly(latency), exactly(tokens)), stats


def test_the_bin_midpoints_alone_miss_the_values() -> None:
    """The premise: 150.5 and 250 are not their bins' midpoints: only a clamp makes them exact."""
    assert bin_value(histogram_bin(150.5)) != 150.5
    assert bin_value(histogram_bin(250)) != 250


@pytest.mark.parametrize("query", QUERIES.values(), ids=QUERIES.keys())
def test_a_single_value_is_every_percentile_exactly(storage: Storage, query: StatsQuery) -> None:
    write(storage, [150.5], [250])

    answer = storage.read_stats(query)

    assert_exact(answer, 150.5, 250.0)
    assert storage.read_stats(query) == answer  # again, from the caches


@pytest.mark.parametrize("query", QUERIES.values(), ids=QUERIES.keys())
def test_removing_the_greatest_value_brings_p99_back_to_the_next(
    storage: Storage, query: StatsQuery
) -> None:
    """Extremes cannot be subtracted: the removed maximum must not linger as the clamp."""
    feedback_ids, interaction_ids = write(storage, [150.5, 150.5, 200.0], [250, 250, 400])
    storage.read_stats(query)  # cache the cells as they were

    storage.write(lambda repository: delete_feedback(repository, [feedback_ids[2]]))
    storage.write(lambda repository: delete_interactions(repository, [interaction_ids[2]]))

    assert_exact(storage.read_stats(query), 150.5, 250.0)


@pytest.mark.parametrize("query", QUERIES.values(), ids=QUERIES.keys())
def test_removing_the_least_value_brings_p50_up_to_the_next(
    storage: Storage, query: StatsQuery
) -> None:
    feedback_ids, interaction_ids = write(storage, [100.0, 150.5], [20, 250])
    storage.read_stats(query)

    def remove(repository: Repository) -> None:
        # One transaction for both kinds: the removals of a batch are applied together.
        delete_feedback(repository, [feedback_ids[0]])
        delete_interactions(repository, [interaction_ids[0]])

    storage.write(remove)

    assert_exact(storage.read_stats(query), 150.5, 250.0)


def test_removing_a_value_inside_keeps_the_extremes(storage: Storage) -> None:
    feedback_ids, _ = write(storage, [100.0, 120.0, 150.5], [20, 30, 250])

    storage.write(lambda repository: delete_feedback(repository, [feedback_ids[1]]))

    feedback = storage.read_stats(StatsQuery()).overall.feedback
    assert feedback is not None
    assert feedback.latency_ms_percentiles.p99 == 150.5
    assert feedback.tokens_percentiles.p99 == 250.0
    # p50 is the nearest rank 1 of two: the least value, exact at the lower end.
    assert feedback.latency_ms_percentiles.p50 == 100.0
    assert feedback.tokens_percentiles.p50 == 20.0


def test_a_rebuild_keeps_the_extremes(storage: Storage) -> None:
    feedback_ids, _ = write(storage, [150.5, 200.0], [250, 400])
    storage.write(lambda repository: delete_feedback(repository, [feedback_ids[1]]))

    storage.rebuild_rollups()

    feedback = storage.read_stats(StatsQuery(model="m1")).overall.feedback
    assert feedback is not None
    assert feedback.latency_ms_percentiles == exactly(150.5)
    assert feedback.tokens_percentiles == exactly(250.0)


def test_a_histogram_without_known_extremes_reports_bin_midpoints() -> None:
    """Histograms built from bins alone (no extremes) are as before: the clamp needs both."""
    histogram = Histogram.from_bins([(histogram_bin(150.5), 1)])
    assert histogram.percentiles() == (bin_value(histogram_bin(150.5)),) * 4

    clamped = Histogram.from_bins([(histogram_bin(150.5), 1)], 150.5, 150.5)
    assert clamped.percentiles() == (150.5,) * 4
