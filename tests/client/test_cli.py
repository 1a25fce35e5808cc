"""feedbackctl end to end against the fake service: requests, human and JSON output, exit codes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import duration_pb2, json_format
from google.rpc import error_details_pb2

from llmfeedback import (
    EventStats,
    Feedback,
    FeedbackStats,
    GetStatsResponse,
    InteractionStats,
    ListFeedbackResponse,
)
from llmfeedback.cli import main
from llmfeedback.proto.feedback.v1 import feedback_pb2, feedback_service_pb2
from llmfeedback.proto.feedback.v1.stats_pb2 import Percentiles

from .fake_service import Abort, unused_address

if TYPE_CHECKING:
    from .fake_service import RecordingServicer

STATS = GetStatsResponse(
    feedback=FeedbackStats(
        total_count=14,
        scored_count=10,
        avg_score=4.2,
        score2_count=1,
        score3_count=1,
        score4_count=4,
        score5_count=4,
        thumbs_up_count=3,
        thumbs_down_count=0,
        label_counts={"good": 1},
        avg_latency_ms=812.5,
        with_text_count=3,
        thumbs_up_ratio=1.0,
        latency_ms_percentiles=Percentiles(p50=600.5, p90=900, p95=1200, p99=2500),
    ),
    interactions=InteractionStats(
        total_count=40,
        avg_latency_ms=700.25,
        avg_total_tokens=312,
        total_tokens_percentiles=Percentiles(p50=300, p90=500, p95=510, p99=700),
    ),
    events=EventStats(total_count=7, type_counts={"page_view": 5, "click": 2}),
)


def run(address: str, *arguments: str) -> int:
    return main(["--address", address, *arguments])


def test_record_maps_options_and_prints_aligned_fields(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = run(
        address,
        "record",
        "conv-1",
        "--message-id=msg-1",
        "--model=gpt-4o-mini",
        "--input-text=Capital of France?",
        "--output-text=Paris.",
        "--latency-ms=812.5",
        "--prompt-tokens=0",
        "--metadata",
        '{"app": "demo"}',
        "--occur-time=2024-05-01T14:00:00+02:00",
    )

    assert exit_code == 0
    (request,) = servicer.requests("RecordInteraction")
    assert isinstance(request, feedback_service_pb2.RecordInteractionRequest)
    assert (request.conversation_id, request.message_id) == ("conv-1", "msg-1")
    assert (request.input_text, request.output_text) == ("Capital of France?", "Paris.")
    assert request.HasField("prompt_tokens")
    assert not request.HasField("completion_tokens")
    assert json_format.MessageToDict(request.metadata) == {"app": "demo"}
    assert request.occur_time.ToJsonString() == "2024-05-01T12:00:00Z"
    output = capsys.readouterr()
    assert output.out.splitlines() == ["id                1", "conversation_id   conv-1"]
    assert output.err == ""


@pytest.mark.parametrize(
    ("rating_options", "kind", "value"),
    [
        (["--score", "4"], "score", 4),
        (["--thumb", "up"], "thumb", feedback_pb2.THUMB_UP),
        (["--thumb", "down"], "thumb", feedback_pb2.THUMB_DOWN),
        (["--label", "good"], "label", "good"),
    ],
)
def test_submit_sends_the_chosen_rating(
    address: str,
    servicer: RecordingServicer,
    rating_options: list[str],
    kind: str,
    value: object,
) -> None:
    assert run(address, "submit", "conv-1", *rating_options, "--text", "ok") == 0

    (request,) = servicer.requests("SubmitFeedback")
    assert isinstance(request, feedback_service_pb2.SubmitFeedbackRequest)
    assert request.WhichOneof("rating") == kind
    assert getattr(request, kind) == value
    assert request.text == "ok"


def test_submit_by_message_with_every_option(address: str, servicer: RecordingServicer) -> None:
    exit_code = run(
        address,
        "submit",
        "--message-id=msg-1",
        "--user-id=alice",
        "--score=5",
        "--latency-ms=0",
        "--tokens-used=42",
        "--input-hash=" + "a" * 64,
        "--output-hash=" + "b" * 64,
        '--metadata={"source": "cli"}',
    )

    assert exit_code == 0
    (request,) = servicer.requests("SubmitFeedback")
    assert isinstance(request, feedback_service_pb2.SubmitFeedbackRequest)
    assert request.conversation_id == ""
    assert (request.message_id, request.user_id) == ("msg-1", "alice")
    assert request.HasField("latency_ms")
    assert request.tokens_used == 42
    assert (request.input_hash, request.output_hash) == ("a" * 64, "b" * 64)
    assert json_format.MessageToDict(request.metadata) == {"source": "cli"}


def test_submit_json_prints_one_document_with_proto_field_names(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(address, "--json", "submit", "conv-1", "--score", "5") == 0

    document = json.loads(capsys.readouterr().out)
    assert document == {"id": 1, "conversation_id": "conv-1", "score": 5}


def test_thumb_is_printed_as_a_word(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer.plan(
        "SubmitFeedback",
        feedback_service_pb2.SubmitFeedbackResponse(
            feedback=Feedback(id=9, conversation_id="conv-1", thumb=feedback_pb2.THUMB_DOWN)
        ),
    )

    assert run(address, "submit", "conv-1", "--thumb", "down") == 0

    assert "thumb             down" in capsys.readouterr().out.splitlines()


def test_log_maps_details_and_event_time(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = run(
        address,
        "log",
        "alice",
        "page_view",
        "--details",
        '{"path": "/pricing"}',
        "--event-time",
        "2024-05-01T12:00:00",
        "--json",
    )

    assert exit_code == 0
    (request,) = servicer.requests("LogEvent")
    assert isinstance(request, feedback_service_pb2.LogEventRequest)
    assert json_format.MessageToDict(request.details) == {"path": "/pricing"}
    # A time without an offset is read as UTC.
    assert request.event_time.ToJsonString() == "2024-05-01T12:00:00Z"
    assert json.loads(capsys.readouterr().out)["event_type"] == "page_view"


def test_stats_prints_a_table_with_the_score_distribution(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer.plan("GetStats", STATS)

    assert run(address, "stats") == 0

    assert capsys.readouterr().out.splitlines() == [
        "feedback          14 total, 10 scored, 3 with text",
        "  avg score       4.20",
        "  score               1    2    3    4    5",
        "  count               0    1    1    4    4",
        "  thumbs          up 3, down 0 (100% up)",
        "  labels          good 1",
        "  avg latency     812.5 ms",
        "  latency p50-p99 600.5 / 900 / 1200 / 2500 ms",
        "  avg tokens      -",
        "  tokens p50-p99  -",
        "interactions      40 total",
        "  avg latency     700.25 ms",
        "  latency p50-p99 -",
        "  avg tokens      312",
        "  tokens p50-p99  300 / 500 / 510 / 700",
        "events            7 total",
        "  by type         page_view 5, click 2",
    ]


def test_stats_maps_filters_and_time_range(address: str, servicer: RecordingServicer) -> None:
    exit_code = run(
        address,
        "stats",
        "--conversation-id=conv-1",
        "--user-id=alice",
        "--since=2024-05-01T00:00:00Z",
        "--until=2024-05-02",
    )

    assert exit_code == 0
    (request,) = servicer.requests("GetStats")
    assert isinstance(request, feedback_service_pb2.GetStatsRequest)
    assert (request.conversation_id, request.user_id, request.message_id) == ("conv-1", "alice", "")
    assert request.start_time.ToJsonString() == "2024-05-01T00:00:00Z"
    assert request.end_time.ToJsonString() == "2024-05-02T00:00:00Z"


def test_stats_says_when_events_do_not_apply(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(address, "stats", "--conversation-id=conv-1") == 0

    output = capsys.readouterr().out
    assert "  avg score       -" in output
    assert "events            n/a (events have no conversation, message or model)" in output


def test_stats_json_includes_zero_counts(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer.plan("GetStats", STATS)

    # Global options also work after the subcommand.
    assert main(["stats", "--json", "--address", address]) == 0

    document = json.loads(capsys.readouterr().out)
    assert document["feedback"]["score1_count"] == 0
    assert document["feedback"]["avg_score"] == 4.2
    assert document["events"]["type_counts"] == {"page_view": 5, "click": 2}


def plan_three_pages(servicer: RecordingServicer) -> None:
    servicer.plan(
        "ListFeedback",
        ListFeedbackResponse(
            feedback=[
                Feedback(
                    id=3,
                    conversation_id="conv-1",
                    message_id="msg-1",
                    user_id="alice",
                    score=4,
                    text="great answer,\nreally helpful and complete, with a long comment after",
                ),
                Feedback(id=2, conversation_id="conv-22", thumb=feedback_pb2.THUMB_DOWN),
            ],
            next_page_token="page-2",
        ),
        ListFeedbackResponse(
            feedback=[Feedback(id=1, conversation_id="conv-1", label="good")],
            next_page_token="page-3",
        ),
        ListFeedbackResponse(),
    )


def test_list_follows_pages_and_prints_a_table(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_three_pages(servicer)

    assert run(address, "list", "--user-id=alice", "--min-score=2", "--max-score=5") == 0

    assert capsys.readouterr().out.splitlines() == [
        "ID  CREATED  CONVERSATION  MESSAGE  USER   RATING      TEXT",
        "3   -        conv-1        msg-1    alice  score 4     "
        "great answer, really helpful and complete, wi...",
        "2   -        conv-22       -        -      thumb down",
        "1   -        conv-1        -        -      label good",
    ]
    requests = servicer.requests("ListFeedback")
    assert len(requests) == 3
    for request in requests:
        assert isinstance(request, feedback_service_pb2.ListFeedbackRequest)
        assert (request.user_id, request.min_score, request.max_score) == ("alice", 2, 5)


def test_list_limit_stops_early_and_says_so(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_three_pages(servicer)

    assert run(address, "list", "--limit=1") == 0

    output = capsys.readouterr()
    assert len(output.out.splitlines()) == 2
    assert output.err == "(first 1 shown; pass --limit 0 for all)\n"
    (request,) = servicer.requests("ListFeedback")
    assert isinstance(request, feedback_service_pb2.ListFeedbackRequest)
    # One more than the limit, to learn whether the listing was cut short.
    assert request.page_size == 2


def test_list_json_is_one_document(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_three_pages(servicer)

    assert run(address, "--json", "list", "--limit=2") == 0

    output = capsys.readouterr()
    document = json.loads(output.out)
    assert [entry["id"] for entry in document["feedback"]] == [3, 2]
    assert document["feedback"][0]["conversation_id"] == "conv-1"
    assert output.err == ""


def test_list_with_no_results(address: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(address, "list") == 0

    assert capsys.readouterr().out == "no feedback found\n"


def test_server_errors_print_code_message_and_violations_without_traceback(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="score", description="1 to 5"),
            error_details_pb2.BadRequest.FieldViolation(field="text", description="too long"),
        ]
    )
    servicer.plan(
        "SubmitFeedback",
        Abort(grpc.StatusCode.INVALID_ARGUMENT, "2 invalid fields", [bad_request]),
    )

    assert run(address, "submit", "conv-1", "--score", "9") == 1

    output = capsys.readouterr()
    assert output.out == ""
    assert output.err.splitlines() == [
        "error: INVALID_ARGUMENT: 2 invalid fields",
        "  score: 1 to 5",
        "  text: too long",
    ]


def test_not_found_exits_1(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer.plan("SubmitFeedback", Abort(grpc.StatusCode.NOT_FOUND, "conversation conv-9"))

    assert run(address, "submit", "conv-9", "--label", "bad") == 1

    assert capsys.readouterr().err == "error: NOT_FOUND: conversation conv-9\n"


def test_retry_hint_is_printed(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    retry_info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=60))
    servicer.plan("LogEvent", Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota", [retry_info]))

    assert run(address, "log", "alice", "click") == 1

    assert capsys.readouterr().err == "error: RESOURCE_EXHAUSTED: quota\n  retry after 60 s\n"


def test_unreachable_service_exits_1_with_unavailable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--address", unused_address(), "--timeout", "0.5", "stats"]) == 1

    error_output = capsys.readouterr().err
    assert error_output.startswith("error: UNAVAILABLE: ")
    assert "Traceback" not in error_output


def test_address_comes_from_the_environment(
    address: str, servicer: RecordingServicer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_ADDRESS", address)

    assert main(["stats"]) == 0
    assert len(servicer.requests("GetStats")) == 1


@pytest.mark.parametrize(
    "arguments",
    [
        [],
        ["submit", "conv-1"],
        ["submit", "conv-1", "--score", "5", "--thumb", "up"],
        ["submit", "conv-1", "--thumb", "sideways"],
        ["submit", "conv-1", "--score", "five"],
        ["record", "conv-1", "--metadata", "{not json"],
        ["record", "conv-1", "--metadata", "[1, 2]"],
        ["record", "conv-1", "--input-text", "hi", "--input-hash", "ab"],
        ["stats", "--since", "yesterday"],
        ["list", "--limit", "-1"],
        ["--timeout", "0", "stats"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2_before_any_call(
    address: str,
    servicer: RecordingServicer,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
) -> None:
    assert run(address, *arguments) == 2

    assert "usage: feedbackctl" in capsys.readouterr().err
    assert not servicer.calls


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0

    help_text = capsys.readouterr().out
    for command in ("record", "submit", "log", "stats", "list", "ingest"):
        assert command in help_text
