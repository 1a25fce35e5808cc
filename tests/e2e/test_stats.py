"""GetStats through the real client and server: buckets, groups, the previous period, errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from llmfeedback import FeedbackClient, InvalidArgumentError
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from tests.server_harness import ServerThread

DAY = timedelta(days=1)


@pytest.fixture
def day0() -> datetime:
    """Midnight UTC ten days ago: recorded times must not be in the future."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - 10 * DAY


@pytest.fixture
def recorded(client: FeedbackClient, day0: datetime) -> None:
    """Interactions and events on days 0, 1 and 3 (none on day 2), two models, two users."""
    for day, model, user, latency, count in [
        (0, "gpt-4o", "alice", 100.0, 3),
        (1, "gpt-4o", "bob", 200.0, 2),
        (1, "llama-3", "alice", 400.0, 1),
        (3, "llama-3", "bob", 800.0, 2),
    ]:
        for index in range(count):
            client.record_interaction(
                f"conv-{day}-{model}",
                user_id=user,
                model=model,
                latency_ms=latency + index,
                prompt_tokens=10,
                completion_tokens=5 * (index + 1),
                occur_time=day0 + day * DAY + timedelta(hours=2 + index),
            )
            client.log_event(user, "page_view", event_time=day0 + day * DAY + timedelta(hours=3))
    client.log_event("carol", "click", event_time=day0 + timedelta(minutes=30))


@pytest.mark.usefixtures("recorded")
def test_daily_buckets_include_empty_days_and_clip_to_the_range(
    client: FeedbackClient, day0: datetime
) -> None:
    stats = client.get_stats(
        start_time=day0 + timedelta(hours=3),
        end_time=day0 + 3 * DAY + timedelta(hours=3),
        bucket="day",
    )

    assert [(b.start_time.ToDatetime(UTC), b.end_time.ToDatetime(UTC)) for b in stats.buckets] == [
        (day0 + day * DAY, day0 + (day + 1) * DAY) for day in range(4)
    ]
    # Day 0 keeps the interactions at 03:00 and 04:00, day 3 the one at 02:00; carol's click at
    # 00:30 on day 0 is before the range.
    assert [b.interactions.total_count for b in stats.buckets] == [2, 3, 0, 1]
    assert [b.events.total_count for b in stats.buckets] == [3, 3, 0, 0]
    assert stats.interactions.total_count == 6
    empty = stats.buckets[2]
    assert empty.HasField("feedback")
    assert not empty.interactions.HasField("avg_latency_ms")
    assert not empty.interactions.HasField("latency_ms_percentiles")


@pytest.mark.usefixtures("recorded")
def test_percentiles_are_within_one_percent_of_the_exact_values(client: FeedbackClient) -> None:
    stats = client.get_stats(model="gpt-4o")

    # Latencies 100, 101, 102, 200, 201: nearest ranks 3, 5, 5, 5.
    percentiles = stats.interactions.latency_ms_percentiles
    for got, exact in zip(
        (percentiles.p50, percentiles.p90, percentiles.p95, percentiles.p99),
        (102, 201, 201, 201),
        strict=True,
    ):
        assert abs(got - exact) <= 0.01 * exact
    assert stats.interactions.avg_latency_ms == pytest.approx(704 / 5)
    assert not stats.HasField("events")


def test_one_value_is_every_percentile_exactly(client: FeedbackClient) -> None:
    """Bins alone answered 151.4 for one latency of 150.5 and 248.4 for 250 tokens."""
    client.record_interaction("conv-1", model="solo", latency_ms=150.5, total_tokens=250)
    client.submit_feedback("conv-1", model="solo", score=4, latency_ms=150.5, tokens_used=250)

    for stats in (client.get_stats(model="solo"), client.get_stats()):
        for percentiles, value in (
            (stats.interactions.latency_ms_percentiles, 150.5),
            (stats.interactions.total_tokens_percentiles, 250),
            (stats.feedback.latency_ms_percentiles, 150.5),
            (stats.feedback.tokens_percentiles, 250),
        ):
            assert (percentiles.p50, percentiles.p90, percentiles.p95, percentiles.p99) == (
                value,
            ) * 4


@pytest.mark.usefixtures("recorded")
def test_groups_rank_by_records_across_kinds_then_by_key(client: FeedbackClient) -> None:
    by_user = client.get_stats(group_by="user", top_n=2)
    by_model = client.get_stats(group_by="model")

    # alice: 4 interactions + 4 events; bob: 4 + 4; carol: 1 event. Ties go by key.
    assert [(g.key, g.interactions.total_count, g.events.total_count) for g in by_user.groups] == [
        ("alice", 4, 4),
        ("bob", 4, 4),
    ]
    assert [(g.key, g.interactions.total_count) for g in by_model.groups] == [
        ("gpt-4o", 5),
        ("llama-3", 3),
    ]
    assert not by_model.groups[0].HasField("events")


@pytest.mark.usefixtures("recorded")
def test_event_type_groups_and_filters(client: FeedbackClient) -> None:
    stats = client.get_stats(group_by="event_type", user_id="carol")
    typed = client.get_stats(event_type="page_view")

    assert [(g.key, g.events.total_count) for g in stats.groups] == [("click", 1)]
    assert not stats.groups[0].HasField("feedback")
    assert typed.events.total_count == 8
    assert not typed.HasField("feedback")
    assert not typed.HasField("interactions")


