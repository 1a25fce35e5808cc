"""feedbackctl erase and export-user against the fake service: deadlines and broken calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from llmfeedback import Erasure, Interaction
from llmfeedback.cli import main
from llmfeedback.proto.feedback.v1 import feedback_service_pb2

from .fake_service import Abort, Stall, Stream

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from .fake_service import RecordingServicer


def test_erase_waits_without_a_deadline_unless_given(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = Erasure(id=1)
    servicer.plan(
        "EraseUser",
        feedback_service_pb2.EraseUserResponse(erasure=entry),
        feedback_service_pb2.EraseUserResponse(erasure=entry),
    )

    assert main(["--address", address, "erase", "--user", "alice", "--yes"]) == 0
    assert main(["--address", address, "erase", "--user", "alice", "--yes", "--timeout", "30"]) == 0

    unbounded, bounded = (call.time_remaining for call in servicer.calls["EraseUser"])
    assert unbounded is None or unbounded > 10**9
    assert bounded is not None
    assert 25 < bounded < 31


def test_an_erase_that_timed_out_says_to_run_it_again(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer.plan("EraseConversation", Stall(1.0))

    code = main(
        ["--address", address, "--timeout", "0.2", "erase", "--conversation", "c1", "--yes"]
    )

    assert code == 1
    assert capsys.readouterr().err.splitlines()[1:] == [
        "  the erasure of conversation 'c1' may go on, or have stopped halfway with writes about "
        "it refused: run the same command again, which waits for it or resumes it"
    ]


def test_an_erase_refused_for_good_has_no_hint(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer.plan("EraseUser", Abort(grpc.StatusCode.PERMISSION_DENIED, "needs the admin scope"))

    assert main(["--address", address, "erase", "--user", "alice", "--yes"]) == 4

    assert capsys.readouterr().err.splitlines()[1:] == []


def test_a_broken_export_leaves_the_file_as_it_was(
    address: str,
    servicer: RecordingServicer,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    servicer.plan(
        "ExportUserData",
        Stream(
            [feedback_service_pb2.ExportUserDataResponse(interactions=[Interaction(id=1)])],
            then=Abort(grpc.StatusCode.UNAVAILABLE, "database unreachable"),
        ),
    )
    output = tmp_path / "alice.jsonl"
    output.write_text("an older export\n", encoding="utf-8")

    code = main(["--address", address, "export-user", "alice", "-o", str(output)])

    assert code == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: UNAVAILABLE: database unreachable",
        f"  the export broke after 1 record ({output} is left as it was); it cannot be "
        "resumed: run the same command again",
    ]
    assert output.read_text(encoding="utf-8") == "an older export\n"
    assert [path.name for path in tmp_path.iterdir()] == ["alice.jsonl"]
    assert len(servicer.requests("ExportUserData")) == 1


def test_a_broken_export_to_standard_output_says_what_it_has(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer.plan(
        "ExportUserData",
        Stream(
            [feedback_service_pb2.ExportUserDataResponse(interactions=[Interaction(id=1)])],
            then=Abort(grpc.StatusCode.UNAVAILABLE, "database unreachable"),
        ),
    )

    assert main(["--address", address, "export-user", "alice"]) == 1

    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1
    assert "(which standard output has)" in captured.err
