"""feedbackctl and idempotency: --request-id, --event-id, vote history, duplicates when loading."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from google.protobuf import timestamp_pb2

from llmfeedback import Feedback
from llmfeedback.cli import main
from llmfeedback.proto.feedback.v1 import feedback_service_pb2

from .fake_service import Stall

if TYPE_CHECKING:
    from pathlib import Path

    from .fake_service import RecordingServicer

GIVEN_ID = "0b5e3c1a-55aa-4c8e-9d61-0f1f2e3d4c5b"


def run(address: str, *arguments: str) -> int:
    return main(["--address", address, *arguments])


@pytest.mark.parametrize(
    ("method", "arguments"),
    [
        ("RecordInteraction", ["record", "conv-1"]),
        ("SubmitFeedback", ["submit", "conv-1", "--score=5"]),
        ("LogEvent", ["log", "alice", "click", "--event-id=evt-1"]),
    ],
)
def test_writes_send_the_given_request_id(
    address: str, servicer: RecordingServicer, method: str, arguments: list[str]
) -> None:
    assert run(address, *arguments, f"--request-id={GIVEN_ID}") == 0

    (request,) = servicer.requests(method)
    assert request.request_id == GIVEN_ID  # type: ignore[attr-defined]
    if isinstance(request, feedback_service_pb2.LogEventRequest):
        assert request.event_id == "evt-1"


def test_a_malformed_request_id_is_a_usage_error(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(address, "log", "alice", "click", "--request-id=42") == 2

    assert "--request-id: must be a UUID" in capsys.readouterr().err
    assert not servicer.calls


def test_a_timed_out_write_says_which_request_id_stores_it_once(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer.plan("SubmitFeedback", Stall(1.0))

    assert run(address, "--timeout=0.2", "submit", "conv-1", "--score=5") == 1
    (request,) = servicer.requests("SubmitFeedback")
    assert isinstance(request, feedback_service_pb2.SubmitFeedbackRequest)
    request_id = request.request_id
    assert capsys.readouterr().err.splitlines() == [
        "error: DEADLINE_EXCEEDED: Deadline Exceeded",
        f"  it may have been stored: run the same command with --request-id {request_id} and "
        "it is stored at most once",
    ]

    assert run(address, "submit", "conv-1", "--score=5", f"--request-id={request_id}") == 0
    _, again = servicer.requests("SubmitFeedback")
    assert isinstance(again, feedback_service_pb2.SubmitFeedbackRequest)
    assert again.request_id == request_id


def test_a_timed_out_read_gives_no_request_id(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer.plan("GetStats", Stall(1.0))

    assert run(address, "--timeout=0.2", "stats") == 1
    assert capsys.readouterr().err == "error: DEADLINE_EXCEEDED: Deadline Exceeded\n"


def plan_history(servicer: RecordingServicer) -> None:
    replaced = Feedback(id=3, message_id="msg-1", user_id="alice", score=2, replaced_by_id=8)
    replaced.create_time.FromJsonString("2024-05-01T12:00:00Z")
    replaced.replace_time.CopyFrom(timestamp_pb2.Timestamp(seconds=1_714_568_400))
    current = Feedback(
        id=8, message_id="msg-1", user_id="alice", score=5, replaces_id=3, text="better now"
    )
    current.create_time.FromJsonString("2024-05-01T13:00:00Z")
    response = feedback_service_pb2.ListFeedbackHistoryResponse(feedback=[replaced, current])
    servicer.plan("ListFeedbackHistory", response)


def test_history_prints_the_votes_oldest_first_and_which_one_counts(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_history(servicer)

    assert run(address, "history", "msg-1", "alice") == 0

    assert capsys.readouterr().out.splitlines() == [
        "ID  CREATED               RATING   STATUS                                 TEXT",
        "3   2024-05-01T12:00:00Z  score 2  replaced by 8 at 2024-05-01T13:00:00Z",
        "8   2024-05-01T13:00:00Z  score 5  current                                better now",
    ]
    assert servicer.requests("ListFeedbackHistory") == [
        feedback_service_pb2.ListFeedbackHistoryRequest(message_id="msg-1", user_id="alice")
    ]


def test_history_json_and_no_votes(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_history(servicer)

    assert run(address, "--json", "history", "msg-1", "alice") == 0
    document = json.loads(capsys.readouterr().out)
    assert [(vote["id"], vote.get("replaced_by_id")) for vote in document["feedback"]] == [
        (3, 8),
        (8, None),
    ]

    assert run(address, "history", "msg-2", "bob") == 0
    assert capsys.readouterr().out == "no votes found\n"


def test_loading_a_file_with_request_ids_again_stores_nothing_twice(
    address: str, servicer: RecordingServicer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        {"kind": "event", "userId": "alice", "eventType": "click", "requestId": GIVEN_ID},
        {"kind": "event", "userId": "bob", "eventType": "click", "eventId": "evt-9"},
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")

    assert run(address, "ingest", str(path)) == 0
    assert capsys.readouterr().out == "2 items: 2 accepted, 0 rejected\n"
    assert run(address, "--json", "ingest", str(path)) == 0

    document = json.loads(capsys.readouterr().out)
    assert (document["accepted_count"], document["duplicate_count"]) == (2, 2)
    first, second = servicer.ingested[:2]
    assert (first.event.request_id, second.event.event_id) == (GIVEN_ID, "evt-9")
    assert len(servicer.stored_ids) == 3


def test_ingest_prints_how_many_were_already_stored(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = {"kind": "feedback", "conversationId": "c", "score": 4, "requestId": GIVEN_ID}
    path = tmp_path / "feedback.jsonl"
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    assert run(address, "ingest", str(path)) == 0
    capsys.readouterr()

    assert run(address, "ingest", str(path)) == 0

    assert capsys.readouterr().out == "1 items: 1 accepted (1 already stored), 0 rejected\n"


def test_an_ingest_line_with_sent_time_is_refused(
    address: str, servicer: RecordingServicer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = {
        "kind": "event",
        "userId": "alice",
        "eventType": "click",
        "eventTime": "2024-05-01T12:00:00Z",
        "sentTime": "2024-05-01T12:00:01Z",
    }
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")

    assert run(address, "ingest", str(path)) == 1

    assert capsys.readouterr().out.splitlines()[1] == (
        "line 1: INVALID_ARGUMENT: sent_time is set by the client when it sends the item; "
        "leave it out"
    )
