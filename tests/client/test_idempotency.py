"""Request ids make retries safe: one id per write, the same on every attempt, stored once.

The fake service stores batch and ingest items by request_id (and event_id) as the real one does,
and can fail a call after storing its items, as when the connection drops after the commit.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from llmfeedback import (
    BatchResult,
    DeadlineExceededError,
    EventItem,
    Feedback,
    FeedbackClient,
    FeedbackItem,
    IngestResult,
    InteractionItem,
    ItemResult,
    RetryPolicy,
)
from llmfeedback.proto.feedback.v1 import batch_pb2, feedback_service_pb2

from .fake_service import Abort, Reply, Stall, rich_status

if TYPE_CHECKING:
    from collections.abc import Callable

    from google.protobuf.message import Message

    from .fake_service import RecordingServicer

UNAVAILABLE = Abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
LOST_ANSWER = Abort(grpc.StatusCode.UNAVAILABLE, "connection reset", after_storing=True)
OCCURRED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
GIVEN_ID = "6F9619FF-8B86-D011-B42D-00C04FC964FF"

WRITES: list[tuple[str, Callable[[FeedbackClient], object]]] = [
    ("RecordInteraction", lambda client: client.record_interaction("conv-1")),
    ("SubmitFeedback", lambda client: client.submit_feedback("conv-1", score=4)),
    ("LogEvent", lambda client: client.log_event("alice", "click")),
]


def request_ids(servicer: RecordingServicer, method: str) -> list[str]:
    return [request.request_id for request in servicer.requests(method)]  # type: ignore[attr-defined]


def sent_times(requests: list[Any]) -> list[datetime]:
    return [request.sent_time.ToDatetime(tzinfo=UTC) for request in requests]


def log_events_items(servicer: RecordingServicer) -> list[feedback_service_pb2.LogEventRequest]:
    return [
        item
        for item in servicer.received_items("LogEvents")
        if isinstance(item, feedback_service_pb2.LogEventRequest)
    ]


@pytest.mark.parametrize(("method", "write"), WRITES)
def test_every_retry_of_a_write_sends_the_same_request_id(
    client: FeedbackClient,
    servicer: RecordingServicer,
    method: str,
    write: Callable[[FeedbackClient], object],
) -> None:
    servicer.plan(method, UNAVAILABLE, LOST_ANSWER)

    write(client)

    first, *retries = request_ids(servicer, method)
    assert len(retries) == 2
    assert retries == [first, first]
    assert str(uuid.UUID(first)) == first


@pytest.mark.parametrize(("method", "write"), WRITES)
def test_each_call_gets_its_own_request_id(
    client: FeedbackClient,
    servicer: RecordingServicer,
    method: str,
    write: Callable[[FeedbackClient], object],
) -> None:
    write(client)
    write(client)

    first, second = request_ids(servicer, method)
    assert first != second


def test_request_ids_and_event_ids_given_by_the_caller_are_sent_as_given(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    client.record_interaction("conv-1", request_id=GIVEN_ID)
    client.submit_feedback("conv-1", score=4, request_id=GIVEN_ID)
    client.log_event("alice", "click", event_id="evt-1", request_id=GIVEN_ID)
    client.log_events([EventItem("alice", "click", event_id="evt-2", request_id=GIVEN_ID)])

    for method in ("RecordInteraction", "SubmitFeedback", "LogEvent"):
        assert request_ids(servicer, method) == [GIVEN_ID], method
    (single,) = servicer.requests("LogEvent")
    assert isinstance(single, feedback_service_pb2.LogEventRequest)
    assert single.event_id == "evt-1"
    (item,) = log_events_items(servicer)
    assert (item.request_id, item.event_id) == (GIVEN_ID, "evt-2")


@pytest.mark.parametrize(
    ("request_id", "error_type"),
    [
        ("not-a-uuid", ValueError),
        ("6f9619ff8b86d011b42d00c04fc964ff", ValueError),  # the service takes only hyphens
        ("{6f9619ff-8b86-d011-b42d-00c04fc964ff}", ValueError),
        ("6f9619ff8b86d011b42d00c04fc964ff----", ValueError),
        (uuid.UUID(GIVEN_ID), TypeError),
    ],
)
def test_a_malformed_request_id_is_refused_before_any_call(
    client: FeedbackClient,
    servicer: RecordingServicer,
    request_id: Any,
    error_type: type[Exception],
) -> None:
    with pytest.raises(error_type, match="request_id must be"):
        client.log_event("alice", "click", request_id=request_id)
    with pytest.raises(error_type, match="request_id must be"):
        FeedbackItem("conv-1", score=1, request_id=request_id)

    assert servicer.requests("LogEvent") == []


def test_items_get_their_request_id_when_made_and_keep_it() -> None:
    items: list[InteractionItem | FeedbackItem | EventItem] = [
        InteractionItem("conv-1"),
        FeedbackItem("conv-1", score=5),
        EventItem("alice", "click"),
        EventItem("alice", "click"),
    ]

    ids = [item.request_id for item in items]
    assert all(isinstance(value, str) and uuid.UUID(value) for value in ids)
    assert len(set(ids)) == 4
    assert [item._request.request_id for item in items] == ids
    # Two events with the same content are two records, so they are not equal.
    assert items[2] != items[3]


@pytest.mark.parametrize(
    ("method", "send"),
    [
        ("RecordInteractions", lambda client, items: client.record_interactions(items)),
        ("SubmitFeedbackBatch", lambda client, items: client.submit_feedback_batch(items)),
        ("LogEvents", lambda client, items: client.log_events(items)),
    ],
)
def test_batch_retries_send_each_item_with_its_own_unchanged_request_id(
    client: FeedbackClient,
    servicer: RecordingServicer,
    method: str,
    send: Callable[[FeedbackClient, list[Any]], BatchResult],
) -> None:
    makers: dict[str, Callable[[int], Any]] = {
        "RecordInteractions": lambda n: {"conversation_id": f"conv-{n}"},
        "SubmitFeedbackBatch": lambda n: {"conversation_id": f"conv-{n}", "score": 3},
        "LogEvents": lambda n: {"user_id": f"user-{n}", "event_type": "click"},
    }
    servicer.plan(method, UNAVAILABLE)

    result = send(client, [makers[method](n) for n in range(3)])

    first, second = (
        [item.request_id for item in batch]  # type: ignore[attr-defined]
        for batch in (
            servicer.received_items(method)[:3],
            servicer.received_items(method)[3:],
        )
    )
    assert first == second
    assert len(set(first)) == 3
    assert result.accepted_count == 3


def test_items_rejected_as_transient_are_re_sent_with_their_request_id(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    def shard_down_for_bob(request: Message) -> Message:
        assert isinstance(request, feedback_service_pb2.LogEventsRequest)
        unavailable = rich_status(grpc.StatusCode.UNAVAILABLE, "shard down")
        return feedback_service_pb2.LogEventsResponse(
            results=[
                batch_pb2.BatchItemResult(
                    index=index, outcome=batch_pb2.ITEM_OUTCOME_REJECTED, error=unavailable
                )
                if event.user_id == "bob"
                else batch_pb2.BatchItemResult(
                    index=index, outcome=batch_pb2.ITEM_OUTCOME_ACCEPTED, id=50 + index
                )
                for index, event in enumerate(request.events)
            ]
        )

    servicer.plan("LogEvents", Reply(shard_down_for_bob))
    items = [EventItem("alice", "click"), EventItem("bob", "click")]

    result = client.log_events(items)

    sent = log_events_items(servicer)
    assert [event.user_id for event in sent] == ["alice", "bob", "bob"]
    assert sent[1].request_id == sent[2].request_id == items[1].request_id
    assert [item.accepted for item in result] == [True, True]


def test_an_answer_lost_after_the_commit_comes_back_as_duplicates_stored_once(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("LogEvents", LOST_ANSWER)
    items = [EventItem(f"user-{n}", "click") for n in range(3)]

    result = client.log_events(items)

    assert [(item.accepted, item.duplicate, item.id) for item in result] == [
        (True, True, 1),
        (True, True, 2),
        (True, True, 3),
    ]
    assert (result.accepted_count, result.duplicate_count, result.rejected_count) == (3, 3, 0)
    # Two calls carried the items, but each was stored once.
    assert len(servicer.requests("LogEvents")) == 2
    assert len(servicer.stored_ids) == 3


def test_sending_the_same_items_again_stores_nothing_new(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    items = [FeedbackItem("conv-1", score=5), FeedbackItem("conv-2", score=1)]
    first = client.submit_feedback_batch(items)

    again = client.submit_feedback_batch([*items, FeedbackItem("conv-3", score=3)])

    assert (first.duplicate_count, again.duplicate_count, again.accepted_count) == (0, 2, 3)
    assert [item.id for item in again] == [*(item.id for item in first), 3]
    assert [item.duplicate for item in again] == [True, True, False]
    assert again.rejected == ()


def test_an_event_id_stored_before_is_a_duplicate_whatever_its_request_id(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    client.log_events([EventItem("alice", "click", event_id="evt-7")])
    again = EventItem("alice", "click", event_id="evt-7")

    result = client.log_events([again])

    expected = ItemResult(0, accepted=True, id=1, duplicate=True, request_id=again.request_id)
    assert result.results == (expected,)


def test_a_duplicate_is_counted_as_accepted_in_a_batch_result() -> None:
    result = BatchResult(
        (
            ItemResult(0, accepted=True, id=4),
            ItemResult(1, accepted=True, id=2, duplicate=True),
            ItemResult(2, accepted=False),
        )
    )

    assert (result.accepted_count, result.duplicate_count, result.rejected_count) == (2, 1, 1)
    assert [item.index for item in result.rejected] == [2]


def test_ingest_counts_items_stored_by_an_earlier_load_as_accepted_duplicates(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    items: list[InteractionItem | FeedbackItem | EventItem] = [
        InteractionItem("conv-1", message_id="msg-1"),
        EventItem("alice", "click"),
    ]
    client.ingest(items)

    result = client.ingest([*items, FeedbackItem(message_id="msg-1", score=5)])

    assert result == IngestResult(
        received_count=3, accepted_count=3, rejected_count=0, rejections=(), duplicate_count=2
    )


def test_writes_that_say_when_they_happened_carry_a_fresh_sent_time_on_each_attempt(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("RecordInteraction", UNAVAILABLE)
    servicer.plan("LogEvent", UNAVAILABLE)
    before = datetime.now(UTC)

    client.record_interaction("conv-1", occur_time=OCCURRED)
    client.log_event("alice", "click", event_time=OCCURRED)

    for method in ("RecordInteraction", "LogEvent"):
        requests: list[Any] = servicer.requests(method)
        first, second = sent_times(requests)
        assert before <= first < second <= datetime.now(UTC), method
        assert requests[0].request_id == requests[1].request_id, method
        # occur_time and event_time stay what the caller said; only the server corrects them.
        assert {happened(request) for request in requests} == {OCCURRED}, method


def happened(request: Any) -> datetime:
    if isinstance(request, feedback_service_pb2.RecordInteractionRequest):
        return request.occur_time.ToDatetime(tzinfo=UTC)
    assert isinstance(request, feedback_service_pb2.LogEventRequest)
    return request.event_time.ToDatetime(tzinfo=UTC)


def test_writes_without_their_time_carry_no_sent_time(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    client.record_interaction("conv-1")
    client.log_event("alice", "click")
    client.log_events([EventItem("alice", "click")])
    client.ingest([InteractionItem("conv-1"), EventItem("alice", "click")])

    requests: list[Any] = [
        *servicer.requests("RecordInteraction"),
        *servicer.requests("LogEvent"),
        *log_events_items(servicer),
        servicer.ingested[0].interaction,
        servicer.ingested[1].event,
    ]
    assert [request.HasField("sent_time") for request in requests] == [False] * 5


def test_batch_items_get_a_fresh_sent_time_on_each_attempt_without_changing_the_items(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("RecordInteractions", UNAVAILABLE)
    items = [InteractionItem("conv-1", occur_time=OCCURRED), InteractionItem("conv-2")]

    client.record_interactions(items)

    sent: list[Any] = servicer.received_items("RecordInteractions")
    assert [request.HasField("sent_time") for request in sent] == [True, False, True, False]
    first, second = sent_times([sent[0], sent[2]])
    assert first < second
    assert not any(item._request.HasField("sent_time") for item in items)


def test_ingest_items_carry_sent_time_and_request_id(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    before = datetime.now(UTC)
    items: list[InteractionItem | FeedbackItem | EventItem] = [
        InteractionItem("conv-1", occur_time=OCCURRED),
        EventItem("alice", "click", event_time=OCCURRED),
    ]

    client.ingest(items)

    interaction, event = servicer.ingested[0].interaction, servicer.ingested[1].event
    assert before <= min(sent_times([interaction, event]))
    assert [interaction.request_id, event.request_id] == [item.request_id for item in items]
    assert not any(item._request.HasField("sent_time") for item in items)  # type: ignore[arg-type]


def test_the_batcher_counts_events_stored_before_a_lost_answer_once(
    address: str, servicer: RecordingServicer
) -> None:
    servicer.plan("LogEvents", LOST_ANSWER)
    policy = RetryPolicy(initial_backoff=0.01)

    with FeedbackClient(address, retry=policy) as client:
        batcher = client.event_batcher(flush_interval=60)
        batcher.log("alice", "click", event_id="evt-1")
        batcher.log("bob", "click", request_id=GIVEN_ID)
        assert batcher.flush(timeout=5)
        stats = batcher.stats

    assert (stats.accepted, stats.duplicates, stats.rejected) == (2, 2, 0)
    first, second = (
        [(item.request_id, item.event_id, item.HasField("sent_time")) for item in call.events]  # type: ignore[attr-defined]
        for call in servicer.requests("LogEvents")
    )
    assert first == second
    assert [event_id for _, event_id, _ in first] == ["evt-1", ""]
    assert first[1][0] == GIVEN_ID
    assert all(has_sent_time for _, _, has_sent_time in first)
    assert len(servicer.stored_ids) == 3  # alice by request and event id, bob by request id


def test_the_batcher_retries_an_attempt_that_ran_out_of_its_own_time(
    address: str, servicer: RecordingServicer
) -> None:
    # The first attempt outlives its 0.2 s and is stored anyway; the retry, long after, finds it.
    servicer.plan("LogEvents", Stall(0.4))
    policy = RetryPolicy(initial_backoff=0.6, jitter=lambda bound: bound)
    rejected: list[Exception] = []

    with FeedbackClient(address, timeout=0.2, retry=policy) as client:
        batcher = client.event_batcher(
            flush_interval=60, on_rejected=lambda _, error: rejected.append(error)
        )
        batcher.log("alice", "click")
        assert batcher.flush(timeout=5)
        stats = batcher.stats

    assert rejected == []
    assert (stats.accepted, stats.duplicates) == (1, 1)
    assert len(servicer.requests("LogEvents")) == 2


def test_a_batch_call_that_used_all_its_time_is_not_retried(
    client: FeedbackClient, servicer: RecordingServicer, sleeps: list[float]
) -> None:
    servicer.plan("LogEvents", Stall(0.5))

    with pytest.raises(DeadlineExceededError):
        client.log_events([EventItem("alice", "click")], timeout=0.2)

    assert sleeps == []
    assert len(servicer.requests("LogEvents")) == 1


def test_list_feedback_history_returns_the_votes_oldest_first(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    replaced_at = timestamp_pb2.Timestamp(seconds=1_714_564_800)
    votes = [
        Feedback(id=3, message_id="msg-1", user_id="alice", score=2, replaced_by_id=8),
        Feedback(id=8, message_id="msg-1", user_id="alice", score=5, replaces_id=3),
    ]
    votes[0].replace_time.CopyFrom(replaced_at)
    servicer.plan(
        "ListFeedbackHistory",
        UNAVAILABLE,
        feedback_service_pb2.ListFeedbackHistoryResponse(feedback=votes),
    )

    history = client.list_feedback_history("msg-1", "alice", timeout=3)

    assert history == votes
    assert isinstance(history, list)
    requests = servicer.requests("ListFeedbackHistory")
    assert (
        requests
        == [feedback_service_pb2.ListFeedbackHistoryRequest(message_id="msg-1", user_id="alice")]
        * 2
    )
    assert client.list_feedback_history("msg-2", "bob") == []


def test_generated_request_ids_are_uuid7_and_grow_with_time() -> None:
    """Time-ordered ids keep the server's request-id index inserts on a few hot pages."""
    import time
    import uuid

    from llmfeedback._request_ids import new_request_id

    first = new_request_id()
    time.sleep(0.002)
    later = [new_request_id() for _ in range(100)]
    parsed = [uuid.UUID(value) for value in [first, *later]]
    assert {(value.version, value.variant) for value in parsed} == {(7, uuid.RFC_4122)}
    assert len(set(later)) == 100
    assert all(first < value for value in later)
    assert abs((parsed[0].int >> 80) - time.time_ns() // 1_000_000) < 1000
