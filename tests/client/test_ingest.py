"""ingest: one client stream of mixed items, totals and rejections back, no retries."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest

from llmfeedback import (
    EventItem,
    FeedbackClient,
    FeedbackItem,
    IngestResult,
    InteractionItem,
    InvalidArgumentError,
    UnavailableError,
)
from llmfeedback.proto.feedback.v1 import feedback_service_pb2

from .fake_service import Abort, rich_status

if TYPE_CHECKING:
    from collections.abc import Iterator

    from google.protobuf.message import Message
    from google.rpc import status_pb2

    from .fake_service import RecordingServicer


def reject_scores_below_3(item: Message) -> status_pb2.Status | None:
    if isinstance(item, feedback_service_pb2.SubmitFeedbackRequest) and item.score < 3:
        return rich_status(grpc.StatusCode.INVALID_ARGUMENT, "score: too harsh")
    return None


def mixed_items(count: int) -> Iterator[InteractionItem | FeedbackItem | EventItem]:
    for index in range(count):
        yield InteractionItem(f"conv-{index}", message_id=f"msg-{index}")
        yield FeedbackItem(message_id=f"msg-{index}", score=1 + index % 5)
        yield EventItem(f"user-{index}", "click")


def test_ingest_streams_every_item_and_returns_totals_and_rejections(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.verdict = reject_scores_below_3

    result = client.ingest(mixed_items(10))

    assert isinstance(result, IngestResult)
    assert (result.received_count, result.accepted_count, result.rejected_count) == (30, 26, 4)
    # Scores 1 and 2 come from items 0, 1, 5 and 6; each is the second of three on the stream.
    assert [rejection.index for rejection in result.rejections] == [1, 4, 16, 19]
    assert all(isinstance(rejection.error, InvalidArgumentError) for rejection in result.rejections)
    assert not result.rejections_truncated
    kinds = [message.WhichOneof("item") for message in servicer.ingested]
    assert kinds == ["interaction", "feedback", "event"] * 10
    assert servicer.ingested[1].feedback.message_id == "msg-0"


def test_ingest_sends_many_items_per_stream_message(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    result = client.ingest(EventItem(f"user-{n}", "tick") for n in range(1200))

    assert result.received_count == 1200
    assert servicer.ingest_message_sizes == [500, 500, 200]


def test_ingest_says_when_the_server_listed_only_the_first_rejections(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.verdict = lambda _: rich_status(grpc.StatusCode.INVALID_ARGUMENT, "no")

    result = client.ingest(EventItem("alice", "click") for _ in range(1200))

    assert (result.rejected_count, len(result.rejections)) == (1200, 1000)
    assert result.rejections_truncated


def test_a_broken_stream_is_not_retried_and_says_how_many_were_sent(
    client: FeedbackClient, servicer: RecordingServicer, sleeps: list[float]
) -> None:
    servicer.plan("Ingest", Abort(grpc.StatusCode.UNAVAILABLE, "stopped after 2 commits"))

    with pytest.raises(UnavailableError) as raised:
        client.ingest(mixed_items(1))

    assert raised.value.sent_count == 3
    assert "after 3 items were sent" in "".join(raised.value.__notes__)
    assert len(servicer.calls["Ingest"]) == 1
    assert sleeps == []


def test_an_input_that_fails_ends_the_stream_and_raises_with_the_totals(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    def failing_input() -> Iterator[EventItem]:
        yield EventItem("alice", "click")
        yield EventItem("bob", "click")
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone") as raised:
        client.ingest(failing_input())

    assert raised.value.__notes__ == [
        "ingest stopped at item 2; of the 2 items before it the server stored 2 and rejected 0"
    ]
    assert len(servicer.ingested) == 2


def test_something_that_is_not_an_item_stops_the_stream(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    with pytest.raises(TypeError, match="not dict"):
        client.ingest([EventItem("alice", "click"), {"user_id": "bob"}])  # type: ignore[list-item]

    assert len(servicer.ingested) == 1
