"""The erasure and access-export methods: the requests they send, their retries, what they yield."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from llmfeedback import (
    DeadlineExceededError,
    Erasure,
    Event,
    Feedback,
    FeedbackClient,
    Interaction,
    ListErasuresResponse,
    UnavailableError,
    UserRecord,
)
from llmfeedback.proto.feedback.v1 import feedback_service_pb2

from .fake_service import Abort, Stall, Stream

if TYPE_CHECKING:
    from .fake_service import RecordingServicer


def erasures_in_flight() -> Abort:
    """The server's answer while it erases 4 other subjects."""
    return Abort(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "this server is already erasing 4 subjects; retry later",
        [
            error_details_pb2.ErrorInfo(reason="ERASURES_IN_FLIGHT"),
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1)),
        ],
    )


def test_erase_user_is_retried_like_any_call_and_returns_the_entry(
    client: FeedbackClient, servicer: RecordingServicer, sleeps: list[float]
) -> None:
    entry = Erasure(id=7, subject_hash="ab" * 32)
    servicer.plan(
        "EraseUser",
        Abort(grpc.StatusCode.UNAVAILABLE),
        erasures_in_flight(),
        feedback_service_pb2.EraseUserResponse(erasure=entry),
    )

    erasure = client.erase_user("alice")

    assert erasure == entry
    assert [request.user_id for request in servicer.requests("EraseUser")] == ["alice"] * 3  # type: ignore[attr-defined]
    assert len(sleeps) == 2
    assert sleeps[1] >= 1  # the server's RetryInfo


def test_erase_conversation_sends_the_conversation(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    entry = Erasure(id=3)
    servicer.plan(
        "EraseConversation", feedback_service_pb2.EraseConversationResponse(erasure=entry)
    )

    assert client.erase_conversation("conv-1", timeout=60) == entry

    (call,) = servicer.calls["EraseConversation"]
    assert call.request.conversation_id == "conv-1"  # type: ignore[attr-defined]
    assert call.time_remaining is not None
    assert 50 < call.time_remaining < 61


def test_an_erasure_that_outlasts_the_timeout_raises_deadline_exceeded(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("EraseUser", Stall(1.0))

    with pytest.raises(DeadlineExceededError):
        client.erase_user("alice", timeout=0.2)

    assert len(servicer.requests("EraseUser")) == 1  # its attempt had all the time there was


def test_list_erasures_sends_the_filter_and_the_page(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("ListErasures", ListErasuresResponse(next_page_token="t2"))

    page = client.list_erasures(conversation_id="conv-1", page_size=5, page_token="t1")

    assert page.next_page_token == "t2"
    (request,) = servicer.requests("ListErasures")
    assert request == feedback_service_pb2.ListErasuresRequest(
        conversation_id="conv-1", page_size=5, page_token="t1"
    )


def test_iter_erasures_walks_every_page_with_the_same_filter(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan(
        "ListErasures",
        ListErasuresResponse(erasures=[Erasure(id=3), Erasure(id=2)], next_page_token="a"),
        ListErasuresResponse(erasures=[Erasure(id=1)]),
    )

    ids = [entry.id for entry in client.iter_erasures(user_id="alice", page_size=2)]

    assert ids == [3, 2, 1]
    assert [
        (r.user_id, r.page_size, r.page_token)  # type: ignore[attr-defined]
        for r in servicer.requests("ListErasures")
    ] == [("alice", 2, ""), ("alice", 2, "a")]


def user_data(**fields: object) -> feedback_service_pb2.ExportUserDataResponse:
    return feedback_service_pb2.ExportUserDataResponse(**fields)  # type: ignore[arg-type]


def test_export_user_data_yields_each_record_with_its_kind_in_stream_order(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan(
        "ExportUserData",
        Stream(
            [
                user_data(interactions=[Interaction(id=1), Interaction(id=2)]),
                user_data(feedback=[Feedback(id=3)]),
                user_data(replaced_votes=[Feedback(id=4, replaced_by_id=3)]),
                user_data(events=[Event(id=5)]),
                user_data(events=[Event(id=6)]),
            ]
        ),
    )

    records = list(client.export_user_data("alice"))

    assert [(kind, record.id) for kind, record in records] == [
        ("interaction", 1),
        ("interaction", 2),
        ("feedback", 3),
        ("replaced_vote", 4),
        ("event", 5),
        ("event", 6),
    ]
    assert all(isinstance(record, UserRecord) for record in records)
    assert only_user(servicer) == "alice"
    unbounded = servicer.calls["ExportUserData"][0].time_remaining
    assert unbounded is None or unbounded > 10**9  # no deadline unless given


def only_user(servicer: RecordingServicer) -> str:
    (request,) = servicer.requests("ExportUserData")
    assert isinstance(request, feedback_service_pb2.ExportUserDataRequest)
    return request.user_id


def test_export_user_data_is_retried_before_its_first_record(
    client: FeedbackClient, servicer: RecordingServicer, sleeps: list[float]
) -> None:
    servicer.plan(
        "ExportUserData",
        Abort(grpc.StatusCode.UNAVAILABLE),
        Stream([user_data(events=[Event(id=1)])]),
    )

    assert [record.record.id for record in client.export_user_data("alice")] == [1]
    assert len(servicer.requests("ExportUserData")) == 2
    assert len(sleeps) == 1


def test_export_user_data_is_not_resumed_after_a_record(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan(
        "ExportUserData",
        Stream(
            [user_data(interactions=[Interaction(id=1)])], then=Abort(grpc.StatusCode.UNAVAILABLE)
        ),
    )
    received: list[UserRecord] = []

    with pytest.raises(UnavailableError) as broken:
        received.extend(client.export_user_data("alice"))

    assert [record.record.id for record in received] == [1]
    assert len(servicer.requests("ExportUserData")) == 1
    assert any("export it again from the start" in note for note in broken.value.__notes__)
