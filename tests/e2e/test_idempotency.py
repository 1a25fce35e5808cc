"""Nothing stored twice: request ids, client event ids and one vote per user per message.

Every test runs a real server on a real port over SQLite and PostgreSQL and talks raw protobuf,
as any client in any language would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from llmfeedback.proto.feedback.v1 import batch_pb2, feedback_pb2
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from tests.server_harness import ServerThread

ACCEPTED = batch_pb2.ITEM_OUTCOME_ACCEPTED
REJECTED = batch_pb2.ITEM_OUTCOME_REJECTED
DUPLICATE = batch_pb2.ITEM_OUTCOME_DUPLICATE


@pytest.fixture
def stub(server: ServerThread) -> Iterator[FeedbackServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield FeedbackServiceStub(channel)


@pytest.fixture
def sqlite_reuses_vote_ids(request: pytest.FixtureRequest, database_url: str) -> None:
    """Expect the failure on SQLite, strictly, so the test runs again once storage is fixed.

    Migration 0011's table rebuilds (batch_alter_table) dropped AUTOINCREMENT from the SQLite
    tables that models.py declares with it, so SQLite reuses the largest id once its row is
    deleted: a vote replacing the newest vote gets that vote's id (all three votes here get id
    1), and history ordered by id has ties, which come back in another order since 9dc5f7e
    added the feedback_history (user_id, id) index.
    """
    if database_url.startswith("sqlite"):
        request.applymarker(
            pytest.mark.xfail(
                strict=True, reason="SQLite reuses the replaced vote's id (storage bug)"
            )
        )


def _request_id() -> str:
    return str(uuid.uuid4())


def _interaction(stub: FeedbackServiceStub, message_id: str, user_id: str = "u1") -> None:
    stub.RecordInteraction(
        pb.RecordInteractionRequest(
            conversation_id="c1", message_id=message_id, user_id=user_id, model="m1"
        )
    )


def _stats(
    stub: FeedbackServiceStub, user_id: str = "", message_id: str = ""
) -> pb.GetStatsResponse:
    response: pb.GetStatsResponse = stub.GetStats(
        pb.GetStatsRequest(user_id=user_id, message_id=message_id)
    )
    return response


def _resource(error: grpc.RpcError) -> error_details_pb2.ResourceInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ResourceInfo()
    assert any(detail.Unpack(info) for detail in status.details)
    return info


# ---- request ids (AIP-155) ----


def test_a_retried_write_returns_the_original_response_and_stores_nothing(
    stub: FeedbackServiceStub,
) -> None:
    _interaction(stub, "m1")
    request_id = _request_id()
    request = pb.SubmitFeedbackRequest(message_id="m1", score=4, text="ok", request_id=request_id)
    first = stub.SubmitFeedback(request)
    again = stub.SubmitFeedback(request)
    assert again == first
    assert _stats(stub).feedback.total_count == 1
    event = pb.LogEventRequest(user_id="u1", event_type="click", request_id=request_id)
    assert stub.LogEvent(event) == stub.LogEvent(event)
    interaction = pb.RecordInteractionRequest(conversation_id="c2", request_id=request_id)
    assert stub.RecordInteraction(interaction) == stub.RecordInteraction(interaction)
    stats = _stats(stub)
    assert (stats.events.total_count, stats.interactions.total_count) == (1, 2)


def test_a_request_id_is_one_request_in_any_case_of_its_hex_digits(
    stub: FeedbackServiceStub,
) -> None:
    request_id = _request_id()
    event = pb.LogEventRequest(user_id="u", event_type="e", request_id=request_id)
    stored = stub.LogEvent(event)
    event.request_id = request_id.upper()
    assert stub.LogEvent(event) == stored
    assert _stats(stub).events.total_count == 1


def test_a_request_id_reused_for_other_content_is_already_exists(
    stub: FeedbackServiceStub,
) -> None:
    request_id = _request_id()
    stub.LogEvent(pb.LogEventRequest(user_id="u1", event_type="click", request_id=request_id))
    with pytest.raises(grpc.RpcError) as raised:
        stub.LogEvent(pb.LogEventRequest(user_id="u2", event_type="click", request_id=request_id))
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info = _resource(raised.value)
    assert (info.resource_type, info.resource_name) == ("request", request_id)
    assert _stats(stub).events.total_count == 1


def test_a_malformed_request_id_is_invalid(stub: FeedbackServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.LogEvent(pb.LogEventRequest(user_id="u1", event_type="click", request_id="abc"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in (raised.value.details() or "")
    assert _stats(stub).events.total_count == 0


def test_a_retried_interaction_is_not_a_message_conflict(stub: FeedbackServiceStub) -> None:
    request = pb.RecordInteractionRequest(
        conversation_id="c1", message_id="m1", request_id=_request_id()
    )
    assert stub.RecordInteraction(request) == stub.RecordInteraction(request)
    with pytest.raises(grpc.RpcError) as raised:  # without the id it is a second recording
        stub.RecordInteraction(pb.RecordInteractionRequest(conversation_id="c1", message_id="m1"))
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert _resource(raised.value).resource_type == "message"


def test_a_retried_batch_reports_duplicates_and_stores_each_item_once(
    stub: FeedbackServiceStub,
) -> None:
    events = [
        pb.LogEventRequest(user_id=f"u{n}", event_type="view", request_id=_request_id())
        for n in range(5)
    ]
    events.append(pb.LogEventRequest(user_id="", event_type="view", request_id=_request_id()))
    first = stub.LogEvents(pb.LogEventsRequest(events=events))
    assert (first.accepted_count, first.rejected_count, first.duplicate_count) == (5, 1, 0)
    again = stub.LogEvents(pb.LogEventsRequest(events=events))
    assert (again.accepted_count, again.rejected_count, again.duplicate_count) == (0, 1, 5)
    assert [r.outcome for r in again.results] == [DUPLICATE] * 5 + [REJECTED]
    assert [r.id for r in again.results[:5]] == [r.id for r in first.results[:5]]
    assert _stats(stub).events.total_count == 5


def test_copies_within_one_batch_store_one_row(stub: FeedbackServiceStub) -> None:
    request_id = _request_id()
    same = pb.LogEventRequest(user_id="u1", event_type="view", request_id=request_id)
    other = pb.LogEventRequest(user_id="u2", event_type="view", request_id=request_id)
    response = stub.LogEvents(pb.LogEventsRequest(events=[same, same, other]))
    assert [r.outcome for r in response.results] == [ACCEPTED, DUPLICATE, REJECTED]
    assert response.results[1].id == response.results[0].id
    assert response.results[2].error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert _stats(stub).events.total_count == 1


def test_a_storm_of_concurrent_retries_stores_one_row(stub: FeedbackServiceStub) -> None:
    _interaction(stub, "m1")
    request = pb.SubmitFeedbackRequest(
        message_id="m1", thumb=feedback_pb2.THUMB_UP, request_id=_request_id()
    )
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: stub.SubmitFeedback(request), range(64)))
    assert len({response.feedback.id for response in responses}) == 1
    assert _stats(stub).feedback.total_count == 1


def test_ingest_counts_duplicates_apart(stub: FeedbackServiceStub) -> None:
    items = [
        pb.IngestItem(event=pb.LogEventRequest(user_id="u", event_type="e", request_id=rid))
        for rid in (_request_id(), _request_id())
    ]
    first = stub.Ingest(iter([pb.IngestRequest(items=items)]))
    again = stub.Ingest(iter([pb.IngestRequest(items=items)]))
    assert (first.accepted_count, first.duplicate_count) == (2, 0)
    assert (again.accepted_count, again.rejected_count, again.duplicate_count) == (0, 0, 2)


# ---- client event ids ----


def test_an_event_id_is_stored_once_whatever_its_copies_say(stub: FeedbackServiceStub) -> None:
    stored = stub.LogEvent(pb.LogEventRequest(user_id="u1", event_type="view", event_id="ev-1"))
    assert stored.event.event_id == "ev-1"
    copy = stub.LogEvent(pb.LogEventRequest(user_id="u9", event_type="other", event_id="ev-1"))
    assert copy == stored
    batch = stub.LogEvents(
        pb.LogEventsRequest(
            events=[
                pb.LogEventRequest(user_id="u1", event_type="view", event_id="ev-1"),
                pb.LogEventRequest(user_id="u1", event_type="view", event_id="ev-2"),
                pb.LogEventRequest(user_id="u1", event_type="view", event_id="ev-2"),
            ]
        )
    )
    assert [r.outcome for r in batch.results] == [DUPLICATE, ACCEPTED, DUPLICATE]
    assert batch.results[0].id == stored.event.id
    listed = stub.ListEvents(pb.ListEventsRequest(order_by="create_time asc"))
    assert [event.event_id for event in listed.events] == ["ev-1", "ev-2"]


def test_a_repeated_request_of_a_duplicate_event_is_a_duplicate_too(
    stub: FeedbackServiceStub,
) -> None:
    stub.LogEvent(pb.LogEventRequest(user_id="u1", event_type="view", event_id="ev-1"))
    copy = pb.LogEventRequest(
        user_id="u1", event_type="view", event_id="ev-1", request_id=_request_id()
    )
    response = stub.LogEvents(pb.LogEventsRequest(events=[copy, copy]))
    assert [r.outcome for r in response.results] == [DUPLICATE, DUPLICATE]
    fresh = pb.LogEventRequest(user_id="u", event_type="v", event_id="ev-2")
    twice = pb.LogEventRequest(
        user_id="u", event_type="v", event_id="ev-2", request_id=_request_id()
    )
    response = stub.LogEvents(pb.LogEventsRequest(events=[fresh, twice, twice]))
    assert [r.outcome for r in response.results] == [ACCEPTED, DUPLICATE, DUPLICATE]
    assert len({r.id for r in response.results}) == 1
    assert _stats(stub).events.total_count == 2


def test_a_malformed_event_id_is_invalid(stub: FeedbackServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.LogEvent(pb.LogEventRequest(user_id="u1", event_type="view", event_id="a b"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ---- one vote per user per message ----


@pytest.mark.usefixtures("sqlite_reuses_vote_ids")
def test_a_second_vote_replaces_the_first_and_keeps_history(stub: FeedbackServiceStub) -> None:
    _interaction(stub, "m1", user_id="u1")
    first = stub.SubmitFeedback(pb.SubmitFeedbackRequest(message_id="m1", score=1)).feedback
    second = stub.SubmitFeedback(pb.SubmitFeedbackRequest(message_id="m1", score=5)).feedback
    third = stub.SubmitFeedback(
        pb.SubmitFeedbackRequest(message_id="m1", user_id="u1", thumb=feedback_pb2.THUMB_UP)
    ).feedback
    assert (second.replaces_id, third.replaces_id) == (first.id, second.id)
    stats = _stats(stub).feedback
    assert (stats.total_count, stats.scored_count, stats.thumbs_up_count) == (1, 0, 1)
    assert _stats(stub, user_id="u1").feedback.total_count == 1
    listed = stub.ListFeedback(pb.ListFeedbackRequest())
    assert [entry.id for entry in listed.feedback] == [third.id]
    history = stub.ListFeedbackHistory(
        pb.ListFeedbackHistoryRequest(message_id="m1", user_id="u1")
    ).feedback
    assert [vote.id for vote in history] == [first.id, second.id, third.id]
    assert [vote.replaced_by_id for vote in history] == [second.id, third.id, 0]
    assert history[0].replace_time.ToDatetime() == second.create_time.ToDatetime()
    assert not history[2].HasField("replace_time")


def test_votes_of_other_users_and_conversation_feedback_are_not_replaced(
    stub: FeedbackServiceStub,
) -> None:
    _interaction(stub, "m1", user_id="")
    stub.SubmitFeedback(pb.SubmitFeedbackRequest(message_id="m1", user_id="a", score=1))
    stub.SubmitFeedback(pb.SubmitFeedbackRequest(message_id="m1", user_id="b", score=2))
    stub.SubmitFeedback(pb.SubmitFeedbackRequest(message_id="m1", score=3))  # anonymous
    stub.SubmitFeedback(pb.SubmitFeedbackRequest(message_id="m1", score=3))
    stub.SubmitFeedback(pb.SubmitFeedbackRequest(conversation_id="c1", user_id="a", score=4))
    stub.SubmitFeedback(pb.SubmitFeedbackRequest(conversation_id="c1", user_id="a", score=4))
    assert _stats(stub).feedback.total_count == 6


@pytest.mark.usefixtures("sqlite_reuses_vote_ids")
def test_votes_of_one_user_in_one_batch_replace_each_other_in_order(
    stub: FeedbackServiceStub,
) -> None:
    _interaction(stub, "m1", user_id="u1")
    votes = [pb.SubmitFeedbackRequest(message_id="m1", score=score) for score in (1, 2, 4)]
    response = stub.SubmitFeedbackBatch(pb.SubmitFeedbackBatchRequest(feedback=votes))
    assert [r.outcome for r in response.results] == [ACCEPTED] * 3
    stats = _stats(stub, message_id="m1").feedback
    assert (stats.total_count, stats.avg_score) == (1, 4.0)
    history = stub.ListFeedbackHistory(
        pb.ListFeedbackHistoryRequest(message_id="m1", user_id="u1")
    ).feedback
    assert [vote.score for vote in history] == [1, 2, 4]


def test_a_replayed_vote_returns_it_as_it_was_stored(stub: FeedbackServiceStub) -> None:
    _interaction(stub, "m1", user_id="u1")
    request = pb.SubmitFeedbackRequest(message_id="m1", score=2, request_id=_request_id())
    original = stub.SubmitFeedback(request)
    stub.SubmitFeedback(pb.SubmitFeedbackRequest(message_id="m1", score=5))
    assert stub.SubmitFeedback(request) == original
    assert _stats(stub).feedback.avg_score == 5.0


def test_history_needs_both_ids(stub: FeedbackServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.ListFeedbackHistory(pb.ListFeedbackHistoryRequest(message_id="m1"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    empty = stub.ListFeedbackHistory(pb.ListFeedbackHistoryRequest(message_id="m", user_id="u"))
    assert list(empty.feedback) == []


# ---- clock skew ----


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def test_sent_time_corrects_a_skewed_client_clock(stub: FeedbackServiceStub) -> None:
    skew = timedelta(hours=3)  # the client's clock runs three hours ahead
    client_now = datetime.now(UTC) + skew
    happened = client_now - timedelta(minutes=5)
    stored = stub.LogEvent(
        pb.LogEventRequest(
            user_id="u1",
            event_type="view",
            event_time=_timestamp(happened),
            sent_time=_timestamp(client_now),
        )
    ).event
    corrected = stored.event_time.ToDatetime(tzinfo=UTC)
    assert abs(corrected - (happened - skew)) < timedelta(seconds=5)
    interaction = stub.RecordInteraction(
        pb.RecordInteractionRequest(
            conversation_id="c1", occur_time=_timestamp(happened), sent_time=_timestamp(client_now)
        )
    ).interaction
    assert abs(interaction.occur_time.ToDatetime(tzinfo=UTC) - (happened - skew)) < timedelta(
        seconds=5
    )


def test_a_time_still_far_ahead_after_correction_is_rejected(stub: FeedbackServiceStub) -> None:
    now = datetime.now(UTC)
    with pytest.raises(grpc.RpcError) as raised:
        stub.LogEvent(
            pb.LogEventRequest(
                user_id="u1",
                event_type="view",
                event_time=_timestamp(now + timedelta(days=3)),
                sent_time=_timestamp(now),
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "event_time" in (raised.value.details() or "")


def test_a_fresh_sent_time_on_a_retry_is_still_the_same_request(stub: FeedbackServiceStub) -> None:
    now = datetime.now(UTC)
    request = pb.LogEventRequest(
        user_id="u1",
        event_type="view",
        event_time=_timestamp(now),
        sent_time=_timestamp(now),
        request_id=_request_id(),
    )
    first = stub.LogEvent(request)
    request.sent_time.CopyFrom(_timestamp(now + timedelta(seconds=2)))
    assert stub.LogEvent(request) == first
    assert _stats(stub).events.total_count == 1


def test_a_correction_out_of_the_calendar_is_invalid(stub: FeedbackServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.LogEvent(
            pb.LogEventRequest(
                user_id="u1",
                event_type="view",
                event_time=timestamp_pb2.Timestamp(seconds=0),
                sent_time=timestamp_pb2.Timestamp(seconds=253_402_300_799),  # 9999-12-31
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "event_time" in (raised.value.details() or "")
    assert _stats(stub).events.total_count == 0
