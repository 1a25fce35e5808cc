"""ImportHistory on a real server: original times kept in stats and lists, the future refused,
an import sent again stores nothing twice, and votes never run backwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2

from llmfeedback import FeedbackClient, FeedbackItem, HistoricItem, InteractionItem
from llmfeedback.proto.feedback.v1 import batch_pb2, stats_pb2
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from tests.server_harness import ServerThread

REJECTED = batch_pb2.ITEM_OUTCOME_REJECTED
YEAR_AGO = (datetime.now(UTC) - timedelta(days=365)).replace(
    hour=0, minute=0, second=0, microsecond=0
)
"""Midnight a year back: day buckets start there."""


@pytest.fixture
def stub(server: ServerThread) -> Iterator[FeedbackServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield FeedbackServiceStub(channel)


def _time(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _source_id(key: str) -> str:
    """The request id an importer derives from a source record's key."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"test-source:{key}"))


def _history(days: int) -> list[pb.ImportItem]:
    """One recorded turn, its rating and an event per day, a year back, with source ids."""
    items = []
    for day in range(days):
        moment = YEAR_AGO + timedelta(days=day, hours=3)
        items += [
            pb.ImportItem(
                interaction=pb.RecordInteractionRequest(
                    conversation_id=f"c{day}",
                    message_id=f"m{day}",
                    user_id="u",
                    latency_ms=100.0 + day,
                    request_id=_source_id(f"interaction:{day}"),
                ),
                create_time=_time(moment),
            ),
            pb.ImportItem(
                feedback=pb.SubmitFeedbackRequest(
                    message_id=f"m{day}",
                    score=1 + day % 5,
                    request_id=_source_id(f"feedback:{day}"),
                ),
                create_time=_time(moment + timedelta(minutes=5)),
            ),
            pb.ImportItem(
                event=pb.LogEventRequest(
                    user_id="u", event_type="view", request_id=_source_id(f"event:{day}")
                ),
                create_time=_time(moment),
            ),
        ]
    return items


def _import(stub: FeedbackServiceStub, items: list[pb.ImportItem]) -> pb.ImportHistoryResponse:
    messages = [
        pb.ImportHistoryRequest(items=items[start : start + 7]) for start in range(0, len(items), 7)
    ]
    response: pb.ImportHistoryResponse = stub.ImportHistory(iter(messages), timeout=30)
    return response


def _fields(status: status_pb2.Status) -> list[str]:
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    return [violation.field for violation in bad_request.field_violations]


def test_imported_records_keep_their_times_in_stats_and_lists(stub: FeedbackServiceStub) -> None:
    response = _import(stub, _history(10))

    assert (response.received_count, response.accepted_count, response.rejected_count) == (
        30,
        30,
        0,
    )
    start = YEAR_AGO
    daily = stub.GetStats(
        pb.GetStatsRequest(
            start_time=_time(start),
            end_time=_time(start + timedelta(days=10)),
            bucket=stats_pb2.TIME_BUCKET_DAY,
        ),
        timeout=10,
    )
    assert [bucket.feedback.total_count for bucket in daily.buckets] == [1] * 10
    assert [bucket.events.total_count for bucket in daily.buckets] == [1] * 10
    assert [bucket.feedback.avg_score for bucket in daily.buckets] == [
        float(1 + day % 5) for day in range(10)
    ]
    # Linked to their interactions as live ratings are, latency included.
    assert daily.buckets[3].feedback.avg_latency_ms == 103.0
    today = stub.GetStats(
        pb.GetStatsRequest(
            start_time=_time(datetime.now(UTC) - timedelta(days=1)),
            end_time=_time(datetime.now(UTC) + timedelta(minutes=1)),
        ),
        timeout=10,
    )
    assert today.feedback.total_count == 0
    listed = stub.ListFeedback(pb.ListFeedbackRequest(page_size=50), timeout=10)
    times = sorted(entry.create_time.ToDatetime(tzinfo=UTC) for entry in listed.feedback)
    assert times == [YEAR_AGO + timedelta(days=day, hours=3, minutes=5) for day in range(10)]
    events = stub.ListEvents(pb.ListEventsRequest(page_size=50), timeout=10)
    assert sorted(e.event_time.ToDatetime(tzinfo=UTC) for e in events.events) == [
        YEAR_AGO + timedelta(days=day, hours=3) for day in range(10)
    ]


