"""feedbackctl stats and FeedbackClient.get_stats: buckets, groups, the previous period."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from llmfeedback import FeedbackClient, GetStatsResponse
from llmfeedback.cli import main
from llmfeedback.proto.feedback.v1 import feedback_service_pb2, stats_pb2

if TYPE_CHECKING:
    from .fake_service import RecordingServicer


def at(text: str) -> Timestamp:
    stamp = Timestamp()
    stamp.FromJsonString(text)
    return stamp


def feedback(count: int, avg_score: float | None = None) -> stats_pb2.FeedbackStats:
    return stats_pb2.FeedbackStats(total_count=count, avg_score=avg_score)


def interactions(count: int) -> stats_pb2.InteractionStats:
    return stats_pb2.InteractionStats(total_count=count, avg_latency_ms=120.5)


ANSWER = GetStatsResponse(
    feedback=stats_pb2.FeedbackStats(total_count=3, thumbs_up_count=1, thumbs_up_ratio=1.0),
    interactions=stats_pb2.InteractionStats(total_count=5),
    buckets=[
        stats_pb2.StatsBucket(
            start_time=at("2025-03-01T00:00:00Z"),
            end_time=at("2025-03-02T00:00:00Z"),
            feedback=feedback(2, 4.5),
            interactions=interactions(4),
        ),
        stats_pb2.StatsBucket(
            start_time=at("2025-03-02T00:00:00Z"),
            end_time=at("2025-03-03T00:00:00Z"),
            feedback=feedback(1),
            interactions=interactions(1),
        ),
    ],
    groups=[
        stats_pb2.StatsGroup(key="gpt-4o", feedback=feedback(2, 5.0), interactions=interactions(3)),
        stats_pb2.StatsGroup(key="", feedback=feedback(1), interactions=interactions(2)),
    ],
    previous=stats_pb2.StatsPeriod(
        start_time=at("2025-02-27T00:00:00Z"),
        end_time=at("2025-03-01T00:00:00Z"),
        feedback=stats_pb2.FeedbackStats(total_count=6, thumbs_up_ratio=0.5),
        interactions=stats_pb2.InteractionStats(total_count=0),
    ),
    change=stats_pb2.StatsChange(feedback_count_ratio=0.5, thumbs_up_ratio_delta=0.5),
)


def test_every_stats_option_reaches_the_request(address: str, servicer: RecordingServicer) -> None:
    exit_code = main(
        [
            "--address",
            address,
            "stats",
            "--model=gpt-4o",
            "--event-type=click",
            "--since=2025-03-01",
            "--until=2025-03-03",
            "--bucket=week",
            "--group-by=event-type",
            "--top=3",
            "--compare-previous",
        ]
    )

    assert exit_code == 0
    (request,) = servicer.requests("GetStats")
    assert request == feedback_service_pb2.GetStatsRequest(
        model="gpt-4o",
        event_type="click",
        start_time=at("2025-03-01T00:00:00Z"),
        end_time=at("2025-03-03T00:00:00Z"),
        bucket=stats_pb2.TIME_BUCKET_WEEK,
        group_by=stats_pb2.STATS_GROUP_BY_EVENT_TYPE,
        top_n=3,
        compare_previous=True,
    )


def test_buckets_groups_and_change_print_as_tables(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer.plan("GetStats", ANSWER)

    assert main(["--address", address, "stats", "--group-by=model"]) == 0

    output = capsys.readouterr().out.splitlines()
    assert "  thumbs          up 1, down 0 (100% up)" in output
    assert "events            n/a (events have no conversation, message or model)" in output
    start = output.index(
        "BUCKET                FEEDBACK  AVG SCORE  INTERACTIONS  AVG LATENCY  EVENTS"
    )
    assert output[start + 1 : start + 3] == [
        "2025-03-01T00:00:00Z  2         4.50       4             120.5 ms     -",
        "2025-03-02T00:00:00Z  1         -          1             120.5 ms     -",
    ]
    start = output.index("GROUP   FEEDBACK  AVG SCORE  INTERACTIONS  AVG LATENCY  EVENTS")
    assert output[start + 1 : start + 3] == [
        "gpt-4o  2         5.00       3             120.5 ms     -",
        "(none)  1         -          2             120.5 ms     -",
    ]
    start = output.index("previous period 2025-02-27T00:00:00Z to 2025-03-01T00:00:00Z")
    assert output[start + 1 : start + 6] == [
        "  feedback        6             x0.5",
        "  avg score       -             -",
        "  thumbs up ratio 0.50          +0.5",
        "  interactions    0             -",
        "  avg latency     -             -",
    ]


@pytest.mark.parametrize(
    "arguments",
    [["--bucket=year"], ["--group-by=label"], ["--top=-1"], ["--top=many"]],
)
def test_bad_stats_options_are_usage_errors(arguments: list[str]) -> None:
    assert main(["stats", *arguments]) == 2


def test_client_get_stats_takes_names_for_enums(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    client.get_stats(
        start_time=datetime(2025, 3, 1, tzinfo=UTC),
        end_time=datetime(2025, 4, 1, tzinfo=UTC),
        bucket="month",
        group_by="user",
        top_n=1000,
    )

    (request,) = servicer.requests("GetStats")
    assert isinstance(request, feedback_service_pb2.GetStatsRequest)
    assert (request.bucket, request.group_by, request.top_n) == (
        stats_pb2.TIME_BUCKET_MONTH,
        stats_pb2.STATS_GROUP_BY_USER,
        1000,
    )


def test_client_get_stats_rejects_unknown_names_before_calling(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    with pytest.raises(ValueError, match="bucket must be one of 'hour', 'day', 'week', 'month'"):
        client.get_stats(bucket="year")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="group_by must be one of"):
        client.get_stats(group_by="unspecified")  # type: ignore[arg-type]
    assert servicer.requests("GetStats") == []
