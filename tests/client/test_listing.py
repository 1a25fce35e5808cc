"""The list, iter and export methods: the requests they send and how they walk pages and chunks."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.rpc import error_details_pb2

from llmfeedback import (
    Event,
    ExportChunk,
    Feedback,
    FeedbackClient,
    Interaction,
    InvalidArgumentError,
    ListEventsResponse,
    ListInteractionsResponse,
    UnavailableError,
)
from llmfeedback.proto.feedback.v1 import feedback_pb2, feedback_service_pb2

from .fake_service import Abort, Stream

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from .fake_service import RecordingServicer

PARIS_SUMMER = timezone(timedelta(hours=2))
START = datetime(2025, 6, 1, 12, 0, tzinfo=PARIS_SUMMER)
END = datetime(2025, 6, 2, tzinfo=UTC)


def only_request(servicer: RecordingServicer, method: str) -> Any:
    requests = servicer.requests(method)
    assert len(requests) == 1
    return requests[0]


def test_list_feedback_maps_every_filter(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    client.list_feedback(
        conversation_id="conv-1",
        message_id="m1",
        user_id="alice",
        model="gpt-4o",
        min_score=2,
        max_score=4,
        rating_kind="score",
        label="good",
        has_text=False,
        start_time=START,
        end_time=END,
        order="oldest_first",
        page_size=10,
        page_token="next",
    )

    request = only_request(servicer, "ListFeedback")
    assert isinstance(request, feedback_service_pb2.ListFeedbackRequest)
    assert (request.conversation_id, request.message_id, request.user_id) == (
        "conv-1",
        "m1",
        "alice",
    )
    assert (request.model, request.min_score, request.max_score) == ("gpt-4o", 2, 4)
    assert request.rating_kind == feedback_pb2.RATING_KIND_SCORE
    assert request.label == "good"
    assert request.HasField("has_text")
    assert request.has_text is False
    assert request.start_time.ToDatetime(tzinfo=UTC) == START
    assert request.end_time.ToDatetime(tzinfo=UTC) == END
    assert (request.order_by, request.page_size, request.page_token) == (
        "create_time asc",
        10,
        "next",
    )


def test_unset_filters_stay_unset(client: FeedbackClient, servicer: RecordingServicer) -> None:
    client.list_feedback(model=None, has_text=None)

    assert only_request(servicer, "ListFeedback") == feedback_service_pb2.ListFeedbackRequest()


@pytest.mark.parametrize(("order", "order_by"), [("newest_first", "create_time desc"), (None, "")])
def test_list_interactions_and_events_map_their_filters(
    client: FeedbackClient, servicer: RecordingServicer, order: Any, order_by: str
) -> None:
    interactions = client.list_interactions(
        conversation_id="c", message_id="m", user_id="u", model="x", start_time=START, order=order
    )
    events = client.list_events(user_id="u", event_type="click", end_time=END, order=order)

    interaction_request = only_request(servicer, "ListInteractions")
    assert interaction_request == feedback_service_pb2.ListInteractionsRequest(
        conversation_id="c",
        message_id="m",
        user_id="u",
        model="x",
        start_time=interaction_request.start_time,
        order_by=order_by,
    )
    assert interaction_request.start_time.ToDatetime(tzinfo=UTC) == START
    event_request = only_request(servicer, "ListEvents")
    assert (event_request.user_id, event_request.event_type, event_request.order_by) == (
        "u",
        "click",
        order_by,
    )
    assert event_request.end_time.ToDatetime(tzinfo=UTC) == END
    assert isinstance(interactions, ListInteractionsResponse)
    assert isinstance(events, ListEventsResponse)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda c: c.list_events(conversation_id="c"), TypeError, "unexpected filter"),
        (lambda c: c.iter_interactions(label="x"), TypeError, "unexpected filter"),
        (lambda c: c.export_events(min_score=1), TypeError, "unexpected filter"),
        (lambda c: c.list_feedback(rating_kind="stars"), ValueError, "rating_kind"),
        (lambda c: c.list_feedback(order="newest"), ValueError, "order"),
        (lambda c: c.iter_feedback(start_time=datetime(2025, 1, 1)), ValueError, "timezone"),
        (lambda c: c.export_feedback(end_time="2025-01-01"), TypeError, "datetime"),
    ],
)
def test_bad_arguments_fail_before_any_call(
    client: FeedbackClient,
    servicer: RecordingServicer,
    call: Any,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        call(client)

    assert not servicer.calls


def test_iter_interactions_and_events_follow_their_tokens(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan(
        "ListInteractions",
        ListInteractionsResponse(interactions=[Interaction(id=3)], next_page_token="t2"),
        ListInteractionsResponse(interactions=[Interaction(id=1)]),
    )
    servicer.plan("ListEvents", ListEventsResponse(events=[Event(id=7)]))

    interactions = [i.id for i in client.iter_interactions(user_id="u", order="oldest_first")]
    events = [e.id for e in client.iter_events(event_type="click", page_size=5)]

    assert interactions == [3, 1]
    requests = servicer.requests("ListInteractions")
    assert [(r.page_token, r.user_id, r.order_by) for r in requests] == [  # type: ignore[attr-defined]
        ("", "u", "create_time asc"),
        ("t2", "u", "create_time asc"),
    ]
    assert events == [7]
    assert only_request(servicer, "ListEvents").page_size == 5


def chunk(*ids: int, token: str) -> feedback_service_pb2.ExportFeedbackResponse:
    return feedback_service_pb2.ExportFeedbackResponse(
        feedback=[Feedback(id=i) for i in ids], resume_token=token
    )


def test_export_yields_chunks_with_their_resume_tokens(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("ExportFeedback", Stream([chunk(1, 2, token="a"), chunk(3, token="b")]))

    chunks = list(client.export_feedback(user_id="u", order="newest_first", resume_token="r0"))

    assert [([f.id for f in c.records], c.resume_token) for c in chunks] == [
        ([1, 2], "a"),
        ([3], "b"),
    ]
    assert all(isinstance(c, ExportChunk) for c in chunks)
    request = only_request(servicer, "ExportFeedback")
    assert (request.user_id, request.order_by, request.resume_token) == (
        "u",
        "create_time desc",
        "r0",
    )


def test_export_has_no_deadline_unless_given(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    list(client.export_interactions())
    list(client.export_events(timeout=30))

    unbounded = servicer.calls["ExportInteractions"][0].time_remaining
    assert unbounded is None or unbounded > 10**9
    remaining = servicer.calls["ExportEvents"][0].time_remaining
    assert remaining is not None
    assert 25 < remaining < 31


def test_export_resumes_after_a_transient_failure_from_the_last_chunk(
    client: FeedbackClient, servicer: RecordingServicer, sleeps: list[float]
) -> None:
    servicer.plan(
        "ExportFeedback",
        Stream([chunk(1, 2, token="a")], then=Abort(grpc.StatusCode.UNAVAILABLE)),
        Abort(grpc.StatusCode.UNAVAILABLE),
        Stream([chunk(3, token="b")]),
    )

    ids = [f.id for c in client.export_feedback(model="m") for f in c.records]

    assert ids == [1, 2, 3]
    requests = servicer.requests("ExportFeedback")
    assert [(r.resume_token, r.model) for r in requests] == [  # type: ignore[attr-defined]
        ("", "m"),
        ("a", "m"),
        ("a", "m"),
    ]
    assert len(sleeps) == 2


def test_export_gives_up_after_the_policys_attempts(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("ExportEvents", *[Abort(grpc.StatusCode.UNAVAILABLE)] * 5)

    with pytest.raises(UnavailableError):
        list(client.export_events())

    assert len(servicer.requests("ExportEvents")) == 5


def test_export_errors_are_typed_and_not_retried(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    violation = error_details_pb2.BadRequest.FieldViolation(
        field="resume_token", description="was issued for different filters or another order"
    )
    servicer.plan(
        "ExportFeedback",
        Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid request",
            [error_details_pb2.BadRequest(field_violations=[violation])],
        ),
    )

    with pytest.raises(InvalidArgumentError) as caught:
        list(client.export_feedback(resume_token="foreign"))

    assert [v.field for v in caught.value.field_violations] == ["resume_token"]
    assert len(servicer.requests("ExportFeedback")) == 1


def test_stopping_early_cancels_the_stream(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    # Chunks of ~100 KiB: HTTP/2 flow control holds the server back after a few of them.
    big = [Feedback(id=i, text="x" * 100) for i in range(1000)]
    responses: list[Message] = [
        feedback_service_pb2.ExportFeedbackResponse(feedback=big, resume_token=str(n))
        for n in range(50)
    ]
    servicer.plan("ExportFeedback", Stream(responses))

    export = client.export_feedback()
    first = next(export)
    export.close()

    assert first.resume_token == "0"
    deadline = time.monotonic() + 5
    while not servicer.ended_streams and time.monotonic() < deadline:
        time.sleep(0.01)
    assert servicer.ended_streams == ["ExportFeedback"]
