"""A server (the real one or the ceiling) as a pinned child process, ready once health says so.

Readiness comes from the gRPC health service rather than the "serving" log line, because with
--log-level WARNING the server logs nothing at start.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.cores import Pinning

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0


class ServerStartError(RuntimeError):
    """The server process exited or never reported SERVING."""


class ServerProcess:
    """`python -m MODULE --address 127.0.0.1:PORT ARGS...` on the server core, stderr to a file."""

    def __init__(
        self, module: str, args: Sequence[str], *, log_file: Path, pinning: Pinning
    ) -> None:
        self.module = module
        self.args = list(args)
        self.log_file = log_file
        self._pinning = pinning
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def address(self) -> str:
        """host:port to dial."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server's process id (taskset execs the server, so it is the server itself)."""
        assert self._process is not None, "server not started"
        return self._process.pid

    def start(self) -> ServerProcess:
        """Start the process and wait until its health check answers SERVING."""
        self.port = _free_port()
        command = self._pinning.server_command(
            [sys.executable, "-m", self.module, "--address", self.address, *self.args]
        )
        with self.log_file.open("wb") as log:
            self._process = subprocess.Popen(
                command, cwd=REPOSITORY_ROOT, stdout=subprocess.DEVNULL, stderr=log
            )
        self._wait_serving()
        return self

    def stop(self) -> int:
        """SIGTERM and wait (the server drains gracefully); kill if it hangs. Returns exit code."""
        if self._process is None:
            return 0
        process, self._process = self._process, None
        return stop_gracefully(process)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote to stderr, for error messages."""
        return file_tail(self.log_file, lines)

    def _wait_serving(self) -> None:
        assert self._process is not None
        try:
            wait_until_serving(self.address, self._process, self.module, self.log_tail)
        except ServerStartError:
            self.stop()
            raise

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def stop_gracefully(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_SECONDS) -> int:
    """SIGTERM and wait (the server drains gracefully); kill if it hangs. Returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def file_tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a log file; empty when it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_until_serving(
    address: str, process: subprocess.Popen[bytes], name: str, log_tail: Callable[[], str]
) -> None:
    """Poll health until SERVING; ServerStartError if `process` exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerStartError(f"{name} exited with {process.returncode}:\n{log_tail()}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            except grpc.RpcError:
                time.sleep(0.05)
                continue
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.05)
    raise ServerStartError(f"{name} not serving after {START_TIMEOUT_SECONDS:.0f} s")


def _free_port() -> int:
    """A port nothing listens on now; the server binds it without SO_REUSEPORT, so a race fails."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
