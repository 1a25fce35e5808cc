"""GetStatsResponse mapping: buckets from their cached wire form equal buckets built in full."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from llmfeedback.proto.feedback.v1 import feedback_service_pb2, stats_pb2
from server.mapping import StatsResponses, timestamp
from server.service import Stats
from storage.records import (
    EventStats,
    FeedbackStats,
    InteractionStats,
    Percentiles,
    StatsBucket,
    StatsSet,
)

DAY0 = datetime(2025, 3, 1, tzinfo=UTC)


def bucket(day: int, feedback: FeedbackStats, events: EventStats | None) -> StatsBucket:
    start = DAY0 + timedelta(days=day)
    return StatsBucket(
        start, start + timedelta(days=1), StatsSet(feedback, InteractionStats(), events)
    )


def test_buckets_are_the_same_whether_built_or_taken_from_the_cache() -> None:
    rated = FeedbackStats(
        total_count=2,
        scored_count=1,
        avg_score=4.0,
        thumbs_up_count=1,
        label_counts={"good": 1},
        latency_ms_percentiles=Percentiles(p50=10.0, p90=20.0, p95=20.0, p99=20.0),
    )
    buckets = [bucket(0, rated, EventStats(total_count=1, type_counts={"click": 1}))]
    buckets += [bucket(1, FeedbackStats(), None), bucket(2, rated, None)]
    stats = Stats(feedback=rated, interactions=None, events=None, buckets=buckets)

    responses = StatsResponses()
    first = responses.response(stats)
    again = responses.response(stats)

    expected = feedback_service_pb2.GetStatsResponse(feedback=first.feedback)
    for day, (feedback, events) in enumerate(
        [(first.feedback, stats_pb2.EventStats(total_count=1, type_counts={"click": 1})),
         (stats_pb2.FeedbackStats(), None),
         (first.feedback, None)]
    ):  # fmt: skip
        added = expected.buckets.add(
            start_time=timestamp(DAY0 + timedelta(days=day)),
            end_time=timestamp(DAY0 + timedelta(days=day + 1)),
            feedback=feedback,
            interactions=stats_pb2.InteractionStats(),
        )
        if events is not None:
            added.events.CopyFrom(events)
    assert first == expected
    assert again == expected
    assert not first.HasField("interactions")
    assert first.buckets[0].feedback.thumbs_up_ratio == 1.0
    assert not first.buckets[1].feedback.HasField("latency_ms_percentiles")


def test_a_bucket_with_new_contents_is_not_served_from_the_cache() -> None:
    before = Stats(None, None, None, buckets=[bucket(0, FeedbackStats(total_count=1), None)])
    after = Stats(None, None, None, buckets=[bucket(0, FeedbackStats(total_count=2), None)])

    responses = StatsResponses()
    assert responses.response(before).buckets[0].feedback.total_count == 1
    assert responses.response(after).buckets[0].feedback.total_count == 2


def test_the_same_answer_objects_share_one_response_and_new_ones_get_their_own() -> None:
    buckets = [bucket(0, FeedbackStats(total_count=1), None)]
    overall = FeedbackStats(total_count=1)
    stats = Stats(overall, None, None, buckets=buckets)

    responses = StatsResponses()
    first = responses.response(stats)

    assert responses.response(Stats(overall, None, None, buckets=buckets)) is first
    # Equal contents in new objects, another overall, other buckets: each built afresh.
    assert responses.response(Stats(overall, None, None, buckets=list(buckets))) is not first
    recounted = responses.response(Stats(FeedbackStats(total_count=3), None, None, buckets=buckets))
    assert recounted.feedback.total_count == 3
    assert recounted.buckets[0].feedback.total_count == 1
