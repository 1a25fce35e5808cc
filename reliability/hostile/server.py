"""A `feedback-server` child process for hostile clients: per-RPC log lines kept, RSS sampled,
and a death described by its signal and the faulthandler's last words.

Unlike reliability.server_process it logs at INFO (the per-RPC lines are what the suite counts),
sends stdout and stderr to one file, and runs with PYTHONFAULTHANDLER=1 so a SIGSEGV in the C
core leaves a Python traceback behind.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from bench.server_process import (
    ServerStartError,
    file_tail,
    stop_gracefully,
    wait_until_serving,
)

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent.parent
STOP_TIMEOUT_SECONDS = 30.0
RSS_SAMPLE_SECONDS = 0.1
START_ATTEMPTS = 3
"""A free port picked here can be taken by another process before the server binds it."""
RSS_SAFETY_CAP_MB = 1024.0
"""The suite SIGKILLs a server whose RSS passes this (FEEDBACK_MEMORY_LIMIT_MB's default), so a
runaway server cannot take a shared machine's memory; that counts as a death."""
OPEN_FILES_WANTED = 65_536
"""Idle-connection phases hold thousands of sockets in this process and in the server."""


def raise_open_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit (or OPEN_FILES_WANTED); children
    started afterwards inherit it. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft


def rss_mb(pid: int) -> float | None:
    """Resident set size of process `pid` in MiB from /proc; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def exit_description(code: int) -> str:
    """'exit 1' or 'killed by SIGSEGV (-11)': how a process ended, for failure messages."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name} ({code})"
    return f"exit {code}"


class HostileServer:
    """`python -m server` (what the `feedback-server` command runs) on a SQLite file, on a fresh
    free port, configured by FEEDBACK_* variables, its whole output in `log_file`."""

    def __init__(
        self,
        database_url: str,
        log_file: Path,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.log_file = log_file
        self.environment = dict(environment or {})
        self.port = 0
        self.peak_rss_mb = 0.0
        self.killed_for_memory = False
        self._process: subprocess.Popen[bytes] | None = None
        self._sampler: threading.Thread | None = None
        self._sampling = threading.Event()

    @property
    def address(self) -> str:
        """host:port to dial."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self._running().pid

    def start(self) -> HostileServer:
        """Start the process (appending to the log) and return once health says SERVING."""
        raise_open_file_limit()
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = _free_port()
            self._spawn()
            try:
                wait_until_serving(self.address, self._running(), "feedback-server", self.log_tail)
            except ServerStartError:
                self.stop()
                if attempt == START_ATTEMPTS:
                    raise
                continue
            break
        self.rss_mb()  # a server that dies within the first sample interval still has a figure
        self._sampling.clear()
        self._sampler = threading.Thread(target=self._sample_rss, daemon=True)
        self._sampler.start()
        return self

    def alive(self) -> bool:
        """Whether the process is still running (poll() is None)."""
        return self._process is not None and self._process.poll() is None

    def returncode(self) -> int | None:
        """The exit status once it ended; None while it runs."""
        return None if self._process is None else self._process.poll()

    def death(self) -> str | None:
        """None while alive; else how it died and the fatal lines it left, for a failure message."""
        code = self.returncode()
        if code is None:
            return None
        if self.killed_for_memory:
            return (
                f"the suite killed the server: its RSS passed {RSS_SAFETY_CAP_MB:.0f} MB "
                f"(peak {self.peak_rss_mb:.0f} MB)"
            )
        return f"the server died: {exit_description(code)}; {self.fatal_lines()}"

    def fatal_lines(self) -> str:
        """The faulthandler report (first lines and the crashing frames), or the log's tail."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        start = text.rfind("Fatal Python error")
        if start < 0:
            return file_tail(self.log_file, 5)
        report = text[start:].splitlines()
        current = next(
            (i for i, line in enumerate(report) if line.startswith("Current thread")), None
        )
        frames = [] if current is None else report[current : current + 5]
        return " | ".join([report[0], *frames])

    def rss_mb(self) -> float | None:
        """The server's resident set size now, in MiB; None once it is gone."""
        value = None if self._process is None else rss_mb(self._process.pid)
        if value is not None:
            self.peak_rss_mb = max(self.peak_rss_mb, value)
        return value

    def stop(self) -> int | None:
        """SIGTERM and wait (kill if it hangs); None when it was not started. Safe to repeat."""
        self._sampling.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)
            self._sampler = None
        process, self._process = self._process, None
        return None if process is None else stop_gracefully(process, STOP_TIMEOUT_SECONDS)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's output."""
        return file_tail(self.log_file, lines)

    def _spawn(self) -> None:
        environment = {
            **os.environ,
            **self.environment,
            "PYTHONFAULTHANDLER": "1",
            "FEEDBACK_LOG_LEVEL": "INFO",
            "FEEDBACK_LOG_FORMAT": "json",
        }
        command = [
            sys.executable,
            "-m",
            "server",
            "--address",
            self.address,
            "--database-url",
            self.database_url,
            "--accept-unknown-conversations",
        ]
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=REPOSITORY_ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _sample_rss(self) -> None:
        while not self._sampling.wait(RSS_SAMPLE_SECONDS):
            rss = self.rss_mb()
            if rss is None:
                return
            process = self._process
            if rss > RSS_SAFETY_CAP_MB and process is not None:
                self.killed_for_memory = True
                process.kill()
                return

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("server not started")
        return self._process

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def wait_for_death(server: HostileServer, seconds: float) -> None:
    """Give a server that may be crashing a moment to finish dying, so a check sees it dead."""
    deadline = time.monotonic() + seconds
    while server.alive() and time.monotonic() < deadline:
        time.sleep(0.05)


def _free_port() -> int:
    """A port nothing listens on now (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
