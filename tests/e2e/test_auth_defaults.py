"""A real `feedback-server` bound beyond loopback (0.0.0.0, reached here on 127.0.0.1) and given
no key at all: it must refuse every unauthenticated call, never run open by accident."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from tests.e2e.auth_support import FEEDBACK_SERVER, Outcome, outcome_of


class Process:
    """`feedback-server --address 0.0.0.0:0` in a child process, its JSON log lines collected."""

    def __init__(self, data_dir: Path, environ: dict[str, str]) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_")}
        self.process = subprocess.Popen(
            [FEEDBACK_SERVER, "--address", "0.0.0.0:0", "--data-dir", str(data_dir)],
            stderr=subprocess.PIPE,
            text=True,
            env={**clean, **environ},
        )
        self.lines: list[dict[str, Any]] = []
        self._serving = threading.Event()
        assert self.process.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stderr,))
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.startswith("{"):
                self.lines.append(json.loads(line))
                if self.lines[-1]["message"] == "serving":
                    self._serving.set()

    def serving(self) -> dict[str, Any]:
        """The `serving` log line, once the server logged it."""
        assert self._serving.wait(60), f"the server did not start: {self.lines}"
        return next(line for line in self.lines if line["message"] == "serving")

    def serving_or_exit(self) -> dict[str, Any] | None:
        """The `serving` log line, or None if the server exited without serving."""
        for _ in range(600):
            if self._serving.wait(0.1):
                return self.serving()
            if self.process.poll() is not None:
                return None
        raise AssertionError(f"the server neither served nor exited: {self.lines}")

    def stop(self) -> None:
        """SIGTERM, then kill if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._reader.join(timeout=10)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    """Starts servers that are all stopped after the test."""
    started: list[Process] = []

    def run(name: str, **environ: str) -> Process:
        started.append(Process(tmp_path / name, environ))
        return started[-1]

    yield run
    for process in started:
        process.stop()


def unauthenticated_call(port: int) -> tuple[Outcome, str]:
    """A LogEvent without a key on 127.0.0.1:port, and the health status there."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        try:
            FeedbackServiceStub(channel).LogEvent(
                pb.LogEventRequest(user_id="u1", event_type="open_door"), timeout=10
            )
            outcome = Outcome(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            outcome = outcome_of(error)
    return outcome, health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)


def test_a_server_beyond_loopback_without_keys_refuses_every_unauthenticated_call(
    start: Any,
) -> None:
    """No --auth, no FEEDBACK_AUTH, no key created: locked, yet its health still answers."""
    server = start("default")
    serving = server.serving()
    outcome, health = unauthenticated_call(int(serving["port"]))

    assert serving["auth"] == "keys"
    assert str(serving["address"]).startswith("0.0.0.0:")
    assert (outcome.code, outcome.reason) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_MISSING")
    assert health == "SERVING"


def test_a_mistyped_feedback_auth_does_not_open_a_server_beyond_loopback(start: Any) -> None:
    server = start("typo", FEEDBACK_AUTH="Keys")
    serving = server.serving_or_exit()
    if serving is None:  # refusing to start on a bad setting is a fix too
        assert server.process.returncode != 0
        return
    outcome, _ = unauthenticated_call(int(serving["port"]))

    assert outcome.code == grpc.StatusCode.UNAUTHENTICATED, "served an unauthenticated write"
