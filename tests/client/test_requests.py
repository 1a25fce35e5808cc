"""Each client method turns plain Python arguments into the request the contract expects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, cast

import pytest
from google.protobuf import json_format, struct_pb2

from llmfeedback import Feedback, FeedbackClient, Interaction, ListFeedbackResponse, compute_hash
from llmfeedback.proto.feedback.v1 import feedback_pb2, feedback_service_pb2

if TYPE_CHECKING:
    from .fake_service import RecordingServicer

PARIS_SUMMER = timezone(timedelta(hours=2))


def only_request(servicer: RecordingServicer, method: str) -> object:
    requests = servicer.requests(method)
    assert len(requests) == 1
    return requests[0]


def interaction_request(
    servicer: RecordingServicer,
) -> feedback_service_pb2.RecordInteractionRequest:
    request = only_request(servicer, "RecordInteraction")
    assert isinstance(request, feedback_service_pb2.RecordInteractionRequest)
    return request


def feedback_request(servicer: RecordingServicer) -> feedback_service_pb2.SubmitFeedbackRequest:
    request = only_request(servicer, "SubmitFeedback")
    assert isinstance(request, feedback_service_pb2.SubmitFeedbackRequest)
    return request


def test_record_interaction_leaves_unset_optional_fields_unset(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    interaction = client.record_interaction("conv-1")

    request = interaction_request(servicer)
    assert request.conversation_id == "conv-1"
    assert request.message_id == request.user_id == request.model == ""
    assert request.WhichOneof("input") is None
    assert request.WhichOneof("output") is None
    for optional_field in ("latency_ms", "prompt_tokens", "completion_tokens", "total_tokens"):
        assert not request.HasField(optional_field), optional_field
    assert not request.HasField("metadata")
    assert not request.HasField("occur_time")
    assert isinstance(interaction, Interaction)
    assert interaction.id == 1


def test_record_interaction_sends_zero_values_as_present(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    client.record_interaction(
        "conv-1", latency_ms=0.0, prompt_tokens=0, completion_tokens=0, total_tokens=0
    )

    request = interaction_request(servicer)
    assert request.HasField("latency_ms")
    assert request.latency_ms == 0.0
    assert request.HasField("prompt_tokens")
    assert request.HasField("completion_tokens")
    assert request.HasField("total_tokens")


def test_record_interaction_maps_every_argument(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    occurred = datetime(2024, 5, 1, 14, 30, 15, 250000, tzinfo=PARIS_SUMMER)
    answer_hash = compute_hash("Paris.")

    client.record_interaction(
        "conv-1",
        message_id="msg-1",
        user_id="alice",
        model="gpt-4o-mini",
        input_text="Capital of France?",
        output_hash=answer_hash,
        latency_ms=812.5,
        prompt_tokens=12,
        completion_tokens=3,
        total_tokens=15,
        metadata={"app": "demo", "tags": ["a", "b"], "nested": {"ok": True, "none": None}},
        occur_time=occurred,
    )

    request = interaction_request(servicer)
    assert (request.message_id, request.user_id, request.model) == ("msg-1", "alice", "gpt-4o-mini")
    assert request.WhichOneof("input") == "input_text"
    assert request.input_text == "Capital of France?"
    assert request.WhichOneof("output") == "output_hash"
    assert request.output_hash == answer_hash
    assert (request.latency_ms, request.prompt_tokens, request.total_tokens) == (812.5, 12, 15)
    assert json_format.MessageToDict(request.metadata) == {
        "app": "demo",
        "tags": ["a", "b"],
        "nested": {"ok": True, "none": None},
    }
    assert request.occur_time.ToJsonString() == "2024-05-01T12:30:15.250Z"


def test_record_interaction_rejects_text_and_hash_of_the_same_side(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    with pytest.raises(ValueError, match="input_text or input_hash"):
        client.record_interaction("conv-1", input_text="hi", input_hash=compute_hash("hi"))
    with pytest.raises(ValueError, match="output_text or output_hash"):
        client.record_interaction("conv-1", output_text="yo", output_hash=compute_hash("yo"))
    assert servicer.requests("RecordInteraction") == []


def test_naive_datetimes_are_rejected_before_any_call(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    naive = datetime(2024, 5, 1, 12, 0)
    with pytest.raises(ValueError, match="occur_time must be timezone-aware"):
        client.record_interaction("conv-1", occur_time=naive)
    with pytest.raises(ValueError, match="event_time must be timezone-aware"):
        client.log_event("alice", "page_view", event_time=naive)
    with pytest.raises(ValueError, match="start_time must be timezone-aware"):
        client.get_stats(start_time=naive)
    assert not servicer.calls


def test_metadata_that_is_not_json_like_is_rejected(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    with pytest.raises(TypeError, match="metadata must be a mapping"):
        client.record_interaction("conv-1", metadata={"when": datetime.now(UTC)})
    with pytest.raises(TypeError, match="details must be a mapping"):
        client.log_event("alice", "click", details=cast("dict[str, object]", ["not", "a", "map"]))
    assert not servicer.calls


@pytest.mark.parametrize(
    ("rating", "expected_kind", "expected_value"),
    [
        ({"score": 4}, "score", 4),
        ({"thumb": True}, "thumb", feedback_pb2.THUMB_UP),
        ({"thumb": False}, "thumb", feedback_pb2.THUMB_DOWN),
        ({"label": "good"}, "label", "good"),
    ],
)
def test_submit_feedback_sets_exactly_the_given_rating(
    client: FeedbackClient,
    servicer: RecordingServicer,
    rating: dict[str, int | bool | str],
    expected_kind: str,
    expected_value: object,
) -> None:
    feedback = client.submit_feedback("conv-1", **rating)  # type: ignore[arg-type]

    request = feedback_request(servicer)
    assert request.WhichOneof("rating") == expected_kind
    assert getattr(request, expected_kind) == expected_value
    assert isinstance(feedback, Feedback)


@pytest.mark.parametrize(
    "ratings",
    [
        {},
        {"score": 5, "thumb": True},
        {"score": 5, "label": "good"},
        {"thumb": False, "label": "x"},
    ],
)
def test_submit_feedback_requires_exactly_one_rating(
    client: FeedbackClient, servicer: RecordingServicer, ratings: dict[str, int | bool | str]
) -> None:
    with pytest.raises(ValueError, match="exactly one of score, thumb or label"):
        client.submit_feedback("conv-1", **ratings)  # type: ignore[arg-type]
    assert not servicer.calls


def test_submit_feedback_refuses_ratings_of_the_wrong_type(client: FeedbackClient) -> None:
    with pytest.raises(TypeError, match="thumb must be True"):
        client.submit_feedback("conv-1", thumb=cast("bool", "down"))
    with pytest.raises(TypeError, match="score must be an int"):
        client.submit_feedback("conv-1", score=True)


def test_submit_feedback_by_message_alone_maps_optional_fields(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    client.submit_feedback(
        message_id="msg-1",
        user_id="alice",
        score=1,
        text="wrong answer",
        latency_ms=0.0,
        tokens_used=0,
        input_hash="a" * 64,
        output_hash="b" * 64,
        metadata={"source": "widget"},
    )

    request = feedback_request(servicer)
    assert request.conversation_id == ""
    assert (request.message_id, request.user_id, request.text) == ("msg-1", "alice", "wrong answer")
    assert request.HasField("latency_ms")
    assert request.HasField("tokens_used")
    assert request.tokens_used == 0
    assert (request.input_hash, request.output_hash) == ("a" * 64, "b" * 64)
    assert request.metadata == struct_pb2.Struct(
        fields={"source": struct_pb2.Value(string_value="widget")}
    )


def test_submit_feedback_leaves_unset_optional_fields_unset(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    client.submit_feedback("conv-1", label="bad")

    request = feedback_request(servicer)
    assert not request.HasField("latency_ms")
    assert not request.HasField("tokens_used")
    assert not request.HasField("metadata")


def test_log_event_maps_details_and_time(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    event = client.log_event(
        "alice",
        "page_view",
        details={"path": "/pricing", "count": 3},
        event_time=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    )

    request = only_request(servicer, "LogEvent")
    assert isinstance(request, feedback_service_pb2.LogEventRequest)
    assert (request.user_id, request.event_type) == ("alice", "page_view")
    assert json_format.MessageToDict(request.details) == {"path": "/pricing", "count": 3.0}
    assert request.event_time.ToJsonString() == "2024-05-01T12:00:00Z"
    assert (event.id, event.event_type) == (1, "page_view")


def test_log_event_without_optional_arguments(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    client.log_event("alice", "click")

    request = only_request(servicer, "LogEvent")
    assert isinstance(request, feedback_service_pb2.LogEventRequest)
    assert not request.HasField("details")
    assert not request.HasField("event_time")


def test_get_stats_maps_filters_and_time_range(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    stats = client.get_stats(
        conversation_id="conv-1",
        user_id="alice",
        message_id="msg-1",
        start_time=datetime(2024, 5, 1, tzinfo=UTC),
        end_time=datetime(2024, 5, 2, 2, 0, tzinfo=PARIS_SUMMER),
    )

    request = only_request(servicer, "GetStats")
    assert isinstance(request, feedback_service_pb2.GetStatsRequest)
    assert (request.conversation_id, request.user_id, request.message_id) == (
        "conv-1",
        "alice",
        "msg-1",
    )
    assert request.start_time.ToJsonString() == "2024-05-01T00:00:00Z"
    assert request.end_time.ToJsonString() == "2024-05-02T00:00:00Z"
    assert isinstance(stats, feedback_service_pb2.GetStatsResponse)


def test_get_stats_without_filters_sends_an_empty_request(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    client.get_stats()

    assert only_request(servicer, "GetStats") == feedback_service_pb2.GetStatsRequest()


def test_list_feedback_maps_filters_and_paging(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    page = client.list_feedback(
        conversation_id="conv-1",
        user_id="alice",
        min_score=0,
        page_size=10,
        page_token="next",
    )

    request = only_request(servicer, "ListFeedback")
    assert isinstance(request, feedback_service_pb2.ListFeedbackRequest)
    assert (request.conversation_id, request.user_id, request.message_id) == ("conv-1", "alice", "")
    assert request.HasField("min_score")
    assert request.min_score == 0
    assert not request.HasField("max_score")
    assert (request.page_size, request.page_token) == (10, "next")
    assert isinstance(page, ListFeedbackResponse)


def test_iter_feedback_follows_next_page_token_with_the_same_filters(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan(
        "ListFeedback",
        ListFeedbackResponse(feedback=[Feedback(id=5), Feedback(id=4)], next_page_token="t2"),
        ListFeedbackResponse(feedback=[Feedback(id=3), Feedback(id=2)], next_page_token="t3"),
        ListFeedbackResponse(feedback=[Feedback(id=1)]),
    )

    ids = [entry.id for entry in client.iter_feedback(user_id="alice", max_score=3, page_size=2)]

    assert ids == [5, 4, 3, 2, 1]
    requests = servicer.requests("ListFeedback")
    assert [request.page_token for request in requests] == ["", "t2", "t3"]  # type: ignore[attr-defined]
    for request in requests:
        assert isinstance(request, feedback_service_pb2.ListFeedbackRequest)
        assert (request.user_id, request.max_score, request.page_size) == ("alice", 3, 2)


def test_iter_feedback_fetches_pages_only_as_needed(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan(
        "ListFeedback",
        ListFeedbackResponse(feedback=[Feedback(id=2), Feedback(id=1)], next_page_token="t2"),
    )

    first = next(client.iter_feedback(page_size=2))

    assert first.id == 2
    assert len(servicer.requests("ListFeedback")) == 1
