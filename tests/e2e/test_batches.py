"""Batch RPCs and Ingest on a real server: per-item results, limits, totals, backpressure."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from llmfeedback.proto.feedback.v1 import batch_pb2
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from server.config import Settings
from tests.server_harness import ServerThread

ACCEPTED = batch_pb2.ITEM_OUTCOME_ACCEPTED
REJECTED = batch_pb2.ITEM_OUTCOME_REJECTED


@pytest.fixture
def stub(server: ServerThread) -> Iterator[FeedbackServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield FeedbackServiceStub(channel)


def _fields(status: status_pb2.Status) -> list[str]:
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    return [violation.field for violation in bad_request.field_violations]


def _event(n: int, *, user_id: str = "", event_type: str = "page_view") -> pb.LogEventRequest:
    return pb.LogEventRequest(user_id=user_id or f"user-{n}", event_type=event_type)


def test_log_events_answers_each_item_in_order(stub: FeedbackServiceStub) -> None:
    events = [_event(0), _event(1, event_type=""), _event(2), _event(3, user_id="bad user")]

    response = stub.LogEvents(pb.LogEventsRequest(events=events), timeout=10)

    assert [r.index for r in response.results] == [0, 1, 2, 3]
    assert [r.outcome for r in response.results] == [ACCEPTED, REJECTED, ACCEPTED, REJECTED]
    assert (response.accepted_count, response.rejected_count) == (2, 2)
    assert 0 < response.results[0].id < response.results[2].id
    assert response.results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert _fields(response.results[1].error) == ["event_type"]
    assert _fields(response.results[3].error) == ["user_id"]
    stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
    assert stats.events.total_count == 2


def test_feedback_batch_reports_not_found_per_item(stub: FeedbackServiceStub) -> None:
    stub.RecordInteraction(pb.RecordInteractionRequest(conversation_id="known"), timeout=10)
    feedback = [
        pb.SubmitFeedbackRequest(conversation_id="known", score=5),
        pb.SubmitFeedbackRequest(conversation_id="unknown", score=5),
        pb.SubmitFeedbackRequest(conversation_id="known", score=9),
    ]

    response = stub.SubmitFeedbackBatch(
        pb.SubmitFeedbackBatchRequest(feedback=feedback), timeout=10
    )

    assert [r.outcome for r in response.results] == [ACCEPTED, REJECTED, REJECTED]
    assert response.results[1].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert _fields(response.results[2].error) == ["score"]


def test_interaction_batch_rejects_duplicate_message_ids(stub: FeedbackServiceStub) -> None:
    interactions = [
        pb.RecordInteractionRequest(conversation_id="c", message_id="m1"),
        pb.RecordInteractionRequest(conversation_id="c", message_id="m1"),
        pb.RecordInteractionRequest(conversation_id="c", message_id="m2"),
    ]

    response = stub.RecordInteractions(
        pb.RecordInteractionsRequest(interactions=interactions), timeout=10
    )

    assert [r.outcome for r in response.results] == [ACCEPTED, REJECTED, ACCEPTED]
    assert response.results[1].error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]


@pytest.mark.database_independent
@pytest.mark.parametrize("count", [0, 1001])
def test_batch_size_limits(stub: FeedbackServiceStub, count: int) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.LogEvents(pb.LogEventsRequest(events=[_event(n) for n in range(count)]), timeout=10)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    assert _fields(status) == ["events"]


def test_oversized_item_is_rejected_alone(stub: FeedbackServiceStub) -> None:
    big = pb.RecordInteractionRequest(conversation_id="c", input_text="x" * 70_000)
    small = pb.RecordInteractionRequest(conversation_id="c", input_text="x" * 60_000)

    response = stub.RecordInteractions(
        pb.RecordInteractionsRequest(interactions=[big, small]), timeout=10
    )

    assert [r.outcome for r in response.results] == [REJECTED, ACCEPTED]
    assert "must be at most 65536 bytes serialized" in response.results[0].error.message


def test_ingest_stream_commits_everything_and_reports_rejections(
    stub: FeedbackServiceStub,
) -> None:
    items = [pb.IngestItem(interaction=pb.RecordInteractionRequest(conversation_id="bulk"))]
    for n in range(2500):
        event = _event(n, event_type="bad type") if n % 1000 == 7 else _event(n)
        items.append(pb.IngestItem(event=event))
    items.append(pb.IngestItem(feedback=pb.SubmitFeedbackRequest(conversation_id="bulk", score=4)))
    items.append(pb.IngestItem())

    def messages() -> Iterator[pb.IngestRequest]:  # uneven messages: indices span them
        for start in range(0, len(items), 300):
            yield pb.IngestRequest(items=items[start : start + 300])

    response = stub.Ingest(messages(), timeout=60)

    assert response.received_count == 2503
    assert (response.accepted_count, response.rejected_count) == (2499, 4)
    assert [r.index for r in response.rejections] == [8, 1008, 2008, 2502]
    assert _fields(response.rejections[-1].error) == ["item"]
    assert all(r.outcome == REJECTED for r in response.rejections)
    stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
    assert (stats.events.total_count, stats.feedback.total_count) == (2497, 1)


def test_many_concurrent_mixed_calls_each_get_their_own_answer(stub: FeedbackServiceStub) -> None:
    stub.RecordInteraction(pb.RecordInteractionRequest(conversation_id="known"), timeout=10)

    def call(n: int) -> grpc.StatusCode:
        request = pb.SubmitFeedbackRequest(
            conversation_id=["known", "unknown", "bad id!"][n % 3], score=1 + n % 5
        )
        try:
            stub.SubmitFeedback(request, timeout=30)
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(call, range(300)))

    assert codes.count(grpc.StatusCode.OK) == 100
    assert codes.count(grpc.StatusCode.NOT_FOUND) == 100
    assert codes.count(grpc.StatusCode.INVALID_ARGUMENT) == 100
    assert stub.GetStats(pb.GetStatsRequest(), timeout=10).feedback.total_count == 100


def test_full_write_queue_answers_resource_exhausted_with_retry_info(tmp_path: Path) -> None:
    database = tmp_path / "feedback.sqlite3"
    settings = Settings(database_url=f"sqlite:///{database}", write_queue_limit=5)
    with ServerThread(settings) as server, grpc.insecure_channel(server.address) as channel:
        stub = FeedbackServiceStub(channel)
        blocker = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        stuck = stub.LogEvent.future(_event(0), timeout=30)
        threading.Event().wait(0.3)  # the writer took it and waits for the lock
        queued = [stub.LogEvent.future(_event(n), timeout=30) for n in range(1, 6)]
        threading.Event().wait(0.3)
        with pytest.raises(grpc.RpcError) as caught:
            stub.LogEvent(_event(6), timeout=30)
        blocker.rollback()
        acknowledged = [future.result() for future in [stuck, *queued]]
        stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
        blocker.close()

    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert retry.retry_delay.ToTimedelta().total_seconds() > 0
    assert len(acknowledged) == 6
    assert stats.events.total_count == 6