@pytest.mark.usefixtures("recorded")
def test_compare_previous_reports_the_period_before_and_the_change(
    client: FeedbackClient, day0: datetime
) -> None:
    stats = client.get_stats(start_time=day0 + DAY, end_time=day0 + 2 * DAY, compare_previous=True)

    assert stats.previous.start_time.ToDatetime(UTC) == day0
    assert stats.previous.end_time.ToDatetime(UTC) == day0 + DAY
    assert (stats.interactions.total_count, stats.previous.interactions.total_count) == (3, 3)
    assert stats.change.interaction_count_ratio == 1.0
    assert stats.change.avg_latency_ms_delta == pytest.approx((200 + 201 + 400) / 3 - 101)
    assert stats.change.event_count_ratio == 3 / 4
    # No feedback in either period: the ratio is unset, not NaN.
    assert not stats.change.HasField("feedback_count_ratio")


def test_feedback_stats_carry_the_thumbs_up_ratio_and_labels(client: FeedbackClient) -> None:
    client.record_interaction("conv-1", message_id="m-1", model="gpt-4o", latency_ms=50)
    client.submit_feedback(message_id="m-1", thumb=True)
    client.submit_feedback(message_id="m-1", thumb=False)
    client.submit_feedback("conv-1", thumb=True, text="nice")
    client.submit_feedback("conv-1", label="good")

    stats = client.get_stats(model="gpt-4o", group_by="conversation")

    assert stats.feedback.total_count == 4
    assert stats.feedback.thumbs_up_ratio == pytest.approx(2 / 3)
    assert dict(stats.feedback.label_counts) == {"good": 1}
    assert stats.feedback.latency_ms_percentiles.p50 == pytest.approx(50, rel=0.01)
    assert [(g.key, g.feedback.total_count, g.interactions.total_count) for g in stats.groups] == [
        ("conv-1", 4, 1)
    ]


@pytest.fixture
def stub(server: ServerThread) -> Iterator[FeedbackServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield FeedbackServiceStub(channel)


def _violations(error: grpc.RpcError) -> dict[str, str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    return {v.field: v.description for v in bad_request.field_violations}


def _stamp(moment: datetime) -> dict[str, int]:
    return {"seconds": int(moment.timestamp())}


@pytest.mark.parametrize(
    ("request_fields", "fields"),
    [
        pytest.param({"bucket": 2}, {"bucket"}, id="bucket-without-times"),
        pytest.param(
            {
                "bucket": 1,
                "start_time": _stamp(datetime(2020, 1, 1, tzinfo=UTC)),
                "end_time": _stamp(datetime(2020, 3, 1, tzinfo=UTC)),
            },
            {"bucket"},
            id="more-than-1000-hours",
        ),
        pytest.param({"bucket": 99}, {"bucket"}, id="unknown-bucket"),
        pytest.param({"group_by": 42}, {"group_by"}, id="unknown-group"),
        pytest.param({"top_n": -1}, {"top_n"}, id="negative-top-n"),
        pytest.param({"compare_previous": True}, {"compare_previous"}, id="previous-without-times"),
        pytest.param(
            {
                "start_time": _stamp(datetime(2021, 1, 2, tzinfo=UTC)),
                "end_time": _stamp(datetime(2021, 1, 1, tzinfo=UTC)),
                "bucket": 2,
            },
            {"end_time", "bucket"},
            id="reversed-range",
        ),
        pytest.param(
            {
                "conversation_id": "bad id!",
                "user_id": "x" * 129,
                "message_id": "a b",
                "event_type": "e" * 65,
                "model": "m" * 129,
            },
            {"conversation_id", "user_id", "message_id", "event_type", "model"},
            id="bad-filters",
        ),
    ],
)
def test_invalid_requests_name_every_bad_field(
    stub: FeedbackServiceStub, request_fields: dict[str, object], fields: set[str]
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetStats(pb.GetStatsRequest(**request_fields), timeout=10)  # type: ignore[arg-type]

    assert set(_violations(raised.value)) == fields


def test_1000_buckets_are_allowed_and_top_n_is_capped(client: FeedbackClient) -> None:
    start = datetime(2020, 1, 1, tzinfo=UTC)

    stats = client.get_stats(
        start_time=start,
        end_time=start + timedelta(hours=1000),
        bucket="hour",
        top_n=5000,
        group_by="user",
    )

    assert len(stats.buckets) == 1000
    assert stats.groups == []
    with pytest.raises(InvalidArgumentError):
        client.get_stats(
            start_time=start, end_time=start + timedelta(hours=1000, seconds=1), bucket="hour"
        )


def test_a_write_between_two_identical_requests_changes_the_answer(
    client: FeedbackClient, day0: datetime
) -> None:
    # Whole days up to tomorrow: an answer read from cells alone, which the server caches.
    def read() -> pb.GetStatsResponse:
        return client.get_stats(start_time=day0, end_time=day0 + 11 * DAY, bucket="day")

    client.record_interaction("conv-1", latency_ms=50)
    client.submit_feedback("conv-1", score=4)
    first = read()
    assert read() == first
    client.submit_feedback("conv-1", score=2)
    client.log_event("alice", "click")

    second = read()

    assert (first.feedback.total_count, second.feedback.total_count) == (1, 2)
    assert (first.events.total_count, second.events.total_count) == (0, 1)
    assert sum(bucket.feedback.total_count for bucket in second.buckets) == 2
    assert (first.feedback.score2_count, second.feedback.score2_count) == (0, 1)
