"""A private PostgreSQL 15 cluster in a temporary directory, so stopping it harms nobody else.

initdb, pg_ctl start and pg_ctl stop run as the `postgres` OS user when the suite runs as root
(PostgreSQL refuses to run as root), with trust authentication on 127.0.0.1 and a free port.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

DEFAULT_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
POSTGRES_USER = "postgres"
COMMAND_TIMEOUT_SECONDS = 60.0


class PostgresInstanceError(RuntimeError):
    """initdb or pg_ctl failed; the message carries their output."""


class PostgresInstance:
    """One throwaway cluster: `start()`, `stop()`, `start()` again, `destroy()` at the end."""

    def __init__(self, bin_dir: Path = DEFAULT_BIN_DIR) -> None:
        self.bin_dir = bin_dir
        self.directory = Path(tempfile.mkdtemp(prefix="feedback-reliability-pg-"))
        self.data_dir = self.directory / "data"
        self.log_file = self.directory / "postgres.log"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            account = pwd.getpwnam(POSTGRES_USER)
            os.chown(self.directory, account.pw_uid, account.pw_gid)
        self._initialized = False

    @property
    def server_url(self) -> str:
        """SQLAlchemy URL of the maintenance database `postgres`."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """initdb on first use, then start and wait until it accepts connections."""
        if not self._initialized:
            self._run("initdb", "-D", str(self.data_dir), "-U", POSTGRES_USER, "-A", "trust")
            self._initialized = True
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.directory} -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options, "-w",
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop -m `mode` (fast: roll back and disconnect; immediate: crash-like)."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def accepts_connections(self) -> bool:
        """Whether a new connection to the maintenance database succeeds right now."""
        try:
            with psycopg.connect(
                f"postgresql://postgres@127.0.0.1:{self.port}/postgres", connect_timeout=1
            ):
                return True
        except psycopg.Error:
            return False

    def wait_accepting(self, timeout: float = 30.0) -> float:
        """Poll until a connection succeeds; returns the monotonic time it first did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.accepts_connections():
                return time.monotonic()
            time.sleep(0.02)
        raise PostgresInstanceError(f"PostgreSQL not accepting connections after {timeout} s")

    def destroy(self) -> None:
        """Stop the cluster if it runs and delete its directory."""
        if self._initialized and (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(PostgresInstanceError):
                self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", POSTGRES_USER, "--", *command]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
            cwd=self.directory,
        )
        if result.returncode != 0:
            raise PostgresInstanceError(
                f"{program} {' '.join(args)} exited with {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )

    def __enter__(self) -> PostgresInstance:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()


def postgres_binaries_missing(bin_dir: Path = DEFAULT_BIN_DIR) -> str | None:
    """Why a private cluster cannot be made here, or None when it can."""
    for program in ("initdb", "pg_ctl"):
        if not (bin_dir / program).exists():
            return f"{bin_dir / program} not found"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            return f"running as root and no {POSTGRES_USER} OS user to run PostgreSQL as"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
