"""Opt-out on a real server: writes about an opted-out user are answered SUPPRESSED and never
stored, single, batched and streamed alike; their past is kept or erased as the caller chose; the
choices are recorded; opting back in stores writes again."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import grpc
import pytest

from llmfeedback.proto.feedback.v1 import batch_pb2, feedback_pb2, privacy_pb2
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from tests.server_harness import ServerThread

SUPPRESSED = batch_pb2.ITEM_OUTCOME_SUPPRESSED
ACCEPTED = batch_pb2.ITEM_OUTCOME_ACCEPTED


@pytest.fixture
def stub(server: ServerThread) -> Iterator[FeedbackServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield FeedbackServiceStub(channel)


def _turn(stub: FeedbackServiceStub, user: str, message: str) -> pb.RecordInteractionResponse:
    response: pb.RecordInteractionResponse = stub.RecordInteraction(
        pb.RecordInteractionRequest(
            conversation_id=f"c-{message}", message_id=message, user_id=user
        )
    )
    return response


def _totals(stub: FeedbackServiceStub, user: str = "") -> tuple[int, int, int]:
    stats = stub.GetStats(pb.GetStatsRequest(user_id=user))
    return (
        stats.interactions.total_count,
        stats.feedback.total_count,
        stats.events.total_count,
    )


def test_writes_about_an_opted_out_user_are_suppressed_until_they_opt_in(
    stub: FeedbackServiceStub,
) -> None:
    _turn(stub, "frank", "frank-m0")
    stub.SubmitFeedback(pb.SubmitFeedbackRequest(message_id="frank-m0", score=4))
    opted = stub.OptOutUser(pb.OptOutUserRequest(user_id="frank"))

    assert opted.opt_out.user_hash == hashlib.sha256(b"frank").hexdigest()
    assert opted.opt_out.user_hash_kind == privacy_pb2.HASH_KIND_SHA256
    assert not opted.HasField("erasure")
    suppressed = _turn(stub, "frank", "frank-m1")
    assert suppressed.suppressed
    assert suppressed.interaction == type(suppressed.interaction)()
    # The user is inherited from the rated interaction.
    vote = stub.SubmitFeedback(pb.SubmitFeedbackRequest(message_id="frank-m0", score=1))
    assert vote.suppressed
    assert vote.feedback.id == 0
    assert stub.LogEvent(pb.LogEventRequest(user_id="frank", event_type="view")).suppressed
    batch = stub.LogEvents(
        pb.LogEventsRequest(
            events=[
                pb.LogEventRequest(user_id="frank", event_type="view"),
                pb.LogEventRequest(user_id="gina", event_type="view"),
            ]
        )
    )
    assert [result.outcome for result in batch.results] == [SUPPRESSED, ACCEPTED]
    assert (batch.accepted_count, batch.rejected_count, batch.suppressed_count) == (1, 0, 1)
    assert batch.results[0].id == 0
    ingest = stub.Ingest(
        iter(
            [
                pb.IngestRequest(
                    items=[
                        pb.IngestItem(event=pb.LogEventRequest(user_id="frank", event_type="a")),
                        pb.IngestItem(event=pb.LogEventRequest(user_id="gina", event_type="a")),
                    ]
                )
            ]
        )
    )
    assert (ingest.accepted_count, ingest.suppressed_count, ingest.rejected_count) == (1, 1, 0)
    assert not ingest.rejections
    assert _totals(stub, "frank") == (1, 1, 0)  # the past is kept, nothing new was stored
    assert _totals(stub) == (1, 1, 2)

    assert stub.OptInUser(pb.OptInUserRequest(user_id="frank")).was_opted_out
    assert not stub.OptInUser(pb.OptInUserRequest(user_id="frank")).was_opted_out
    assert not _turn(stub, "frank", "frank-m2").suppressed
    assert _totals(stub, "frank") == (2, 1, 0)
    state = stub.GetOptOut(pb.GetOptOutRequest(user_id="frank"))
    assert not state.HasField("opt_out")
    assert [choice.action for choice in state.choices] == [
        privacy_pb2.OPT_OUT_ACTION_OPT_IN,
        privacy_pb2.OPT_OUT_ACTION_OPT_IN,
        privacy_pb2.OPT_OUT_ACTION_OPT_OUT,
    ]
    assert all(choice.requested_by for choice in state.choices)


def test_opting_out_with_erasure_removes_the_past_and_suppresses_the_future(
    stub: FeedbackServiceStub,
) -> None:
    _turn(stub, "hal", "hal-m0")
    down = feedback_pb2.THUMB_DOWN
    stub.SubmitFeedback(pb.SubmitFeedbackRequest(message_id="hal-m0", thumb=down))
    stub.LogEvent(pb.LogEventRequest(user_id="hal", event_type="view"))
    _turn(stub, "ivy", "ivy-m0")

    first = stub.OptOutUser(pb.OptOutUserRequest(user_id="hal", erase_past_data=True))

    assert first.erasure.erased == privacy_pb2.ErasedCounts(interactions=1, feedback=1, events=1)
    assert first.erasure.HasField("finish_time")
    assert _totals(stub, "hal") == (0, 0, 0)
    assert _totals(stub) == (1, 0, 0)
    assert _turn(stub, "hal", "hal-m1").suppressed  # suppressed, not refused
    again = stub.OptOutUser(pb.OptOutUserRequest(user_id="hal"))
    assert again.opt_out == first.opt_out  # the first opt-out's time is kept
    state = stub.GetOptOut(pb.GetOptOutRequest(user_id="hal"))
    assert state.opt_out == first.opt_out
    assert [choice.erase_requested for choice in state.choices] == [False, True]


@pytest.mark.database_independent
@pytest.mark.parametrize("user_id", ["", "x" * 129, "a b"])
def test_a_malformed_user_id_is_refused(stub: FeedbackServiceStub, user_id: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: stub.OptOutUser(pb.OptOutUserRequest(user_id=user_id)),
        lambda: stub.OptInUser(pb.OptInUserRequest(user_id=user_id)),
        lambda: stub.GetOptOut(pb.GetOptOutRequest(user_id=user_id)),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as raised:
            call()
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
