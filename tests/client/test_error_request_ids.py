"""A failed write names its request id, so the caller can retry it once the client has given up.

DEADLINE_EXCEEDED, UNAVAILABLE and CANCELLED on a write leave its outcome unknown; sending it again
under the same request id stores it at most once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest

from llmfeedback import (
    DeadlineExceededError,
    EventItem,
    FeedbackClient,
    FeedbackError,
    FeedbackItem,
    InvalidArgumentError,
    RetryPolicy,
    UnavailableError,
    UnexpectedStatusError,
)

from .fake_service import Abort, Stall, rich_status

if TYPE_CHECKING:
    from collections.abc import Callable

    from google.protobuf.message import Message
    from google.rpc import status_pb2

    from .fake_service import RecordingServicer

NO_RETRIES = RetryPolicy(max_attempts=1)

# Each single write, called with and without a request id of the caller's.
WRITES: list[tuple[str, Callable[[FeedbackClient, str | None], object]]] = [
    (
        "RecordInteraction",
        lambda client, request_id: client.record_interaction(
            "conv-1", message_id="msg-1", request_id=request_id, timeout=0.3
        ),
    ),
    (
        "SubmitFeedback",
        lambda client, request_id: client.submit_feedback(
            "conv-1", score=4, request_id=request_id, timeout=0.3
        ),
    ),
    (
        "LogEvent",
        lambda client, request_id: client.log_event(
            "alice", "click", request_id=request_id, timeout=0.3
        ),
    ),
]


def request_ids(servicer: RecordingServicer, method: str) -> list[str]:
    """The request id of every request a single-write method received, in order."""
    return [request.request_id for request in servicer.requests(method)]  # type: ignore[attr-defined]


def item_request_ids(servicer: RecordingServicer, method: str) -> list[str]:
    """The request id of every item a batch method received, in order, re-sent items included."""
    return [item.request_id for item in servicer.received_items(method)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("method", "write"), WRITES)
def test_a_timed_out_write_is_retried_in_one_line_with_its_request_id(
    client: FeedbackClient,
    servicer: RecordingServicer,
    method: str,
    write: Callable[[FeedbackClient, str | None], object],
) -> None:
    servicer.plan(method, Stall(1.0))

    with pytest.raises(DeadlineExceededError) as raised:
        write(client, None)
    write(client, raised.value.request_id)

    first, retry = request_ids(servicer, method)
    assert raised.value.request_id == first
    assert retry == first


@pytest.mark.parametrize(
    "failure",
    [
        Abort(grpc.StatusCode.UNAVAILABLE, "connection reset"),
        Abort(grpc.StatusCode.CANCELLED, "server stopping"),
        Abort(grpc.StatusCode.INVALID_ARGUMENT, "bad"),
        Abort(grpc.StatusCode.UNAUTHENTICATED, "no key"),
    ],
)
@pytest.mark.parametrize(("method", "write"), WRITES)
def test_every_error_of_a_single_write_carries_its_request_id(
    address: str,
    servicer: RecordingServicer,
    method: str,
    write: Callable[[FeedbackClient, str | None], object],
    failure: Abort,
) -> None:
    servicer.plan(method, failure)

    with (
        FeedbackClient(address, retry=NO_RETRIES) as client,
        pytest.raises(FeedbackError) as raised,
    ):
        write(client, None)

    assert raised.value.code == failure.code
    assert [raised.value.request_id] == request_ids(servicer, method)


def test_the_request_id_the_caller_gave_is_the_one_on_the_error(
    address: str, servicer: RecordingServicer
) -> None:
    given = "0190f2a4-7d1e-7c3b-9f10-2b5d8e6a4c11"
    servicer.plan("LogEvent", Abort(grpc.StatusCode.UNAVAILABLE))

    with (
        FeedbackClient(address, retry=NO_RETRIES) as client,
        pytest.raises(UnavailableError) as raised,
    ):
        client.log_event("alice", "click", request_id=given)

    assert raised.value.request_id == given


def test_the_error_after_retries_carries_the_request_id_all_attempts_sent(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    unavailable = Abort(grpc.StatusCode.UNAVAILABLE)
    servicer.plan("SubmitFeedback", *[unavailable] * 5)

    with pytest.raises(UnavailableError) as raised:
        client.submit_feedback("conv-1", score=5)

    sent = request_ids(servicer, "SubmitFeedback")
    assert len(sent) == 5
    assert set(sent) == {raised.value.request_id}


def test_errors_of_reads_carry_no_request_id(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("GetStats", Abort(grpc.StatusCode.INTERNAL))

    with pytest.raises(FeedbackError) as raised:
        client.get_stats()

    assert (raised.value.request_id, raised.value.request_ids) == (None, None)


def test_a_failed_batch_names_the_request_id_of_every_input_item(
    address: str, servicer: RecordingServicer
) -> None:
    servicer.plan("LogEvents", Stall(0), Abort(grpc.StatusCode.UNAVAILABLE))
    events = [{"user_id": f"user-{index}", "event_type": "click"} for index in range(1500)]

    with (
        FeedbackClient(address, retry=NO_RETRIES) as client,
        pytest.raises(UnavailableError) as raised,
    ):
        client.log_events(events)

    error = raised.value
    sent = item_request_ids(servicer, "LogEvents")
    assert len(sent) == 1500
    assert error.request_ids == tuple(sent)
    assert error.batch_result is not None
    assert [result.request_id for result in error.batch_result] == sent[:1000]


def test_the_unsettled_items_of_a_failed_batch_are_sent_again_under_their_ids(
    address: str, servicer: RecordingServicer
) -> None:
    servicer.plan("RecordInteractions", Abort(grpc.StatusCode.DEADLINE_EXCEEDED))
    rows = [{"conversation_id": f"conv-{index}"} for index in range(3)]

    with FeedbackClient(address, retry=NO_RETRIES) as client:
        with pytest.raises(DeadlineExceededError) as raised:
            client.record_interactions(rows)
        assert raised.value.request_ids is not None
        again = [
            {**row, "request_id": request_id}
            for row, request_id in zip(rows, raised.value.request_ids, strict=True)
        ]
        client.record_interactions(again)

    sent = item_request_ids(servicer, "RecordInteractions")
    assert sent == [*raised.value.request_ids, *raised.value.request_ids]


def test_every_batch_result_carries_its_item_request_id_and_rejections_on_their_error(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    def verdict(item: Message) -> status_pb2.Status | None:
        score = getattr(item, "score", 0)
        return rich_status(grpc.StatusCode.INVALID_ARGUMENT, "bad score") if score == 3 else None

    servicer.verdict = verdict
    items = [FeedbackItem("conv-1", score=score) for score in (5, 3)]

    result = client.submit_feedback_batch(items)

    accepted, rejected = result.results
    assert [accepted.request_id, rejected.request_id] == [item.request_id for item in items]
    assert isinstance(rejected.error, InvalidArgumentError)
    assert rejected.error.request_id == items[1].request_id


def test_items_the_batcher_gives_up_on_carry_their_request_id(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("LogEvents", Abort(grpc.StatusCode.INTERNAL, "bug"))
    given_up: list[tuple[EventItem, FeedbackError]] = []

    with client.event_batcher(on_rejected=lambda item, error: given_up.append((item, error))) as b:
        b.log("alice", "click")

    ((item, error),) = given_up
    assert error.code == grpc.StatusCode.INTERNAL
    assert [item.request_id] == item_request_ids(servicer, "LogEvents")


def test_unexpected_statuses_on_writes_carry_the_request_id_too(
    address: str, servicer: RecordingServicer
) -> None:
    servicer.plan("LogEvent", Abort(grpc.StatusCode.UNIMPLEMENTED, "old server"))

    with (
        FeedbackClient(address, retry=NO_RETRIES) as client,
        pytest.raises(UnexpectedStatusError) as raised,
    ):
        client.log_event("alice", "click")

    assert [raised.value.request_id] == request_ids(servicer, "LogEvent")
