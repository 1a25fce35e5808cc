"""One round: a copy of the prepared file, a real server on it, durable SubmitFeedback at c=16.

A round with the sweep starts the server with `--retention PERIODS --retention-interval 1`, so
its first sweep begins as the server starts and runs through the write window; a round of writes
alone starts the same server on an equal copy without the flag. A thread counts the expirable
rows once a second through the window on both sides (the same reads either way), which dates
the end of a sweep that finishes inside the window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import payloads
from bench.cores import Pinning
from bench.cpu import CpuMeter
from bench.h2load import run_h2load
from bench.retention.dataset import Prepared, expirable_counts, rows_since
from bench.runner import QUIET_LOGGING
from bench.server_process import ServerProcess

CONCURRENCY = 16
"""The issue's concurrency for SubmitFeedback while rows expire."""
SWEEP_INTERVAL_SECONDS = 1
"""--retention-interval of the rounds with the sweep: a finished sweep is followed at once."""
COUNT_EVERY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RoundSettings:
    """What every round of one run does."""

    window_seconds: int
    """How long h2load sends SubmitFeedback (its --duration)."""
    warm_up_requests: int
    """Calls before the window, on the fresh server (the sweep, if any, already runs)."""


@dataclass(slots=True)
class RoundResult:
    """What one round measured."""

    number: int
    retention: str | None
    """The server's --retention, None for writes alone."""
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    acknowledged: int
    """h2load's 2xx answers in the window."""
    stored: int
    """Feedback rows newer than the old data that appeared during the window."""
    window_seconds: float
    """From the count before h2load started to the count after it ended."""
    expirable_before: dict[str, int]
    """Expirable rows per table at the start of the window (a sweep began at server start)."""
    expirable_after: dict[str, int]
    server_cpu_seconds: float | None
    """The server process's CPU time (all threads) during the window."""
    counts: list[tuple[float, int]] = field(default_factory=list)
    """(seconds into the window, expirable rows of the tables the round sweeps) as counted
    about once a second."""
    server_exit: int = 0

    @property
    def expired_in_window(self) -> int:
        """Rows the sweep deleted while the writes ran."""
        return sum(self.expirable_before.values()) - sum(self.expirable_after.values())

    @property
    def expired_by_table(self) -> dict[str, int]:
        """Rows each table lost while the writes ran."""
        return {
            table: rows - self.expirable_after[table]
            for table, rows in self.expirable_before.items()
        }

    @property
    def finished_seconds(self) -> float | None:
        """Seconds into the window of the first count that found nothing left to expire; None
        while rows were left (or none were at the start)."""
        if not self.counts or not self.counts[0][1]:
            return None
        return next((seconds for seconds, rows in self.counts if rows == 0), None)

    @property
    def sweeping_seconds(self) -> float:
        """The part of the window the sweep had rows to delete in."""
        finished = self.finished_seconds
        return self.window_seconds if finished is None else finished

    @property
    def expired_rows_per_second(self) -> float:
        """The sweep's rate under the writes, while it had rows to delete."""
        seconds = self.sweeping_seconds
        return self.expired_in_window / seconds if seconds > 0 else 0.0

    @property
    def server_cores(self) -> float | None:
        """Server CPU per second of the window: 1.0 is its whole core."""
        if self.server_cpu_seconds is None or self.window_seconds <= 0:
            return None
        return self.server_cpu_seconds / self.window_seconds

    @property
    def missing(self) -> int:
        """Acknowledged writes without a row: lost data."""
        return max(0, self.acknowledged - self.stored)

    def to_json(self) -> dict[str, Any]:
        """The round with its derived figures."""
        return {
            "number": self.number,
            "retention": self.retention,
            "requests_per_second": self.requests_per_second,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "acknowledged": self.acknowledged,
            "stored": self.stored,
            "missing": self.missing,
            "window_seconds": self.window_seconds,
            "server_cpu_seconds": self.server_cpu_seconds,
            "server_cores": self.server_cores,
            "expirable_before": self.expirable_before,
            "expirable_after": self.expirable_after,
            "expired_in_window": self.expired_in_window,
            "expired_by_table": self.expired_by_table,
            "finished_seconds": self.finished_seconds,
            "expired_rows_per_second": self.expired_rows_per_second,
            "counts": self.counts,
            "server_exit": self.server_exit,
        }


