"""feedbackctl ingest: JSON Lines in, one stream out, totals and every rejected line printed."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2

from llmfeedback.cli import main
from llmfeedback.proto.feedback.v1 import feedback_pb2, feedback_service_pb2

from .fake_service import Abort, rich_status

if TYPE_CHECKING:
    from pathlib import Path

    from google.protobuf.message import Message
    from google.rpc import status_pb2

    from .fake_service import RecordingServicer

GOOD_LINES = [
    {
        "kind": "interaction",
        "conversationId": "conv-1",
        "messageId": "msg-1",
        "inputText": "Capital of France?",
        "latencyMs": 812.5,
        "promptTokens": "12",
        "metadata": {"app": "demo"},
        "occurTime": "2024-05-01T12:00:00Z",
    },
    {"kind": "feedback", "messageId": "msg-1", "thumb": "THUMB_DOWN", "text": "wrong"},
    {"kind": "event", "user_id": "alice", "eventType": "page_view", "details": {"path": "/"}},
]


def jsonl(*documents: object) -> str:
    return "".join(
        (document if isinstance(document, str) else json.dumps(document)) + "\n"
        for document in documents
    )


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "items.jsonl"
    path.write_text(text, encoding="utf-8")
    return str(path)


def reject_unknown_user(item: Message) -> status_pb2.Status | None:
    if isinstance(item, feedback_service_pb2.LogEventRequest) and item.user_id == "mallory":
        violation = error_details_pb2.BadRequest.FieldViolation(
            field="user_id", description="unknown user"
        )
        bad_request = error_details_pb2.BadRequest(field_violations=[violation])
        return rich_status(grpc.StatusCode.INVALID_ARGUMENT, "user_id: unknown user", bad_request)
    return None


def test_ingest_sends_each_line_as_its_kind_and_prints_totals(
    address: str, servicer: RecordingServicer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, jsonl(*GOOD_LINES))

    assert main(["--address", address, "ingest", path]) == 0

    assert capsys.readouterr().out == "3 items: 3 accepted, 0 rejected\n"
    interaction, feedback, event = (
        getattr(message, str(message.WhichOneof("item"))) for message in servicer.ingested
    )
    assert (interaction.conversation_id, interaction.input_text) == ("conv-1", "Capital of France?")
    assert interaction.prompt_tokens == 12
    assert not interaction.HasField("completion_tokens")
    assert interaction.occur_time.ToJsonString() == "2024-05-01T12:00:00Z"
    assert json_format.MessageToDict(interaction.metadata) == {"app": "demo"}
    assert (feedback.message_id, feedback.thumb) == ("msg-1", feedback_pb2.THUMB_DOWN)
    assert (event.user_id, event.event_type) == ("alice", "page_view")


def test_rejected_lines_are_printed_by_line_number_and_exit_1(
    address: str, servicer: RecordingServicer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer.verdict = reject_unknown_user
    path = write(
        tmp_path,
        jsonl(
            GOOD_LINES[2],
            "",
            "{not json",
            {"kind": "rating", "score": 5},
            {"kind": "feedback", "conversationId": "conv-1", "text": "no rating"},
            {"kind": "event", "userId": "mallory", "eventType": "login"},
            {"kind": "event", "userId": "bob", "eventType": "login", "colour": "red"},
            GOOD_LINES[1],
        ),
    )

    assert main(["--address", address, "ingest", path]) == 1

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "7 items: 2 accepted, 5 rejected"
    assert lines[1].startswith("line 3: INVALID_ARGUMENT: not valid JSON")
    assert lines[2:] == [
        'line 4: INVALID_ARGUMENT: "kind" must be "interaction", "feedback" or "event", '
        "not 'rating'",
        "line 5: INVALID_ARGUMENT: give exactly one of score, thumb or label (got none)",
        "line 6: INVALID_ARGUMENT: user_id: unknown user",
        "  user_id: unknown user",
        'line 7: INVALID_ARGUMENT: Message type "feedback.v1.LogEventRequest" has no field named '
        '"colour" at "LogEventRequest".',
    ]
    assert len(servicer.ingested) == 3


def test_missing_required_fields_are_left_to_the_server_to_name(
    address: str, servicer: RecordingServicer, tmp_path: Path
) -> None:
    path = write(tmp_path, jsonl({"kind": "event", "eventType": "login"}))

    assert main(["--address", address, "ingest", path]) == 0

    (message,) = servicer.ingested
    assert (message.event.user_id, message.event.event_type) == ("", "login")


def test_ingest_reads_standard_input_and_prints_json(
    address: str,
    servicer: RecordingServicer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    servicer.verdict = reject_unknown_user
    text = jsonl(GOOD_LINES[2], {"kind": "event", "userId": "mallory", "eventType": "login"})
    monkeypatch.setattr("sys.stdin", io.StringIO(text))

    assert main(["--address", address, "--json", "ingest", "-"]) == 1

    assert json.loads(capsys.readouterr().out) == {
        "item_count": 2,
        "accepted_count": 1,
        "duplicate_count": 0,
        "rejected_count": 1,
        "suppressed_count": 0,
        "rejections": [
            {
                "line": 2,
                "code": "INVALID_ARGUMENT",
                "message": "user_id: unknown user",
                "field_violations": [{"field": "user_id", "description": "unknown user"}],
            }
        ],
    }


def test_a_broken_stream_exits_1_saying_how_many_were_sent(
    address: str, servicer: RecordingServicer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer.plan("Ingest", Abort(grpc.StatusCode.UNAVAILABLE, "database unreachable"))
    path = write(tmp_path, jsonl(*GOOD_LINES))

    assert main(["--address", address, "ingest", path]) == 1

    assert capsys.readouterr().err.splitlines() == [
        "error: UNAVAILABLE: database unreachable",
        "  items sent before the failure: 3",
    ]


def test_a_file_that_cannot_be_opened_is_a_usage_error(
    address: str, servicer: RecordingServicer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--address", address, "ingest", str(tmp_path / "missing.jsonl")]) == 2

    assert "can't open" in capsys.readouterr().err
    assert not servicer.calls


def test_a_file_that_is_not_utf8_is_reported(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"kind": "event", "userId": "Ren\xe9", "eventType": "login"}\n')

    assert main(["--address", address, "ingest", str(path)]) == 1

    assert capsys.readouterr().err.startswith(f"error: cannot read {path}: 'utf-8' codec")
