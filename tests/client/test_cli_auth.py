"""feedbackctl with an API key: sent by every subcommand, never printed, refusals explained."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2

from llmfeedback.cli import EXIT_PERMISSION_DENIED, EXIT_UNAUTHENTICATED, main

from .fake_service import Abort

if TYPE_CHECKING:
    from pathlib import Path

    from .fake_service import RecordingServicer

KEY = "fbk_admin_7Hq3ZpW0sLmX2cVb"

# Every subcommand with the arguments it needs, and the RPC it makes.
SUBCOMMANDS: list[tuple[list[str], str]] = [
    (["record", "conv-1"], "RecordInteraction"),
    (["submit", "conv-1", "--score", "5"], "SubmitFeedback"),
    (["log", "alice", "click"], "LogEvent"),
    (["history", "msg-1", "alice"], "ListFeedbackHistory"),
    (["stats"], "GetStats"),
    (["list"], "ListFeedback"),
    (["export", "events", "--output", "{tmp}/events.jsonl"], "ExportEvents"),
    (["ingest", "{tmp}/items.jsonl"], "Ingest"),
]


def arguments_in(tmp_path: Path, arguments: list[str]) -> list[str]:
    """The arguments with {tmp} replaced, and the ingest input written."""
    (tmp_path / "items.jsonl").write_text('{"kind": "event", "userId": "a", "eventType": "b"}\n')
    return [argument.replace("{tmp}", str(tmp_path)) for argument in arguments]


@pytest.mark.parametrize(("arguments", "method"), SUBCOMMANDS)
def test_every_subcommand_sends_the_key_given_before_it(
    address: str, servicer: RecordingServicer, tmp_path: Path, arguments: list[str], method: str
) -> None:
    exit_code = main(["--address", address, "--api-key", KEY, *arguments_in(tmp_path, arguments)])

    assert exit_code == 0
    (call,) = servicer.calls[method]
    assert call.metadata["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(("arguments", "method"), SUBCOMMANDS)
def test_every_subcommand_sends_the_key_from_the_environment(
    address: str,
    servicer: RecordingServicer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    arguments: list[str],
    method: str,
) -> None:
    monkeypatch.setenv("FEEDBACK_API_KEY", KEY)

    assert main(["--address", address, *arguments_in(tmp_path, arguments)]) == 0

    (call,) = servicer.calls[method]
    assert call.metadata["authorization"] == f"Bearer {KEY}"


def test_the_key_option_works_after_the_subcommand_and_wins_over_the_environment(
    address: str, servicer: RecordingServicer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_API_KEY", "fbk_from_env")

    assert main(["--address", address, "stats", "--api-key", KEY]) == 0

    (call,) = servicer.calls["GetStats"]
    assert call.metadata["authorization"] == f"Bearer {KEY}"


def test_without_a_key_nothing_is_sent(address: str, servicer: RecordingServicer) -> None:
    assert main(["--address", address, "stats"]) == 0

    (call,) = servicer.calls["GetStats"]
    assert "authorization" not in call.metadata


def test_no_key_and_unauthenticated_exits_3_saying_how_to_give_one(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer.plan("GetStats", Abort(grpc.StatusCode.UNAUTHENTICATED, "missing API key"))

    assert main(["--address", address, "stats"]) == EXIT_UNAUTHENTICATED == 3

    output = capsys.readouterr()
    assert output.err.splitlines() == [
        "error: UNAUTHENTICATED: missing API key; no API key was given: pass --api-key or set "
        "FEEDBACK_API_KEY"
    ]
    assert output.out == ""
    assert len(servicer.calls["GetStats"]) == 1  # never retried


def test_a_refused_key_exits_3_without_printing_it_even_if_the_server_echoes_it(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer.plan("LogEvent", Abort(grpc.StatusCode.UNAUTHENTICATED, f"unknown API key {KEY}"))

    assert main(["--address", address, "--api-key", KEY, "log", "alice", "click"]) == 3

    output = capsys.readouterr()
    assert output.err.splitlines() == [
        "error: UNAUTHENTICATED: unknown API key [redacted]; the API key was refused: check it is "
        "complete and not revoked"
    ]
    assert KEY not in output.out + output.err


def test_a_missing_scope_exits_4_naming_the_scope(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    info = error_details_pb2.ErrorInfo(
        reason="MISSING_SCOPE", domain="feedback.v1", metadata={"required_scope": "export"}
    )
    denial = Abort(grpc.StatusCode.PERMISSION_DENIED, "this key cannot export", [info])
    servicer.plan("ExportFeedback", denial)

    output = str(tmp_path / "feedback.jsonl")
    exit_code = main(["--address", address, "--api-key", KEY, "export", "feedback", "-o", output])

    assert exit_code == EXIT_PERMISSION_DENIED == 4
    assert capsys.readouterr().err.splitlines() == [
        'error: PERMISSION_DENIED: this key cannot export; the API key lacks the "export" scope'
    ]
    assert len(servicer.calls["ExportFeedback"]) == 1


def test_permission_denied_without_a_scope_still_exits_4(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer.plan("GetStats", Abort(grpc.StatusCode.PERMISSION_DENIED, "denied"))

    assert main(["--address", address, "--api-key", KEY, "stats"]) == 4
    assert capsys.readouterr().err == (
        "error: PERMISSION_DENIED: denied; the API key does not allow this command\n"
    )


def test_a_refused_ingest_exits_3(
    address: str, servicer: RecordingServicer, tmp_path: Path
) -> None:
    servicer.plan("Ingest", Abort(grpc.StatusCode.UNAUTHENTICATED, "revoked"))
    arguments = arguments_in(tmp_path, ["ingest", "{tmp}/items.jsonl"])

    assert main(["--address", address, "--api-key", KEY, *arguments]) == 3


@pytest.mark.parametrize(
    ("key", "complaint"),
    [
        ("", "argument --api-key: the key is empty"),
        ("fbk_has space", "argument --api-key: the key must be printable ASCII without spaces"),
    ],
)
def test_a_malformed_key_option_exits_2_without_repeating_it(
    address: str,
    servicer: RecordingServicer,
    capsys: pytest.CaptureFixture[str],
    key: str,
    complaint: str,
) -> None:
    assert main(["--address", address, "--api-key", key, "stats"]) == 2

    err = capsys.readouterr().err
    assert complaint in err
    assert "has space" not in err
    assert servicer.calls == {}


def test_a_malformed_key_in_the_environment_exits_2_naming_the_variable(
    address: str,
    servicer: RecordingServicer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEEDBACK_API_KEY", "fbk_secret\nvalue")

    assert main(["--address", address, "stats"]) == 2

    err = capsys.readouterr().err
    assert err.startswith("feedbackctl: error: FEEDBACK_API_KEY must be printable ASCII")
    assert "secret" not in err
    assert servicer.calls == {}


def test_the_help_names_the_variables_and_never_a_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_API_KEY", KEY)

    assert main(["stats", "--help"]) == 0

    help_text = " ".join(capsys.readouterr().out.split())
    for name in ("FEEDBACK_API_KEY", "FEEDBACK_TLS=1", "FEEDBACK_CA_FILE", "FEEDBACK_CLIENT_CERT"):
        assert name in help_text
    assert "--no-tls" in help_text
    assert KEY not in help_text


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        (["--client-cert", "client.pem"], "needs both a client certificate and its key"),
        (["--client-key", "client.key"], "needs both a client certificate and its key"),
        (["--no-tls", "--ca-file", "ca.pem"], "tls=False contradicts ca_file"),
        (["--ca-file", "{tmp}/absent.pem"], "No such file or directory"),
    ],
)
def test_wrong_tls_options_exit_2_before_any_call(
    address: str,
    servicer: RecordingServicer,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    options: list[str],
    complaint: str,
) -> None:
    options = [option.replace("{tmp}", str(tmp_path)) for option in options]

    assert main(["--address", address, *options, "stats"]) == 2

    err = capsys.readouterr().err
    assert err.startswith("feedbackctl: error: ")
    assert complaint in err
    assert servicer.calls == {}


def test_a_missing_ca_file_says_what_the_file_was(
    address: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    absent = tmp_path / "absent.pem"

    assert main(["--address", address, "--ca-file", str(absent), "stats"]) == 2
    assert capsys.readouterr().err == (
        f"feedbackctl: error: [Errno 2] No such file or directory: '{absent}' "
        "(reading the CA file for TLS)\n"
    )


def test_no_tls_forces_plaintext_over_the_environment(
    address: str, servicer: RecordingServicer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_TLS", "1")

    assert main(["--address", address, "--no-tls", "stats"]) == 0
    assert len(servicer.calls["GetStats"]) == 1
