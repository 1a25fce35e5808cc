"""Batch methods: items checked like single calls, per-item results, splitting and retries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from llmfeedback import (
    BatchResult,
    EventItem,
    FeedbackClient,
    FeedbackItem,
    InteractionItem,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RetryPolicy,
    UnavailableError,
    UnexpectedStatusError,
    compute_hash,
    error_from_status,
)
from llmfeedback.proto.feedback.v1 import batch_pb2, feedback_service_pb2

from .fake_service import Abort, Reply, Stall, rich_status

if TYPE_CHECKING:
    from collections.abc import Callable

    from .fake_service import RecordingServicer

ACCEPTED = batch_pb2.ITEM_OUTCOME_ACCEPTED
REJECTED = batch_pb2.ITEM_OUTCOME_REJECTED


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def bad_event_type(item: Message) -> status_pb2.Status | None:
    """Reject events of type "bad" the way the real server rejects an invalid field."""
    assert isinstance(item, feedback_service_pb2.LogEventRequest)
    if item.event_type != "bad":
        return None
    violation = error_details_pb2.BadRequest.FieldViolation(
        field="event_type", description="not an allowed event type"
    )
    return rich_status(
        grpc.StatusCode.INVALID_ARGUMENT,
        "event_type: not an allowed event type",
        error_details_pb2.BadRequest(field_violations=[violation]),
    )


def events_sent(servicer: RecordingServicer) -> list[list[str]]:
    """The user_ids of each LogEvents call, one list per call."""
    calls = servicer.requests("LogEvents")
    return [
        [event.user_id for event in call.events]
        for call in calls
        if isinstance(call, feedback_service_pb2.LogEventsRequest)
    ]


def test_every_item_gets_its_result_with_id_or_mapped_error(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.verdict = bad_event_type

    result = client.log_events(
        [
            EventItem("alice", "page_view", details={"path": "/"}),
            {"user_id": "bob", "event_type": "bad"},
            EventItem("carol", "click"),
        ]
    )

    assert isinstance(result, BatchResult)
    assert (result.accepted_count, result.rejected_count, len(result)) == (2, 1, 3)
    first, second, third = result.results
    assert (first.index, first.accepted, first.id, first.error) == (0, True, 1, None)
    assert (third.index, third.accepted, third.id) == (2, True, 2)
    assert (second.index, second.accepted, second.id) == (1, False, 0)
    assert isinstance(second.error, InvalidArgumentError)
    assert second.error.message == "event_type: not an allowed event type"
    assert [violation.field for violation in second.error.field_violations] == ["event_type"]
    assert result.rejected == (second,)
    assert events_sent(servicer) == [["alice", "bob", "carol"]]


def test_rich_details_of_a_rejected_item_map_to_the_single_call_error(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    missing = error_details_pb2.ResourceInfo(resource_type="message", resource_name="msg-9")
    servicer.verdict = lambda _: rich_status(grpc.StatusCode.NOT_FOUND, "no msg-9", missing)

    (only,) = client.submit_feedback_batch([FeedbackItem(message_id="msg-9", score=4)])

    assert isinstance(only.error, NotFoundError)
    assert (only.error.resource_type, only.error.resource_name) == ("message", "msg-9")


def test_items_send_exactly_the_request_of_the_single_item_method(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    occurred = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    interaction = {
        "message_id": "msg-1",
        "input_text": "Capital of France?",
        "output_hash": compute_hash("Paris."),
        "latency_ms": 0.0,
        "prompt_tokens": 0,
        "metadata": {"app": "demo"},
        "occur_time": occurred,
    }
    client.record_interaction("conv-1", **interaction)  # type: ignore[arg-type]
    client.record_interactions([{"conversation_id": "conv-1", **interaction}])
    client.submit_feedback("conv-1", thumb=False, text="meh", tokens_used=0)
    client.submit_feedback_batch([FeedbackItem("conv-1", thumb=False, text="meh", tokens_used=0)])
    client.log_event("alice", "click", details={"n": 1}, event_time=occurred)
    client.log_events([EventItem("alice", "click", details={"n": 1}, event_time=occurred)])

    for single, batch, field in (
        ("RecordInteraction", "RecordInteractions", "interactions"),
        ("SubmitFeedback", "SubmitFeedbackBatch", "feedback"),
        ("LogEvent", "LogEvents", "events"),
    ):
        single_request: Any
        (single_request,) = servicer.requests(single)
        (batch_request,) = servicer.requests(batch)
        (batch_item,) = getattr(batch_request, field)
        # Each write has its own request id and send time; everything else is the same.
        assert batch_item.request_id != single_request.request_id, single
        for request in (single_request, batch_item):
            assert request.request_id, single
            request.ClearField("request_id")
            if single != "SubmitFeedback":
                assert request.HasField("sent_time"), single
                request.ClearField("sent_time")
        assert batch_item == single_request, single


@pytest.mark.parametrize(
    ("make_item", "error_type", "match"),
    [
        (lambda: FeedbackItem("conv-1", score=5, thumb=True), ValueError, "exactly one"),
        (lambda: FeedbackItem("conv-1", score=True), TypeError, "score must be an int"),
        (lambda: InteractionItem("c", input_text="a", input_hash="b"), ValueError, "not both"),
        (lambda: EventItem("u", "t", event_time=datetime(2024, 5, 1)), ValueError, "aware"),
        (lambda: EventItem("u", "t", details={"x": object()}), TypeError, "details"),
    ],
)
def test_items_run_the_local_checks_when_made(
    make_item: Callable[[], object], error_type: type[Exception], match: str
) -> None:
    with pytest.raises(error_type, match=match):
        make_item()


def test_a_bad_mapping_fails_before_any_call_naming_its_position(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    with pytest.raises(ValueError, match=r"^item 1: give exactly one of score"):
        client.submit_feedback_batch(
            [{"conversation_id": "c", "score": 1}, {"conversation_id": "c"}]
        )
    with pytest.raises(TypeError, match=r"^item 0 must be a EventItem or a mapping"):
        client.log_events([FeedbackItem("c", score=1)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"^item 0: .*unexpected keyword argument 'userId'"):
        client.log_events([{"userId": "alice", "event_type": "click"}])

    assert servicer.requests("SubmitFeedbackBatch") == []
    assert servicer.requests("LogEvents") == []


def test_empty_input_makes_no_call(client: FeedbackClient, servicer: RecordingServicer) -> None:
    result = client.log_events([])

    assert (len(result), result.accepted_count, result.rejected_count) == (0, 0, 0)
    assert servicer.requests("LogEvents") == []


def test_large_texts_are_hashed_so_the_interaction_fits_a_batch_item() -> None:
    long_prompt = "context " * 10_000

    item = InteractionItem("conv-1", input_text=long_prompt, output_text="short answer")

    assert item._request.input_hash == compute_hash(long_prompt)
    assert item._request.output_hash == compute_hash("short answer")
    assert item.input_text == long_prompt
    small = InteractionItem("conv-1", input_text="short prompt")
    assert small._request.input_text == "short prompt"


def test_an_item_over_64_kib_is_refused_naming_its_heaviest_field() -> None:
    with pytest.raises(ValueError, match=r"more than the 65536 .* details alone takes"):
        EventItem("alice", "upload", details={"blob": "x" * 70_000})


def test_more_than_1000_items_are_split_keeping_indices(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.verdict = bad_event_type
    bad = {5, 1500, 2499}
    events = [
        EventItem(f"user-{index}", "bad" if index in bad else "click") for index in range(2500)
    ]

    result = client.log_events(events)

    assert [len(call) for call in events_sent(servicer)] == [1000, 1000, 500]
    assert [result.index for result in result.results] == list(range(2500))
    assert {rejected.index for rejected in result.rejected} == bad
    assert result.accepted_count == 2497
    accepted_ids = [result.id for result in result.results if result.accepted]
    assert accepted_ids == sorted(accepted_ids)


def test_batches_are_also_split_by_size(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    events = [
        EventItem(f"user-{index}", "upload", details={"blob": "x" * 30_000}) for index in range(200)
    ]

    result = client.log_events(events)

    assert result.accepted_count == 200
    requests = servicer.requests("LogEvents")
    assert len(requests) == 2
    assert all(request.ByteSize() < 4 * 1024 * 1024 for request in requests)
    assert sum(len(call) for call in events_sent(servicer)) == 200


def test_whole_call_resource_exhausted_is_retried_after_its_retry_info(
    client: FeedbackClient, servicer: RecordingServicer, sleeps: list[float]
) -> None:
    servicer.plan(
        "LogEvents",
        Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "write queue full", [retry_info(3)]),
    )

    result = client.log_events([EventItem("alice", "click"), EventItem("bob", "click")])

    assert result.accepted_count == 2
    assert sleeps == [3.0]
    assert events_sent(servicer) == [["alice", "bob"], ["alice", "bob"]]


def reject_some(outcomes: dict[int, status_pb2.Status]) -> Reply:
    """A planned answer accepting every item except those at the given positions."""

    def build(request: Message) -> Message:
        assert isinstance(request, feedback_service_pb2.LogEventsRequest)
        results = [
            batch_pb2.BatchItemResult(index=index, outcome=REJECTED, error=outcomes[index])
            if index in outcomes
            else batch_pb2.BatchItemResult(index=index, outcome=ACCEPTED, id=100 + index)
            for index in range(len(request.events))
        ]
        return feedback_service_pb2.LogEventsResponse(results=results)

    return Reply(build)


def test_only_items_rejected_as_unavailable_are_sent_again(
    client: FeedbackClient, servicer: RecordingServicer, sleeps: list[float]
) -> None:
    servicer.plan(
        "LogEvents",
        reject_some(
            {
                1: rich_status(grpc.StatusCode.UNAVAILABLE, "shard down"),
                2: rich_status(grpc.StatusCode.INVALID_ARGUMENT, "bad user_id"),
                3: rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", retry_info(0.5)),
            }
        ),
    )
    users = ["u0", "u1", "u2", "u3", "u4"]

    result = client.log_events([EventItem(user, "click") for user in users])

    assert events_sent(servicer) == [users, ["u1", "u3"]]
    # The longest RetryInfo among the failed items beats the 0.1 s backoff.
    assert sleeps == [0.5]
    assert [(item.index, item.accepted) for item in result] == [
        (0, True),
        (1, True),
        (2, False),
        (3, True),
        (4, True),
    ]
    assert [item.id for item in result] == [100, 1, 0, 2, 104]
    assert isinstance(result.results[2].error, InvalidArgumentError)


def test_suppressed_items_are_settled_with_no_error_and_never_sent_again(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    def answer(request: Message) -> Message:
        assert isinstance(request, feedback_service_pb2.LogEventsRequest)
        results = [
            batch_pb2.BatchItemResult(index=0, outcome=ACCEPTED, id=100),
            batch_pb2.BatchItemResult(index=1, outcome=batch_pb2.ITEM_OUTCOME_SUPPRESSED),
            batch_pb2.BatchItemResult(
                index=2,
                outcome=REJECTED,
                error=rich_status(grpc.StatusCode.UNAVAILABLE, "shard down"),
            ),
        ]
        return feedback_service_pb2.LogEventsResponse(results=results, suppressed_count=1)

    servicer.plan("LogEvents", Reply(answer))

    result = client.log_events([EventItem(user, "click") for user in ("u0", "opted-out", "u2")])

    assert events_sent(servicer) == [["u0", "opted-out", "u2"], ["u2"]]
    suppressed = result.results[1]
    assert (suppressed.accepted, suppressed.suppressed, suppressed.id) == (False, True, 0)
    assert suppressed.error is None
    assert suppressed.request_id
    assert (result.accepted_count, result.rejected_count, result.suppressed_count) == (2, 0, 1)
    assert result.rejected == ()
    assert result.suppressed == (suppressed,)


def test_items_still_unavailable_after_the_retries_are_reported(
    address: str, servicer: RecordingServicer
) -> None:
    def always_down(item: Message) -> status_pb2.Status | None:
        assert isinstance(item, feedback_service_pb2.LogEventRequest)
        if item.user_id == "down":
            return rich_status(grpc.StatusCode.UNAVAILABLE, "shard down")
        return None

    servicer.verdict = always_down
    policy = RetryPolicy(max_attempts=3, sleep=lambda _: None)

    with FeedbackClient(address, retry=policy) as client:
        result = client.log_events([EventItem("up", "click"), EventItem("down", "click")])

    assert events_sent(servicer) == [["up", "down"], ["down"], ["down"]]
    assert result.results[0].accepted
    assert isinstance(result.results[1].error, UnavailableError)


def test_a_call_failing_for_good_raises_with_the_results_settled_so_far(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("LogEvents", Stall(0), Abort(grpc.StatusCode.PERMISSION_DENIED, "no writes"))

    with pytest.raises(PermissionDeniedError) as raised:
        client.log_events([EventItem(f"user-{index}", "click") for index in range(1500)])

    partial = raised.value.batch_result
    assert partial is not None
    assert len(partial) == partial.accepted_count == 1000
    assert [item.index for item in partial] == list(range(1000))
    assert len(servicer.requests("LogEvents")) == 2


def test_unavailable_batches_raise_after_the_retries(
    client: FeedbackClient, servicer: RecordingServicer, sleeps: list[float]
) -> None:
    servicer.plan("RecordInteractions", *[Abort(grpc.StatusCode.UNAVAILABLE, "db down")] * 5)

    with pytest.raises(UnavailableError) as raised:
        client.record_interactions([InteractionItem("conv-1")])

    assert len(servicer.requests("RecordInteractions")) == 5
    assert len(sleeps) == 4
    assert raised.value.batch_result == BatchResult(())


def test_an_item_the_server_left_out_is_reported_not_assumed_stored(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    only_first = feedback_service_pb2.LogEventsResponse(
        results=[batch_pb2.BatchItemResult(index=0, outcome=ACCEPTED, id=7)]
    )
    servicer.plan("LogEvents", only_first)

    result = client.log_events([EventItem("alice", "click"), EventItem("bob", "click")])

    assert result.results[0].accepted
    assert isinstance(result.results[1].error, UnexpectedStatusError)
    assert "no result" in result.results[1].error.message


def test_batch_methods_refuse_a_closed_client(address: str) -> None:
    client = FeedbackClient(address)
    client.close()

    with pytest.raises(RuntimeError, match="closed"):
        client.log_events([EventItem("alice", "click")])


@pytest.mark.parametrize("code_number", [0, 99])
def test_a_status_without_a_failure_code_maps_to_unknown(code_number: int) -> None:
    error = error_from_status(status_pb2.Status(code=code_number, message="odd"))

    assert isinstance(error, UnexpectedStatusError)
    assert (error.code, error.message) == (grpc.StatusCode.UNKNOWN, "odd")
