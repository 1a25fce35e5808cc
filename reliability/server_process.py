"""A `feedback-server` child process on a given database, to be killed, stopped and restarted.

Readiness comes from the gRPC health service: the server logs nothing at start with
--log-level WARNING, and health is what a load balancer would ask.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.server_process import (
    ServerStartError,
    file_tail,
    stop_gracefully,
    wait_until_serving,
)

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_SECONDS = 60.0
SERVER_FLAGS = ("--accept-unknown-conversations", "--log-level", "WARNING")
"""Feedback needs no recorded interaction first; no per-RPC log lines to slow the load."""


class ServerProcess:
    """`python -m server` on `database_url`, on a fresh free port each start, stderr to a file."""

    def __init__(self, database_url: str, log_file: Path, extra_args: Sequence[str] = ()) -> None:
        self.database_url = database_url
        self.log_file = log_file
        self.extra_args = list(extra_args)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """host:port to dial."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        """Start the process (appending to the log) and wait until health says SERVING."""
        self.port = _free_port()
        command = [
            sys.executable,
            "-m",
            "server",
            "--address",
            self.address,
            "--database-url",
            self.database_url,
            *SERVER_FLAGS,
            *self.extra_args,
        ]
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                command, cwd=REPOSITORY_ROOT, stdout=subprocess.DEVNULL, stderr=log
            )
        self._wait_serving()
        return self

    def kill(self) -> None:
        """SIGKILL: no drain, no flush, no goodbye."""
        process = self._running()
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def send_terminate(self) -> None:
        """SIGTERM: the server should drain in-flight calls, then exit 0."""
        self._running().send_signal(signal.SIGTERM)

    def wait(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """Wait for exit and return the exit code; SIGKILL and raise if it outlives `timeout`."""
        process = self._running()
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise

    def stop(self) -> int | None:
        """SIGTERM and wait (kill if it hangs); None when it was not running. Safe to repeat."""
        process, self._process = self._process, None
        return None if process is None else stop_gracefully(process, STOP_TIMEOUT_SECONDS)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote to stderr, for error messages."""
        return file_tail(self.log_file, lines)

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("server not started")
        return self._process

    def _wait_serving(self) -> None:
        try:
            wait_until_serving(self.address, self._running(), "server", self.log_tail)
        except ServerStartError:
            self.stop()
            raise

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _free_port() -> int:
    """A port nothing listens on now (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
