"""The `feedback-server` process: one command to start, JSON logs per RPC, clean exit on signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from llmfeedback import FeedbackClient, NotFoundError, RetryPolicy


class ServerProcess:
    """`python -m server` in a child process, its stderr JSON lines collected as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server", "--address", "127.0.0.1:0", *args],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[dict[str, Any]] = []
        self._serving = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(self.process.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            entry = json.loads(line)
            self.lines.append(entry)
            if entry["message"] == "serving":
                self._serving.set()

    def wait_serving(self) -> str:
        assert self._serving.wait(30), f"server did not start: {self.lines}"
        return next(str(e["address"]) for e in self.lines if e["message"] == "serving")

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        code = self.process.wait(timeout=30)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        """Make sure no server outlives its test, whatever the test did."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        started.append(ServerProcess(*args, env=env))
        return started[-1]

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_on_embedded_sqlite_and_exits_cleanly(
    start_server: Callable[..., ServerProcess], data_dir: Path, signum: int
) -> None:
    server = start_server(env={"FEEDBACK_DATA_DIR": str(data_dir)})
    address = server.wait_serving()

    with FeedbackClient(address, retry=RetryPolicy(max_attempts=1)) as client:
        client.record_interaction("conv-p")
        client.submit_feedback("conv-p", score=4)

    assert server.stop(signum) == 0
    assert (data_dir / "feedback.sqlite3").exists()
    rpc_lines = [line for line in server.lines if line["message"] == "rpc"]
    assert [(line["method"], line["code"]) for line in rpc_lines] == [
        ("/feedback.v1.FeedbackService/RecordInteraction", "OK"),
        ("/feedback.v1.FeedbackService/SubmitFeedback", "OK"),
    ]
    assert all(line["duration_ms"] >= 0 for line in rpc_lines)
    assert server.lines[-1]["message"] == "stopped"


def test_logs_the_status_of_failed_calls(
    start_server: Callable[..., ServerProcess], data_dir: Path
) -> None:
    server = start_server("--data-dir", str(data_dir))
    address = server.wait_serving()

    with (
        FeedbackClient(address, retry=RetryPolicy(max_attempts=1)) as client,
        pytest.raises(NotFoundError, match="never recorded"),
    ):
        client.submit_feedback("ghost", score=4)

    assert server.stop(signal.SIGTERM) == 0
    codes = [line["code"] for line in server.lines if line["message"] == "rpc"]
    assert codes == ["NOT_FOUND"]


def test_migrate_command_creates_the_schema(data_dir: Path) -> None:
    url = f"sqlite:///{data_dir}/migrated.sqlite3"
    result = subprocess.run(
        [sys.executable, "-m", "server", "migrate", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stderr.splitlines()[-1])["message"] == "migrated"
    import sqlite3

    tables = {
        row[0]
        for row in sqlite3.connect(data_dir / "migrated.sqlite3").execute(
            "select name from sqlite_master where type = 'table'"
        )
    }
    assert {"interactions", "feedback", "events", "alembic_version"} <= tables


def test_unusable_database_fails_fast_with_a_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "--address",
            "127.0.0.1:0",
            "--database-url",
            "postgresql://postgres@127.0.0.1:1/none",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert json.loads(result.stderr.splitlines()[-1])["message"] == "fatal error"
