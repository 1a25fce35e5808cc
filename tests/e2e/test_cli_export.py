"""feedbackctl export and list --kind against the real server: files, formats and resuming."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmfeedback import EventItem, FeedbackClient, FeedbackItem, RetryPolicy
from server.config import Settings
from tests.databases import sqlite_url
from tests.e2e.cli_support import run
from tests.server_harness import ServerThread


def jsonl_ids(path: Path) -> list[int]:
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]


def log_events(client: FeedbackClient, count: int) -> list[int]:
    results = client.log_events(
        EventItem(f"user-{n % 2}", "page_view", details={"n": n}) for n in range(count)
    )
    return [result.id for result in results.results]


def test_export_feedback_as_jsonl_matches_the_listing(
    server: ServerThread,
    client: FeedbackClient,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    client.record_interaction("conv-1", message_id="m1", user_id="u1", model="gpt-4o")
    client.submit_feedback_batch(
        [
            FeedbackItem(message_id="m1", score=4, text="ok", metadata={"k": [1, "x"]}),
            FeedbackItem("conv-1", thumb=False, latency_ms=2.5),
            FeedbackItem("conv-1", label="good"),
        ]
    )
    output = tmp_path / "feedback.jsonl"

    code, out, err = run(server, capsys, "export", "feedback", "--output", str(output))

    assert code == 0, err
    assert out == f"exported 3 feedback to {output}\n"
    assert "3 records" in err
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    listed = list(client.iter_feedback(order="oldest_first"))
    assert [row["id"] for row in rows] == [f.id for f in listed]
    assert rows[0] == {
        "id": listed[0].id,
        "create_time": listed[0].create_time.ToJsonString(),
        "conversation_id": "conv-1",
        "message_id": "m1",
        "user_id": "u1",
        "interaction_id": listed[0].interaction_id,
        "model": "gpt-4o",
        "rating_kind": "score",
        "score": 4,
        "thumb": None,
        "label": None,
        "text": "ok",
        "latency_ms": None,
        "tokens_used": None,
        "input_hash": None,
        "output_hash": None,
        "metadata": {"k": [1, "x"]},
        "input_hash_kind": None,
        "output_hash_kind": None,
        "redactions": {},
    }
    assert (rows[1]["rating_kind"], rows[1]["thumb"], rows[1]["latency_ms"]) == (
        "thumb",
        "down",
        2.5,
    )
    assert (rows[2]["rating_kind"], rows[2]["label"]) == ("label", "good")
    assert not Path(f"{output}.resume").exists()


def test_export_events_as_csv_with_filters(
    server: ServerThread,
    client: FeedbackClient,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    ids = log_events(client, 10)
    output = tmp_path / "events.csv"

    code, out, err = run(
        server, capsys, "--json", "export", "events", "-o", str(output), "--user-id", "user-1",
        "--order", "newest",
    )  # fmt: skip

    assert code == 0, err
    assert json.loads(out) == {
        "kind": "events",
        "file": str(output),
        "records": 5,
        "complete": True,
    }
    with output.open(newline="", encoding="utf-8") as file:
        lines = list(csv.reader(file))
    assert lines[0] == [
        "id",
        "event_time",
        "receive_time",
        "user_id",
        "event_type",
        "details",
        "redactions",
    ]
    assert [int(line[0]) for line in lines[1:]] == ids[1::2][::-1]
    assert {line[3] for line in lines[1:]} == {"user-1"}
    assert json.loads(lines[1][5]) == {"n": 9}


def test_an_export_stopped_after_some_chunks_resumes_without_gap_or_repeat(
    server: ServerThread,
    client: FeedbackClient,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    ids = log_events(client, 2500)
    output = tmp_path / "events.jsonl"
    command = ("export", "events", "-o", str(output))

    stopped = run(server, capsys, *command, "--max-chunks", "2")
    refused = run(server, capsys, *command)
    mismatched = run(server, capsys, *command, "--resume", "--user-id", "user-0")
    resumed = run(server, capsys, *command, "--resume")

    assert stopped[0] == 0
    assert "stopped after 2 chunks with 2000 events" in stopped[1]
    assert refused[0] == 1
    assert "pass --resume to continue it" in refused[2]
    assert mismatched[0] == 1
    assert "resume it with the same ones" in mismatched[2]
    assert resumed[0] == 0, resumed[2]
    assert resumed[1] == f"exported 2500 events to {output}\n"
    assert jsonl_ids(output) == ids
    assert not Path(f"{output}.resume").exists()


def test_resume_drops_a_half_written_chunk(
    server: ServerThread,
    client: FeedbackClient,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    ids = log_events(client, 1500)
    output = tmp_path / "events.csv"
    assert run(server, capsys, "export", "events", "-o", str(output), "--max-chunks", "1")[0] == 0
    with output.open("ab") as file:  # what a crash in the middle of the next chunk leaves
        file.write(b"1001,2025-01-01T00:00:00Z,2025-01-01T00:0")

    code, _, err = run(server, capsys, "export", "events", "-o", str(output), "--resume")

    assert code == 0, err
    with output.open(newline="", encoding="utf-8") as file:
        lines = list(csv.reader(file))
    assert [int(line[0]) for line in lines[1:]] == ids
    assert lines[0][0] == "id"


@pytest.mark.database_independent
def test_a_rejected_export_leaves_no_files(
    server: ServerThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "out").mkdir()
    output = tmp_path / "out" / "events.jsonl"

    code, _, err = run(server, capsys, "export", "events", "-o", str(output), "--user-id", "a b")

    assert code == 1
    assert err.startswith("error: INVALID_ARGUMENT")
    assert "  user_id: must be" in err
    assert "--resume" not in err
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.database_independent
def test_resume_without_an_interrupted_export_fails(
    server: ServerThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(server, capsys, "export", "events", "-o", str(tmp_path / "x"), "--resume")

    assert code == 1
    assert "nothing to resume" in err


@pytest.mark.database_independent
def test_list_kinds_and_filters_that_do_not_apply(
    server: ServerThread, client: FeedbackClient, capsys: pytest.CaptureFixture[str]
) -> None:
    client.record_interaction("conv-1", message_id="m1", model="gpt-4o", latency_ms=80)
    client.log_event("user-1", "signup", details={"plan": "pro"})

    interactions = run(server, capsys, "list", "--kind", "interactions", "--model", "gpt-4o")
    events = run(server, capsys, "--json", "list", "--kind", "events", "--event-type", "signup")
    wrong = run(server, capsys, "list", "--kind", "events", "--conversation-id", "conv-1")

    assert interactions[0] == 0
    assert interactions[1].splitlines()[0].split() == [
        "ID", "OCCURRED", "CONVERSATION", "MESSAGE", "USER", "MODEL", "LATENCY", "TOKENS",
    ]  # fmt: skip
    assert "gpt-4o" in interactions[1]
    assert "80 ms" in interactions[1]
    assert events[0] == 0
    assert [e["details"] for e in json.loads(events[1])["events"]] == [{"plan": "pro"}]
    assert wrong[0] == 2
    assert "--conversation-id does not apply to events" in wrong[2]


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[ServerThread]:
    """A server of its own on SQLite: the crash test needs the database of no other test."""
    settings = Settings(database_url=sqlite_url(tmp_path / "db.sqlite3"), log_level="WARNING")
    with ServerThread(settings) as running:
        yield running


def test_an_export_killed_at_any_moment_resumes_exactly(
    sqlite_server: ServerThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with FeedbackClient(sqlite_server.address, retry=RetryPolicy(max_attempts=1)) as client:
        ids = log_events(client, 40_000)
    output = tmp_path / "events.jsonl"
    sidecar = Path(f"{output}.resume")
    command = [sys.executable, "-m", "llmfeedback.cli", "--address", sqlite_server.address]
    export = subprocess.Popen(
        [*command, "export", "events", "-o", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and export.poll() is None:
            if sidecar.exists() and json.loads(sidecar.read_text() or "{}").get("rows", 0) > 0:
                break
            time.sleep(0.005)
        os.kill(export.pid, signal.SIGKILL)
    finally:
        export.wait(timeout=30)
    assert export.returncode == -signal.SIGKILL, "the export ended before it could be killed"

    code, _, err = run(sqlite_server, capsys, "export", "events", "-o", str(output), "--resume")

    assert code == 0, err
    assert jsonl_ids(output) == ids
    assert not sidecar.exists()
