"""feedbackctl import: FilAgent's SQLite log and UP2D8's mongoexport files, built here from the
schemas the seeds describe, loaded with their original times, exactly once however often run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1 import stats_pb2
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from tests.e2e.cli_support import run
from tests.server_harness import ServerThread

START = (datetime.now(UTC) - timedelta(days=400)).replace(hour=0, minute=0, second=0, microsecond=0)
"""Midnight 400 days back: the first day of the made-up history."""

FILAGENT_SCHEMA = """
CREATE TABLE interaction_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL,
    input_hash TEXT,
    output_hash TEXT,
    user_feedback_score INTEGER,
    user_feedback_text TEXT,
    latency_ms REAL,
    tokens_used INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    metadata TEXT
);
CREATE INDEX idx_conversation_id ON interaction_logs(conversation_id);
CREATE INDEX idx_feedback_score ON interaction_logs(user_feedback_score);
CREATE INDEX idx_created_at ON interaction_logs(created_at);
"""


def filagent_file(
    path: Path, rows: int, *, broken: bool = False, spacing: timedelta = timedelta(days=1)
) -> Path:
    """FilAgent's memory/analytics.sqlite with `rows` rated turns, `spacing` apart; `broken` adds a
    score of 9, a time in the future and a row whose metadata is not JSON."""
    connection = sqlite3.connect(path)
    connection.executescript(FILAGENT_SCHEMA)
    values: list[tuple[object, ...]] = [
        (
            f"conv-{n % 7}",
            f"{n:064x}",
            f"{n + 1:064x}",
            1 + n % 5,
            "great" if n % 3 == 0 else None,
            100.0 + n,
            200 + n,
            # SQLite's CURRENT_TIMESTAMP format, UTC without an offset.
            (START + n * spacing + timedelta(hours=10)).strftime("%Y-%m-%d %H:%M:%S"),
            json.dumps({"submitted_at": "x", "message_count": n}),
        )
        for n in range(rows)
    ]
    if broken:
        future = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S")
        values += [
            ("conv-x", None, None, 9, None, None, None, values[0][7], None),
            ("conv-y", None, None, 3, None, None, None, future, None),
            ("conv-z", None, None, 3, None, None, None, values[0][7], "{not json"),
        ]
    connection.executemany(
        "INSERT INTO interaction_logs (conversation_id, input_hash, output_hash,"
        " user_feedback_score, user_feedback_text, latency_ms, tokens_used, created_at, metadata)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        values,
    )
    connection.commit()
    connection.close()
    return path


def daily_feedback(server: ServerThread, days: int) -> list[int]:
    with grpc.insecure_channel(server.address) as channel:
        stats = FeedbackServiceStub(channel).GetStats(
            pb.GetStatsRequest(
                start_time=_stamp(START),
                end_time=_stamp(START + timedelta(days=days)),
                bucket=stats_pb2.TIME_BUCKET_DAY,
            ),
            timeout=10,
        )
    return [bucket.feedback.total_count for bucket in stats.buckets]


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def test_filagent_history_lands_on_its_days_once_however_often_imported(
    server: ServerThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = filagent_file(tmp_path / "analytics.sqlite", 20)

    code, out, _ = run(server, capsys, "import", "filagent", str(path))
    again_code, again, _ = run(server, capsys, "import", "filagent", str(path))

    assert code == 0, out
    assert out.splitlines()[0] == (
        "40 records: 40 imported, 0 already there, 0 rejected by the server, 0 not importable"
    )
    assert again_code == 0
    assert again.splitlines()[0].startswith("40 records: 0 imported, 40 already there")
    assert daily_feedback(server, 20) == [1] * 20
    code, listed, _ = run(server, capsys, "--json", "stats")
    stats = json.loads(listed)
    assert stats["feedback"]["total_count"] == 20
    assert [stats["feedback"][f"score{s}_count"] for s in range(1, 6)] == [4] * 5
    assert stats["feedback"]["with_text_count"] == 7
    assert stats["interactions"]["avg_latency_ms"] == pytest.approx(109.5)


def test_a_dry_run_names_what_cannot_be_imported_and_sends_nothing(
    server: ServerThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = filagent_file(tmp_path / "analytics.sqlite", 3, broken=True)

    code, out, _ = run(server, capsys, "import", "filagent", str(path), "--dry-run")

    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "12 records: 7 would be sent, 5 cannot be imported"
    assert "row 4: user_feedback_score must be from 1 to 5, got 9" in lines
    assert sum(1 for line in lines if line.startswith("row 5: stored in the future")) == 2
    assert any(line.startswith("row 6: ") and "JSON" in line for line in lines)
    assert daily_feedback(server, 3) == [0, 0, 0]
    # Sent for real, the rest is stored and the same records are listed.
    code, out, _ = run(server, capsys, "import", "filagent", str(path))
    assert code == 1
    assert out.splitlines()[0] == (
        "12 records: 7 imported, 0 already there, 0 rejected by the server, 5 not importable"
    )
    assert "row 4: user_feedback_score must be from 1 to 5, got 9" in out.splitlines()
    assert daily_feedback(server, 3) == [1, 1, 1]


def test_up2d8_ratings_and_events_from_mongoexport_json_lines(
    server: ServerThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def date(days: int, hours: int = 12) -> dict[str, object]:
        moment = START + timedelta(days=days, hours=hours)
        return {"$date": moment.isoformat().replace("+00:00", "Z")}

    ratings = [
        {"_id": {"$oid": "65f0000000000000000000a1"}, "message_id": "msg-1", "user_id": "ann",
         "rating": "5", "timestamp": date(0)},
        {"_id": {"$oid": "65f0000000000000000000a2"}, "message_id": "msg-1", "user_id": "bob",
         "rating": "thumbs_down", "timestamp": date(1)},
        # Ann changes her mind on day 2; her day-0 vote becomes history.
        {"_id": {"$oid": "65f0000000000000000000a3"}, "message_id": "msg-1", "user_id": "ann",
         "rating": "2/5", "timestamp": {"$date": {"$numberLong": str(
             int((START + timedelta(days=2, hours=12)).timestamp() * 1000))}}},
        {"_id": {"$oid": "65f0000000000000000000a4"}, "message_id": "msg-2", "user_id": "cy",
         "rating": "good", "timestamp": date(1)},
    ]  # fmt: skip
    events = [
        {"_id": {"$oid": f"65f00000000000000000b00{n}"}, "user_id": "ann",
         "event_type": "page_view", "details": {"page": f"/p{n}", "at": date(n)},
         "timestamp": date(n, 9)}
        for n in range(3)
    ] + [{"user_id": "ann", "event_type": "click"}]  # fmt: skip
    feedback_file = tmp_path / "feedback.json"
    feedback_file.write_text("".join(json.dumps(line) + "\n" for line in reversed(ratings)))
    analytics_file = tmp_path / "analytics.json"
    analytics_file.write_text("".join(json.dumps(line) + "\n" for line in events))

    code, out, _ = run(
        server, capsys, "import", "up2d8",
        "--feedback", str(feedback_file), "--analytics", str(analytics_file),
    )  # fmt: skip

    assert code == 1  # the event without a timestamp
    assert out.splitlines()[0] == (
        "10 records: 9 imported, 0 already there, 0 rejected by the server, 1 not importable"
    )
    assert "analytics.json line 4: timestamp is required" in out
    assert daily_feedback(server, 3) == [0, 2, 1]  # current votes only: ann's is of day 2
    code, listed, _ = run(server, capsys, "--json", "stats")
    stats = json.loads(listed)
    assert stats["feedback"]["thumbs_down_count"] == 1
    assert stats["feedback"]["thumbs_up_count"] == 1
    assert stats["feedback"]["score2_count"] == 1
    assert stats["events"]["type_counts"] == {"page_view": 3}
    code, history, _ = run(server, capsys, "history", "msg-1", "ann")
    assert code == 0
    assert history.index("score 5") < history.index("score 2")


def test_an_import_killed_halfway_finishes_exactly_when_run_again(
    server: ServerThread, tmp_path: Path
) -> None:
    path = filagent_file(tmp_path / "analytics.sqlite", 3000, spacing=timedelta(minutes=10))
    command = [sys.executable, "-m", "llmfeedback.cli", "--address", server.address]
    started = subprocess.Popen(
        [*command, "import", "filagent", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while sum(daily_feedback(server, 400)) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(started.pid, signal.SIGKILL)
    started.wait()
    stored = sum(daily_feedback(server, 400))

    finished = subprocess.run(
        [*command, "import", "filagent", str(path)], capture_output=True, text=True, check=False
    )

    assert stored > 0
    assert finished.returncode == 0, finished.stdout + finished.stderr
    counts = [int(word) for word in finished.stdout.split("\n")[0].split() if word.isdigit()]
    total, imported, already, rejected, refused = counts
    assert (total, rejected, refused) == (6000, 0, 0)
    assert imported + already == 6000
    assert already >= 2 * stored - 1  # what the killed run stored (a turn may lack its rating)
    # Every rating is there exactly once.
    code_stats = FeedbackServiceStub(grpc.insecure_channel(server.address)).GetStats(
        pb.GetStatsRequest(), timeout=10
    )
    assert code_stats.feedback.total_count == 3000
    assert code_stats.interactions.total_count == 3000
