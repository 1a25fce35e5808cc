"""SIGTERM under load: health turns NOT_SERVING, calls in flight and queued writes finish, and the
process exits 0 within the grace period with every acknowledged write stored."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmfeedback import FeedbackClient, FeedbackError, RetryPolicy
from tests.databases import sqlite_url
from tests.e2e.test_process import ServerProcess

WRITERS = 32
GRACE_SECONDS = 5.0
EXIT_MARGIN_SECONDS = 2.0


@pytest.fixture
def database_file(tmp_path: Path) -> Path:
    return tmp_path / "drain.sqlite3"


@pytest.fixture
def server(database_file: Path) -> Iterator[ServerProcess]:
    started = ServerProcess(
        "--database-url", sqlite_url(database_file), "--grace-period", str(GRACE_SECONDS)
    )
    try:
        yield started
    finally:
        started.kill()


class HealthWatch:
    """A Watch stream on the server's health, noting when it first says NOT_SERVING."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stream = health_pb2_grpc.HealthStub(self._channel).Watch(
            health_pb2.HealthCheckRequest(service="")
        )
        self.serving = threading.Event()
        self.not_serving_at: float | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            for response in self._stream:
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    self.serving.set()
                elif self.serving.is_set():
                    self.not_serving_at = time.monotonic()
                    # An open stream is a call in flight: end it, or the drain waits for it.
                    self._stream.cancel()
        except grpc.RpcError:
            pass

    def close(self) -> None:
        self._stream.cancel()
        self._thread.join(timeout=5)
        self._channel.close()


def test_sigterm_under_load_drains_and_loses_no_acknowledged_write(
    server: ServerProcess, database_file: Path
) -> None:
    address = server.wait_serving()
    watch = HealthWatch(address)
    assert watch.serving.wait(5)
    acknowledged: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    lock = threading.Lock()
    terminating = threading.Event()
    early: list[str] = []  # failures before SIGTERM

    def write(user_id: str) -> None:
        with FeedbackClient(address, retry=RetryPolicy(max_attempts=1)) as client:
            while True:
                try:
                    client.log_event(user_id, "drain")
                except FeedbackError as error:
                    with lock:
                        failures[error.code.name] += 1
                        if not terminating.is_set():
                            early.append(str(error))
                    return
                with lock:
                    acknowledged[user_id] += 1

    writers = [threading.Thread(target=write, args=(f"w{n}",)) for n in range(WRITERS)]
    for writer in writers:
        writer.start()
    time.sleep(1.5)
    before = sum(acknowledged.values())
    terminating.set()
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    exit_code = server.process.wait(timeout=GRACE_SECONDS + 30)
    exited_after = time.monotonic() - signalled
    for writer in writers:
        writer.join(timeout=10)
    watch.close()

    with sqlite3.connect(database_file) as connection:
        stored = Counter(
            dict(connection.execute("SELECT user_id, count(*) FROM events GROUP BY user_id"))
        )
    print(
        f"{before} writes before SIGTERM, {sum(acknowledged.values())} in all, exit after "
        f"{exited_after:.2f} s; failures after SIGTERM: {dict(failures)}"
    )
    assert early == []
    assert exit_code == 0
    assert exited_after < GRACE_SECONDS + EXIT_MARGIN_SECONDS
    assert before > 0
    # Sent before any refusal; arrival times on different connections cannot be compared.
    assert watch.not_serving_at is not None, "health never turned NOT_SERVING"
    # A refused call wrote nothing; no call was cut off mid-way, so the counts match exactly.
    assert set(failures) == {"UNAVAILABLE"}, failures
    assert stored == acknowledged
    assert server.lines[-1]["message"] == "stopped"
