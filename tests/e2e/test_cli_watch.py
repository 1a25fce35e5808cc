"""feedbackctl watch against the real server: what it prints, where it stops, and resuming."""

from __future__ import annotations

import json
import threading
import time

import pytest

from llmfeedback import FeedbackClient
from tests.e2e.cli_support import run
from tests.server_harness import ServerThread


def _later(client: FeedbackClient, *ratings: tuple[str, int]) -> threading.Thread:
    """Submit `ratings` (conversation, score) once the watch has had time to start."""

    def submit() -> None:
        time.sleep(1.0)
        for conversation, score in ratings:
            client.record_interaction(conversation)
            client.submit_feedback(conversation, score=score)

    thread = threading.Thread(target=submit)
    thread.start()
    return thread


@pytest.mark.database_independent
def test_watch_prints_json_lines_of_matching_records_and_the_position_to_continue_from(
    server: ServerThread, client: FeedbackClient, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = _later(client, ("c-good", 5), ("c-bad", 1), ("c-worse", 2))
    code, out, err = run(
        server, capsys, "--json", "watch", "feedback", "--max-score", "2", "--count", "2"
    )
    writer.join()

    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["feedback"]["conversation_id"] for line in lines] == ["c-bad", "c-worse"]
    assert err.strip() == f"continue with --from-position {lines[-1]['position']}"

    client.record_interaction("c-next")
    client.submit_feedback("c-next", score=1)
    code, out, err = run(
        server,
        capsys,
        *("--json", "watch", "feedback", "--max-score", "2", "--count", "1"),
        *("--from-position", lines[0]["position"]),
    )
    assert code == 0, err
    assert [json.loads(line)["feedback"]["conversation_id"] for line in out.splitlines()] == [
        "c-worse"
    ]


@pytest.mark.database_independent
def test_watch_prints_a_table_header_then_a_row_per_record(
    server: ServerThread, client: FeedbackClient, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = _later(client, ("c-table", 4))
    code, out, err = run(server, capsys, "watch", "feedback", "--count", "1")
    writer.join()

    assert code == 0, err
    header, row = out.splitlines()
    assert header.split()[:3] == ["ID", "CREATED", "CONVERSATION"]
    assert "c-table" in row.split()
    assert "score 4" in row


@pytest.mark.database_independent
def test_watch_refuses_a_time_range_and_filters_of_another_kind(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(server, capsys, "watch", "events", "--min-score", "3")
    assert code == 2
    assert "--min-score does not apply to events" in err

    code, _, err = run(server, capsys, "watch", "feedback", "--since", "2026-01-01")
    assert code == 2
    assert "unrecognized arguments: --since" in err


@pytest.mark.database_independent
def test_watch_from_a_bad_position_fails_with_the_servers_reason(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(server, capsys, "watch", "feedback", "--from-position", "nonsense")
    assert code == 1
    assert "start_position" in err
