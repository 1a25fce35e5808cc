"""feedbackctl against the real server: the commands a person types, and what they see."""

from __future__ import annotations

import json

import pytest

from tests.e2e.cli_support import run
from tests.server_harness import ServerThread


def test_record_submit_log_and_read_back(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(server, capsys, "record", "conv-cli", "--message-id", "m1", "--latency-ms", "80")[0]
        == 0
    )
    assert run(server, capsys, "submit", "conv-cli", "--score", "4", "--text", "ok")[0] == 0
    assert run(server, capsys, "submit", "--message-id", "m1", "--thumb", "down")[0] == 0
    assert run(server, capsys, "log", "user-1", "page_view", "--details", '{"page": "/"}')[0] == 0

    code, out, _ = run(server, capsys, "--json", "stats")
    stats = json.loads(out)
    code_list, listed, _ = run(server, capsys, "list", "--message-id", "m1")

    assert code == 0
    assert stats["feedback"]["total_count"] == 2
    assert stats["feedback"]["avg_score"] == 4.0
    assert stats["feedback"]["thumbs_down_count"] == 1
    assert stats["events"]["type_counts"] == {"page_view": 1}
    assert code_list == 0
    assert "score 4" not in listed  # the conversation-level score has no message_id
    assert "thumb down" in listed


@pytest.mark.database_independent
def test_server_errors_print_every_violation_and_exit_1(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(server, capsys, "submit", "bad id", "--score", "0")

    assert code == 1
    assert out == ""
    assert err.startswith("error: INVALID_ARGUMENT:")
    assert "  conversation_id: must be 1-128 letters, digits, '-' or '_'" in err
    assert "  score: must be from 1 to 5, got 0" in err
    assert "Traceback" not in err


@pytest.mark.database_independent
def test_unknown_conversation_exits_1_with_not_found(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(server, capsys, "submit", "ghost", "--score", "3")

    assert code == 1
    assert err.startswith("error: NOT_FOUND: conversation 'ghost' was never recorded")
