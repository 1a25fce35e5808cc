"""Channel ownership, call metadata and timeouts of FeedbackClient."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest

from llmfeedback import FeedbackClient, RetryPolicy
from llmfeedback.proto.feedback.v1 import feedback_service_pb2, feedback_service_pb2_grpc

if TYPE_CHECKING:
    from .fake_service import RecordingServicer


def raw_get_stats(channel: grpc.Channel) -> feedback_service_pb2.GetStatsResponse:
    stub = feedback_service_pb2_grpc.FeedbackServiceStub(channel)
    return stub.GetStats(feedback_service_pb2.GetStatsRequest(), timeout=5)


def test_context_manager_closes_the_channel_it_opened(address: str) -> None:
    with FeedbackClient(address) as client:
        client.get_stats()
        channel = client._channel

    with pytest.raises(ValueError, match="closed channel"):
        raw_get_stats(channel)
    with pytest.raises(RuntimeError, match="closed"):
        client.get_stats()


def test_close_is_idempotent(address: str) -> None:
    client = FeedbackClient(address)
    client.close()
    client.close()


def test_a_channel_passed_in_is_left_open(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        with FeedbackClient(channel=channel) as client:
            client.get_stats()

        assert isinstance(raw_get_stats(channel), feedback_service_pb2.GetStatsResponse)


def test_a_channel_passed_in_excludes_channel_settings(address: str) -> None:
    with grpc.insecure_channel(address) as channel, pytest.raises(ValueError, match="channel"):
        FeedbackClient(channel=channel, channel_options=[("grpc.enable_retries", 0)])


def test_channel_options_are_accepted(address: str) -> None:
    options = [("grpc.max_receive_message_length", 1024 * 1024)]
    with FeedbackClient(address, channel_options=options) as client:
        client.get_stats()


@pytest.mark.parametrize(
    "metadata",
    [{"authorization": "Bearer t0ken"}, [("authorization", "Bearer t0ken")]],
)
def test_metadata_is_sent_with_every_call(
    address: str,
    servicer: RecordingServicer,
    metadata: dict[str, str] | list[tuple[str, str]],
) -> None:
    with FeedbackClient(address, metadata=metadata) as client:
        client.get_stats()
        client.log_event("alice", "click")

    for call in [*servicer.calls["GetStats"], *servicer.calls["LogEvent"]]:
        assert call.metadata["authorization"] == "Bearer t0ken"


def test_client_timeout_becomes_the_call_deadline(
    address: str, servicer: RecordingServicer
) -> None:
    with FeedbackClient(address, timeout=3.0) as client:
        client.get_stats()
        client.get_stats(timeout=0.5)

    default_deadline, call_deadline = (call.time_remaining for call in servicer.calls["GetStats"])
    assert default_deadline == pytest.approx(3.0, abs=0.2)
    assert call_deadline == pytest.approx(0.5, abs=0.2)


def test_no_timeout_means_no_deadline(address: str, servicer: RecordingServicer) -> None:
    with FeedbackClient(address, timeout=None, retry=RetryPolicy(max_attempts=1)) as client:
        client.get_stats()

    # gRPC servers report an infinite deadline as None or as an enormous number of seconds.
    remaining = servicer.calls["GetStats"][0].time_remaining
    assert remaining is None or remaining > 1e9
