"""Retention on a real server: records older than their kind's period leave in the background
with their replaced votes, request ids and share of every statistic, on one server or two
sharing PostgreSQL, each row deleted once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import create_engine, text

from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from server.config import Settings, parse_settings
from tests.server_harness import ServerThread

RETENTION = "interactions=10d,feedback=20d,events=5d"
DAYS = 30
NOW = datetime.now(UTC)


def _time(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _request_id(key: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"retention-test:{key}"))


def _history() -> list[pb.ImportItem]:
    """Per day back: a turn, a vote that a second vote replaces, and an event."""
    items = []
    for day in range(DAYS):
        moment = NOW - timedelta(days=day, hours=1)
        user, message = f"u{day}", f"m{day}"
        items.append(
            pb.ImportItem(
                interaction=pb.RecordInteractionRequest(
                    conversation_id=f"c{day}",
                    message_id=message,
                    user_id=user,
                    occur_time=_time(moment),
                    request_id=_request_id(f"turn{day}"),
                ),
                create_time=_time(moment),
            )
        )
        for minute, score in ((1, 2), (2, 4)):
            items.append(
                pb.ImportItem(
                    feedback=pb.SubmitFeedbackRequest(
                        message_id=message, score=score, request_id=_request_id(f"vote{day}{score}")
                    ),
                    create_time=_time(moment + timedelta(minutes=minute)),
                )
            )
        items.append(event(day, moment))
    return items


def event(day: int, moment: datetime) -> pb.ImportItem:
    return pb.ImportItem(
        event=pb.LogEventRequest(
            user_id=f"u{day}",
            event_type="view",
            event_time=_time(moment),
            request_id=_request_id(f"event{day}"),
        ),
        create_time=_time(moment),
    )


def _import(stub: FeedbackServiceStub, items: list[pb.ImportItem]) -> pb.ImportHistoryResponse:
    response: pb.ImportHistoryResponse = stub.ImportHistory(
        iter([pb.ImportHistoryRequest(items=items)]), timeout=30
    )
    return response


def _counts(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return {
                table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in ("interactions", "feedback", "feedback_history", "events")
            }
    finally:
        engine.dispose()


KEPT = {"interactions": 10, "feedback": 20, "feedback_history": 20, "events": 5}
"""Days back 0 to 9, 0 to 19 and 0 to 4 are younger than 10, 20 and 5 days."""


def _wait_for(database_url: str, expected: dict[str, int]) -> None:
    deadline = time.monotonic() + 20
    while (counts := _counts(database_url)) != expected:
        assert time.monotonic() < deadline, counts
        time.sleep(0.1)


def _wait_for_expired(servers: list[ServerThread], expected: dict[str, int]) -> None:
    """Until the servers' counts of rows they expired add up to `expected` (a count follows
    its batch's commit by a moment), and never beyond."""
    deadline = time.monotonic() + 5
    while True:
        counts = [server.feedback_server.retention.expired for server in servers]
        total = {kind: sum(count[kind] for count in counts) for kind in expected}
        if total == expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert total == expected


def _settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        retention=RETENTION,
        retention_interval_seconds=0.2,
        log_level="WARNING",
    )


@pytest.fixture
def stub(database_url: str) -> Iterator[tuple[ServerThread, FeedbackServiceStub]]:
    with (
        ServerThread(_settings(database_url)) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        yield server, FeedbackServiceStub(channel)


def test_expired_records_leave_with_their_votes_request_ids_and_statistics(
    stub: tuple[ServerThread, FeedbackServiceStub], database_url: str
) -> None:
    server, client = stub
    assert _import(client, _history()).accepted_count == DAYS * 4

    _wait_for(database_url, KEPT)

    stats = client.GetStats(pb.GetStatsRequest())
    assert stats.interactions.total_count == 10
    assert (stats.feedback.total_count, stats.feedback.avg_score) == (20, 4.0)
    assert stats.events.total_count == 5
    old = client.GetStats(
        pb.GetStatsRequest(
            start_time=_time(NOW - timedelta(days=40)), end_time=_time(NOW - timedelta(days=21))
        )
    )
    assert (old.feedback.total_count, old.interactions.total_count) == (0, 0)
    assert client.GetStats(pb.GetStatsRequest(user_id="u25")).feedback.total_count == 0
    # 10 current votes and 10 replaced ones
    _wait_for_expired([server], {"interactions": 20, "feedback": 20, "events": 25})
    # Their request ids left with them: sent again, the old events are stored anew (and expire).
    again = _import(client, [event(day, NOW - timedelta(days=day, hours=1)) for day in range(DAYS)])
    assert (again.accepted_count, again.duplicate_count) == (25, 5)
    _wait_for(database_url, KEPT)


@pytest.mark.postgres
def test_two_replicas_expire_each_row_once(own_database: str) -> None:
    with (
        ServerThread(_settings(own_database)) as first,
        ServerThread(_settings(own_database)) as second,
        grpc.insecure_channel(first.address) as channel,
    ):
        assert _import(FeedbackServiceStub(channel), _history()).accepted_count == DAYS * 4
        _wait_for(own_database, KEPT)
        _wait_for_expired([first, second], {"interactions": 20, "feedback": 20, "events": 25})


@pytest.mark.parametrize(
    "value", ["forever", "feedback=10", "feedback=0d", "feedback=2d,feedback=3d", "votes=3d"]
)
def test_a_bad_retention_stops_the_server_before_it_starts(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_settings(["--retention", value], environ={})
    assert exited.value.code == 2
    assert "--retention" in capsys.readouterr().err


def test_retention_is_read_from_the_flag_and_the_environment() -> None:
    _, settings = parse_settings([], environ={"FEEDBACK_RETENTION": "events=12w"})
    assert settings.retention == "events=12w"
    _, settings = parse_settings(["--retention", "none"], environ={})
    assert settings.retention == "none"