class Round:
    """Runs rounds in one scratch directory, each on a fresh copy of the prepared file."""

    def __init__(
        self, prepared: Prepared, settings: RoundSettings, pinning: Pinning, directory: Path
    ) -> None:
        self._prepared = prepared
        self._settings = settings
        self._pinning = pinning
        self._directory = directory
        self._body = directory / "submit-feedback.body"

    def run(self, number: int, retention: str | None, tables: Sequence[str]) -> RoundResult:
        """Copy the file, start the server (with `retention` or none), warm up, measure, stop;
        `tables` are those whose expirable rows are counted through the window."""
        self._directory.mkdir(parents=True, exist_ok=True)
        self._body.write_bytes(payloads.UNARY_CALLS[0].grpc_body())
        database = self._prepared.copy_to(self._directory / "feedback.sqlite3")
        sweep = (
            []
            if retention is None
            else ["--retention", retention, "--retention-interval", str(SWEEP_INTERVAL_SECONDS)]
        )
        server = ServerProcess(
            "server",
            ["--database-url", f"sqlite:///{database}", *QUIET_LOGGING, *sweep],
            log_file=self._directory / "server.log",
            pinning=self._pinning,
        )
        try:
            server.start()
            try:
                result = self._measure(number, retention, tuple(tables), server, database)
            finally:
                server_exit = server.stop()
        finally:
            for leftover in self._directory.glob("feedback.sqlite3*"):
                leftover.unlink()
        result.server_exit = server_exit
        return result

    def _measure(
        self,
        number: int,
        retention: str | None,
        tables: tuple[str, ...],
        server: ServerProcess,
        database: Path,
    ) -> RoundResult:
        url = f"http://{server.address}{payloads.UNARY_CALLS[0].path}"
        run_h2load(
            url,
            self._body,
            requests=self._settings.warm_up_requests,
            concurrency=CONCURRENCY,
            log_file=self._directory / "warm-up.log",
            pinning=self._pinning,
            timeout_seconds=120,
        )
        cutoff = self._prepared.cutoff
        stored_before = rows_since(database, "feedback", cutoff)
        before = expirable_counts(database, cutoff)
        started = time.monotonic()
        counter = _Counter(database, cutoff, tables, started)
        with counter, CpuMeter(server.pid) as cpu:
            run = run_h2load(
                url,
                self._body,
                duration_seconds=self._settings.window_seconds,
                concurrency=CONCURRENCY,
                log_file=self._directory / "h2load.log",
                pinning=self._pinning,
            )
        after = expirable_counts(database, cutoff)
        ended = time.monotonic()
        return RoundResult(
            number=number,
            retention=retention,
            requests_per_second=run.requests_per_second,
            p50_ms=run.p50_ms,
            p99_ms=run.p99_ms,
            acknowledged=run.summary.status_2xx,
            stored=rows_since(database, "feedback", cutoff) - stored_before,
            window_seconds=ended - started,
            expirable_before=before,
            expirable_after=after,
            server_cpu_seconds=cpu.seconds,
            counts=[
                (0.0, sum(before[table] for table in tables)),
                *counter.counts,
                (ended - started, sum(after[table] for table in tables)),
            ],
        )


class _Counter:
    """Counts the expirable rows of some tables every COUNT_EVERY_SECONDS in a thread, while
    the block runs."""

    def __init__(
        self, database: Path, cutoff: datetime, tables: tuple[str, ...], started: float
    ) -> None:
        self._database = database
        self._cutoff = cutoff
        self._tables = tables
        self._started = started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="expirable-counter", daemon=True)
        self.counts: list[tuple[float, int]] = []

    def _run(self) -> None:
        while not self._stop.wait(COUNT_EVERY_SECONDS):
            counts = expirable_counts(self._database, self._cutoff)
            remaining = sum(counts[table] for table in self._tables)
            self.counts.append((time.monotonic() - self._started, remaining))

    def __enter__(self) -> _Counter:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