def test_an_import_sent_again_stores_nothing_twice(stub: FeedbackServiceStub) -> None:
    items = _history(6)
    first = _import(stub, items[:10])  # a run that stopped part way
    again = _import(stub, items)

    assert first.accepted_count == 10
    assert (again.accepted_count, again.duplicate_count, again.rejected_count) == (8, 10, 0)
    stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
    assert (stats.feedback.total_count, stats.events.total_count) == (6, 6)
    assert stats.interactions.total_count == 6


def test_times_in_the_future_or_missing_are_refused(stub: FeedbackServiceStub) -> None:
    future = datetime.now(UTC) + timedelta(hours=1)
    items = [
        pb.ImportItem(
            event=pb.LogEventRequest(user_id="u", event_type="view"), create_time=_time(future)
        ),
        pb.ImportItem(event=pb.LogEventRequest(user_id="u", event_type="view")),
        pb.ImportItem(
            event=pb.LogEventRequest(user_id="u", event_type="view"),
            create_time=_time(datetime(1970, 1, 1, tzinfo=UTC)),
        ),
        pb.ImportItem(
            event=pb.LogEventRequest(user_id="u", event_type="view", event_time=_time(future)),
            create_time=_time(YEAR_AGO),
        ),
        pb.ImportItem(
            event=pb.LogEventRequest(user_id="u", event_type="view"), create_time=_time(YEAR_AGO)
        ),
    ]

    response = _import(stub, items)

    assert (response.accepted_count, response.rejected_count) == (1, 4)
    assert [r.index for r in response.rejections] == [0, 1, 2, 3]
    assert [r.outcome for r in response.rejections] == [REJECTED] * 4
    assert [_fields(r.error) for r in response.rejections] == [
        ["create_time"],
        ["create_time"],
        ["create_time"],
        ["event_time"],
    ]
    assert stub.GetStats(pb.GetStatsRequest(), timeout=10).events.total_count == 1


def test_a_vote_older_than_the_current_one_is_refused(stub: FeedbackServiceStub) -> None:
    turn = pb.ImportItem(
        interaction=pb.RecordInteractionRequest(conversation_id="c", message_id="m", user_id="u"),
        create_time=_time(YEAR_AGO),
    )

    def vote(score: int, days: int) -> pb.ImportItem:
        return pb.ImportItem(
            feedback=pb.SubmitFeedbackRequest(message_id="m", score=score),
            create_time=_time(YEAR_AGO + timedelta(days=days)),
        )

    response = _import(stub, [turn, vote(2, 1), vote(4, 3), vote(5, 2)])

    assert (response.accepted_count, response.rejected_count) == (3, 1)
    rejection = response.rejections[0]
    assert rejection.index == 3
    assert rejection.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    info = error_details_pb2.ErrorInfo()
    assert rejection.error.details[0].Unpack(info)
    assert info.reason == "VOTE_OLDER_THAN_CURRENT"
    history = stub.ListFeedbackHistory(
        pb.ListFeedbackHistoryRequest(message_id="m", user_id="u"), timeout=10
    )
    assert [entry.score for entry in history.feedback] == [2, 4]  # oldest first
    stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
    assert (stats.feedback.total_count, stats.feedback.avg_score) == (1, 4.0)


def test_the_python_client_imports_history_and_resumes_without_duplicates(
    client: FeedbackClient,
) -> None:
    def history() -> list[HistoricItem]:
        items = []
        for n in range(30):
            moment = YEAR_AGO + timedelta(days=n)
            key = _source_id(f"client:{n}")
            items.append(
                HistoricItem(InteractionItem(f"c{n}", message_id=f"cm{n}", request_id=key), moment)
            )
            items.append(
                HistoricItem(
                    FeedbackItem(message_id=f"cm{n}", score=5, request_id=_source_id(f"f:{n}")),
                    moment + timedelta(minutes=1),
                )
            )
        return items

    first = client.import_history(history()[:25])
    again = client.import_history(history())

    assert (first.accepted_count, first.rejected_count) == (25, 0)
    assert (again.received_count, again.duplicate_count, again.rejected_count) == (60, 25, 0)
    stats = client.get_stats(start_time=YEAR_AGO, end_time=YEAR_AGO + timedelta(days=30))
    assert stats.feedback is not None
    assert stats.feedback.total_count == 30
    with pytest.raises(TypeError, match="HistoricItem"):
        client.import_history([FeedbackItem(message_id="x", score=1)])  # type: ignore[list-item]
