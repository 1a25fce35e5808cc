"""Every behaviour the two seed systems describe, through the real client and a real server."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from llmfeedback import (
    FeedbackClient,
    InvalidArgumentError,
    NotFoundError,
    compute_hash,
)
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from tests.server_harness import ServerThread


def _violations(error: InvalidArgumentError) -> dict[str, str]:
    return {violation.field: violation.description for violation in error.field_violations}


def _raw_violations(error: grpc.RpcError) -> dict[str, str]:
    """Field violations read straight from the wire, as a client in another language would."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    return {v.field: v.description for v in bad_request.field_violations}


@pytest.fixture
def stub(server: ServerThread) -> Iterator[FeedbackServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield FeedbackServiceStub(channel)


@pytest.fixture
def conversation(client: FeedbackClient) -> str:
    client.record_interaction(
        "conv-123",
        input_text="Explain quantum computing",
        output_text="Qubits...",
        latency_ms=150.0,
        total_tokens=300,
    )
    return "conv-123"


# ---- FilAgent: POST /api/v1/feedback/{conversation_id} ----


@pytest.mark.parametrize("score", [1, 5])
def test_boundary_scores_are_accepted(
    client: FeedbackClient, conversation: str, score: int
) -> None:
    feedback = client.submit_feedback(conversation, score=score)

    assert feedback.score == score
    assert feedback.id > 0


@pytest.mark.database_independent
@pytest.mark.parametrize("score", [0, 6, -1, 2**31 - 1])
def test_out_of_range_scores_are_rejected(
    client: FeedbackClient, conversation: str, score: int
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.submit_feedback(conversation, score=score)

    assert "score" in _violations(caught.value)


def test_text_of_2000_characters_is_accepted_and_2001_rejected(
    client: FeedbackClient, conversation: str
) -> None:
    assert client.submit_feedback(conversation, score=4, text="é" * 2000).text == "é" * 2000

    with pytest.raises(InvalidArgumentError) as caught:
        client.submit_feedback(conversation, score=4, text="x" * 2001)

    assert _violations(caught.value)["text"] == "must be at most 2000 characters, got 2001"


@pytest.mark.database_independent
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("latency_ms", -0.001),
        ("latency_ms", math.nan),
        ("latency_ms", math.inf),
        ("latency_ms", -math.inf),
        ("latency_ms", 86_400_001.0),
        ("tokens_used", -1),
        ("tokens_used", 2**31),
    ],
)
def test_bad_numbers_are_rejected(
    client: FeedbackClient, conversation: str, field: str, value: Any
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.submit_feedback(conversation, score=3, **{field: value})

    assert list(_violations(caught.value)) == [field]


def test_zero_latency_and_tokens_are_valid(client: FeedbackClient, conversation: str) -> None:
    feedback = client.submit_feedback(conversation, score=3, latency_ms=0.0, tokens_used=0)

    assert feedback.HasField("latency_ms")
    assert (feedback.latency_ms, feedback.tokens_used) == (0.0, 0)


@pytest.mark.database_independent
@pytest.mark.parametrize(
    "conversation_id", ["has space", "slash/id", "dot.id", "x" * 129, "é", "tab\tid", "new\n"]
)
def test_bad_conversation_ids_are_rejected(client: FeedbackClient, conversation_id: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.submit_feedback(conversation_id, score=3)

    assert "conversation_id" in _violations(caught.value)


def test_longest_conversation_id_is_accepted(client: FeedbackClient) -> None:
    conversation_id = "A-_9" * 32
    client.record_interaction(conversation_id)

    assert client.submit_feedback(conversation_id, score=2).conversation_id == conversation_id


def test_unknown_conversation_is_not_found(client: FeedbackClient, conversation: str) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.submit_feedback("never-recorded", score=5)

    assert (caught.value.resource_type, caught.value.resource_name) == (
        "conversation",
        "never-recorded",
    )
    assert client.get_stats().feedback.total_count == 0


@pytest.mark.database_independent
def test_validation_comes_before_the_existence_check(client: FeedbackClient) -> None:
    with pytest.raises(InvalidArgumentError):
        client.submit_feedback("never-recorded", score=9)


@pytest.mark.database_independent
def test_every_violation_is_reported_and_nothing_is_stored(
    client: FeedbackClient, conversation: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.submit_feedback(
            conversation,
            score=0,
            text="y" * 3000,
            latency_ms=math.nan,
            tokens_used=-5,
            input_hash="not-a-hash",
            metadata={"bad": math.inf},
        )

    assert set(_violations(caught.value)) == {
        "score",
        "text",
        "latency_ms",
        "tokens_used",
        "input_hash",
        "metadata",
    }
    assert client.get_stats().feedback.total_count == 0


def test_stats_overall_and_per_conversation_are_exact(client: FeedbackClient) -> None:
    client.record_interaction("conv-a")
    client.record_interaction("conv-b")
    for score, latency, tokens in [(5, 100.0, 200), (4, 200.0, 100), (5, None, None)]:
        client.submit_feedback("conv-a", score=score, latency_ms=latency, tokens_used=tokens)
    client.submit_feedback("conv-b", score=1, latency_ms=50.0, tokens_used=10, text="bad")

    overall = client.get_stats().feedback
    per_conversation = client.get_stats(conversation_id="conv-a").feedback

    assert overall.total_count == 4
    assert overall.avg_score == pytest.approx(15 / 4)
    assert [
        overall.score1_count,
        overall.score2_count,
        overall.score3_count,
        overall.score4_count,
        overall.score5_count,
    ] == [1, 0, 0, 1, 2]
    assert overall.avg_latency_ms == pytest.approx(350 / 3)
    assert overall.avg_tokens == pytest.approx(310 / 3)
    assert overall.with_text_count == 1
    assert per_conversation.total_count == 3
    assert per_conversation.avg_score == pytest.approx(14 / 3)
    assert per_conversation.score1_count == 0
    assert per_conversation.avg_latency_ms == pytest.approx(150.0)


def test_empty_stats_have_zero_counts_and_no_averages(client: FeedbackClient) -> None:
    stats = client.get_stats()

    assert stats.feedback.total_count == 0
    assert not stats.feedback.HasField("avg_score")
    assert not stats.feedback.HasField("avg_latency_ms")
    assert not stats.feedback.HasField("avg_tokens")
    assert stats.events.total_count == 0
    assert stats.interactions.total_count == 0


def test_score_range_filters_are_inclusive(client: FeedbackClient) -> None:
    client.record_interaction("conv-r")
    for score in [1, 2, 3, 4, 5, 5]:
        client.submit_feedback("conv-r", score=score)
    client.submit_feedback("conv-r", label="good")

    high = [f.score for f in client.iter_feedback(min_score=4)]
    low = [f.score for f in client.iter_feedback(max_score=2)]
    middle = [f.score for f in client.iter_feedback(min_score=2, max_score=4)]

    assert high == [5, 5, 4]
    assert low == [2, 1]
    assert middle == [4, 3, 2]


@pytest.mark.database_independent
def test_reversed_score_range_is_rejected(client: FeedbackClient) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.list_feedback(min_score=4, max_score=2)

    assert "max_score" in _violations(caught.value)


def test_list_by_conversation_is_newest_first_with_a_limit(client: FeedbackClient) -> None:
    client.record_interaction("conv-l")
    client.record_interaction("other")
    ids = [client.submit_feedback("conv-l", score=3).id for _ in range(5)]
    client.submit_feedback("other", score=3)

    page = client.list_feedback(conversation_id="conv-l", page_size=3)

    assert [f.id for f in page.feedback] == ids[::-1][:3]
    assert page.next_page_token
    rest = client.list_feedback(
        conversation_id="conv-l", page_size=3, page_token=page.next_page_token
    )
    assert [f.id for f in rest.feedback] == ids[::-1][3:]
    assert rest.next_page_token == ""


def test_metadata_round_trips(client: FeedbackClient, conversation: str) -> None:
    metadata = {
        "source": "web_ui",
        "submitted_at": "2026-11-22T10:00:00Z",
        "message_count": 3,
        "ratio": 0.25,
        "flags": [True, False, None],
        "nested": {"émoji": "😀", "quote": "'; DROP TABLE feedback; --", "deep": {"x": [1, 2]}},
    }

    stored = client.submit_feedback(conversation, score=5, metadata=metadata)
    listed = next(client.iter_feedback(conversation_id=conversation))

    for feedback in (stored, listed):
        from google.protobuf.json_format import MessageToDict

        assert MessageToDict(feedback.metadata) == metadata


def test_hashes_are_sha256_and_inherited_from_the_interaction(
    client: FeedbackClient, conversation: str
) -> None:
    feedback = client.submit_feedback(conversation, score=5)

    assert feedback.input_hash == compute_hash("Explain quantum computing")
    assert feedback.output_hash == compute_hash("Qubits...")
    assert feedback.latency_ms == 150.0
    assert feedback.tokens_used == 300


def test_given_hashes_win_and_are_lower_cased(client: FeedbackClient, conversation: str) -> None:
    digest = compute_hash("other input").upper()

    feedback = client.submit_feedback(conversation, score=5, input_hash=digest, latency_ms=1.0)

    assert feedback.input_hash == digest.lower()
    assert feedback.latency_ms == 1.0


def test_accepting_unknown_conversations_is_a_setting(database_url: str) -> None:
    from llmfeedback import RetryPolicy
    from server.config import Settings

    settings = Settings(database_url=database_url, accept_unknown_conversations=True)
    with (
        ServerThread(settings) as server,
        FeedbackClient(server.address, retry=RetryPolicy(max_attempts=1)) as client,
    ):
        stored = client.submit_feedback("never-recorded", score=2)
        by_message = client.submit_feedback(message_id="unknown-msg", user_id="u", label="bad")

    assert (stored.conversation_id, stored.interaction_id) == ("never-recorded", 0)
    assert (by_message.conversation_id, by_message.message_id) == ("", "unknown-msg")


# ---- UP2D8: POST /api/feedback and POST /api/analytics ----


def test_up2d8_feedback_on_a_message(client: FeedbackClient) -> None:
    client.record_interaction("chat-9", message_id="msg-123", user_id="user-456")

    feedback = client.submit_feedback(message_id="msg-123", user_id="user-456", label="positive")

    assert (feedback.conversation_id, feedback.message_id) == ("chat-9", "msg-123")
    assert feedback.label == "positive"
    assert feedback.create_time.ToDatetime(tzinfo=UTC) <= datetime.now(UTC)


def test_up2d8_labels_are_case_folded_and_constrained(client: FeedbackClient) -> None:
    client.record_interaction("chat-9", message_id="msg-1")

    assert client.submit_feedback(message_id="msg-1", label=" Good ").label == "good"
    with pytest.raises(InvalidArgumentError) as caught:
        client.submit_feedback(message_id="msg-1", label="goood")

    assert _violations(caught.value)["label"].startswith("must be one of: bad, good")


def test_thumbs_are_counted(client: FeedbackClient) -> None:
    client.record_interaction("chat-t", message_id="msg-t")
    for up in (True, True, False):
        client.submit_feedback(message_id="msg-t", thumb=up)
    client.submit_feedback(message_id="msg-t", label="neutral")

    stats = client.get_stats(message_id="msg-t").feedback

    assert (stats.thumbs_up_count, stats.thumbs_down_count) == (2, 1)
    assert dict(stats.label_counts) == {"neutral": 1}
    assert stats.total_count == 4
    assert stats.scored_count == 0


@pytest.mark.database_independent
def test_up2d8_feedback_missing_rating_and_ids_is_rejected(stub: FeedbackServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.SubmitFeedback(pb.SubmitFeedbackRequest(user_id="u"), timeout=10)

    assert set(_raw_violations(caught.value)) == {"conversation_id", "rating"}


def test_unknown_message_is_not_found(client: FeedbackClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.submit_feedback(message_id="msg-404", label="bad")

    assert caught.value.resource_type == "message"


def test_feedback_from_another_user_is_refused(client: FeedbackClient) -> None:
    from llmfeedback import FailedPreconditionError

    client.record_interaction("chat-u", message_id="msg-u", user_id="alice")

    with pytest.raises(FailedPreconditionError) as caught:
        client.submit_feedback(message_id="msg-u", user_id="mallory", score=1)

    assert caught.value.reason == "USER_MISMATCH"


def test_up2d8_events_are_logged_with_details(client: FeedbackClient) -> None:
    details = {"page": "/dashboard", "referrer": "/login", "duration_ms": 5000}
    when = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)

    event = client.log_event("user-456", "page_view", details=details, event_time=when)
    client.log_event("user-456", "button_click", details={"button_id": "submit-chat"})
    client.log_event("user-789", "page_view")

    from google.protobuf.json_format import MessageToDict

    assert MessageToDict(event.details) == details
    assert event.event_time.ToDatetime(tzinfo=UTC) == when
    assert event.receive_time.ToDatetime(tzinfo=UTC) > when
    stats = client.get_stats(user_id="user-456").events
    assert (stats.total_count, dict(stats.type_counts)) == (2, {"page_view": 1, "button_click": 1})
    assert client.get_stats().events.total_count == 3


@pytest.mark.database_independent
def test_up2d8_event_missing_fields_is_rejected(stub: FeedbackServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.LogEvent(pb.LogEventRequest(), timeout=10)

    assert _raw_violations(caught.value) == {
        "user_id": "is required",
        "event_type": "is required",
    }


@pytest.mark.database_independent
def test_event_time_far_in_the_future_is_rejected(client: FeedbackClient) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.log_event("u", "page_view", event_time=datetime.now(UTC) + timedelta(days=2))

    assert "event_time" in _violations(caught.value)


def test_stats_time_range_is_half_open(client: FeedbackClient) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for day in range(3):
        client.log_event("u", "tick", event_time=t0 + timedelta(days=day))

    window = client.get_stats(start_time=t0, end_time=t0 + timedelta(days=2)).events

    assert window.total_count == 2
    with pytest.raises(InvalidArgumentError):
        client.get_stats(start_time=t0, end_time=t0 - timedelta(seconds=1))


@pytest.mark.database_independent
def test_metadata_size_and_depth_limits(client: FeedbackClient, conversation: str) -> None:
    nested: dict[str, Any] = {"leaf": 1}
    for _ in range(10):
        nested = {"next": nested}

    assert client.submit_feedback(conversation, score=3, metadata={"note": "x" * 15_000})
    with pytest.raises(InvalidArgumentError) as too_big:
        client.submit_feedback(conversation, score=3, metadata={"note": "x" * 17_000})
    with pytest.raises(InvalidArgumentError) as too_deep:
        client.submit_feedback(conversation, score=3, metadata=nested)

    assert _violations(too_big.value)["metadata"].startswith("must be at most 16384 bytes")
    assert _violations(too_deep.value)["metadata"] == "must be nested at most 10 levels deep"
