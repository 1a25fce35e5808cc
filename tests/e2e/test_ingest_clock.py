"""An Ingest stream keeps a synchronized client's times exact and still corrects a skewed clock.

A stream the server drains slowly (here: a rate limit, which holds the stream back through HTTP/2
flow control) leaves the items stamped with sent_time waiting in the client's send buffers; that
wait must not be taken for clock skew.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2

from llmfeedback import FeedbackClient, InteractionItem
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from server.config import Settings
from tests.server_harness import ServerThread

ITEMS = 10_000
RATE = 1_500
"""Items per second the server takes from the stream: past the 2 s burst, 10,000 items take about
5 s, and the last of them wait seconds in the client's buffers. With each item's own sent_time
used instead of the stream's offset, 4,000 of them move (checked by hand); the test needs no more
items than that to see it, only a slow enough drain."""
BASE = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The default server, draining one caller's Ingest stream at RATE items per second."""
    return replace(settings, auth="none", rate_limits=f"ingest={RATE}/s")


def _occur_time(index: int) -> datetime:
    """A distinct time per item, to the microsecond, so any shift of any item shows."""
    return BASE + timedelta(seconds=index, microseconds=index % 1_000_000)


def _items() -> Iterator[InteractionItem]:
    for index in range(ITEMS):
        yield InteractionItem(f"c{index}", message_id=f"m{index}", occur_time=_occur_time(index))


def test_a_slowly_drained_stream_keeps_every_time_exact(
    server: ServerThread, client: FeedbackClient
) -> None:
    result = client.ingest(_items(), timeout=120)

    assert (result.accepted_count, result.rejected_count) == (ITEMS, 0)
    stored = {
        interaction.message_id: interaction.occur_time.ToDatetime(tzinfo=UTC)
        for chunk in client.export_interactions(timeout=120)
        for interaction in chunk.records
    }
    assert len(stored) == ITEMS
    moved = [index for index in range(ITEMS) if stored[f"m{index}"] != _occur_time(index)]
    assert moved == [], f"{len(moved)} occur_times moved, first of them item {moved[0]}"


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def test_a_client_clock_an_hour_ahead_is_corrected_on_the_stream(server: ServerThread) -> None:
    """sent_time says when the client's clock thought it sent each message: an hour late."""
    skew = timedelta(hours=1)
    happened = datetime.now(UTC) - timedelta(minutes=5)  # by the server's clock

    def stream() -> Iterator[pb.IngestRequest]:
        for batch in range(3):
            message = pb.IngestRequest()
            for index in range(100):
                client_now = datetime.now(UTC) + skew
                message.items.add(
                    interaction=pb.RecordInteractionRequest(
                        conversation_id="c1",
                        message_id=f"m{batch}-{index}",
                        occur_time=_timestamp(happened + skew),
                        sent_time=_timestamp(client_now),
                    )
                )
                message.items.add(
                    event=pb.LogEventRequest(
                        user_id="u1",
                        event_type="view",
                        event_id=f"e{batch}-{index}",
                        event_time=_timestamp(happened + skew),
                        sent_time=_timestamp(client_now),
                    )
                )
            yield message

    with grpc.insecure_channel(server.address) as channel:
        response = FeedbackServiceStub(channel).Ingest(stream(), timeout=30)
    assert (response.accepted_count, response.rejected_count) == (600, 0)
    with FeedbackClient(server.address) as client:
        occur_times = [
            interaction.occur_time.ToDatetime(tzinfo=UTC)
            for chunk in client.export_interactions()
            for interaction in chunk.records
        ]
        event_times = [
            event.event_time.ToDatetime(tzinfo=UTC)
            for chunk in client.export_events()
            for event in chunk.records
        ]
    assert len(occur_times) == len(event_times) == 300
    for corrected in occur_times + event_times:
        # Corrected by the hour, give or take the network delay of loopback.
        assert abs(corrected - happened) < timedelta(seconds=1), corrected - happened
