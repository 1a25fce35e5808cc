"""The bench's phases in order, each server fresh, each phase's rows checked against its answers."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from bench import load, payloads
from bench.api_keys import create_key
from bench.cores import Pinning, pin_this_thread, pinned_thread
from bench.cpu import CpuMeter
from bench.h2load import H2loadError, H2loadRun, run_h2load
from bench.memory import RssSampler
from bench.pairs import AUTH, BASELINE, BOUNDARY, VARIANT, PairSpec
from bench.profiles import Profile
from bench.raw_sqlite import create_events_schema, insert_events, stored_event_values
from bench.results import OK, PhaseResult, RowCheck
from bench.row_counts import count_rows
from bench.server_logs import settled_status_codes
from bench.server_process import ServerProcess
from bench.targets import TARGET_CONCURRENCY
from server.config import DEFAULT_DATABASE_FILE

WARM_UP_CONCURRENCY = 16
STATUS_CHECK_CONCURRENCY = 64
CEILING = "ceiling"
REAL = "real"
REAL_WITH_LOGS = "real, INFO logs"
REAL_SERVER_FLAGS = ("--accept-unknown-conversations",)
"""Default settings, except that feedback needs no recorded interaction first."""
QUIET_LOGGING = ("--log-level", "WARNING")
"""Per-RPC log lines off, so the measured phases see the service, not its logging."""
SUBMIT_FEEDBACK, LOG_EVENT = payloads.UNARY_CALLS
AUTH_NONE = "real, --auth none"
AUTH_KEY = "real, --auth keys + key"
AUTH_TOGGLE = "auth-toggle"
AUTH_TOGGLE_SERVER = "one server, keys off/on"
METRICS_TOGGLE = "metrics-toggle"
METRICS_TOGGLE_SERVER = "one server, metrics off/on"
CEILING_UNARY = "ceiling, unary"
CEILING_STREAM_UNARY = "ceiling, stream-unary"
BENCH_KEY_SCOPE = "ingest"
"""The scope SubmitFeedback asks for: the key a real ingesting client would hold."""

Progress = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Side:
    """One side of an A/B pair: its server, its label, its database and its calls' metadata."""

    side: str
    label: str
    server: ServerProcess
    database: Path | None
    metadata: tuple[tuple[str, str], ...] = ()

    @property
    def headers(self) -> tuple[str, ...]:
        """The metadata as h2load headers."""
        return tuple(f"{name}: {value}" for name, value in self.metadata)


class PhaseRunner:
    """Runs every phase of a profile in a scratch directory and collects their results."""

    def __init__(self, profile: Profile, workdir: Path, pinning: Pinning, progress: Progress):
        self._profile = profile
        self._workdir = workdir
        self._pinning = pinning
        self._progress = progress
        self._log_numbers = itertools.count(1)
        self._bodies: dict[str, Path] = {}
        self._ceilings: dict[tuple[str, int], PhaseResult] = {}
        self.phases: list[PhaseResult] = []

    def run_all(self) -> list[PhaseResult]:
        """Unary (ceiling and real), unary with logs, the A/B pairs (call boundary, API keys),
        batch, stream, raw SQLite; every phase."""
        # The orchestrator, h2load and the Python load client share the load core.
        pin_this_thread(self._pinning.load_core)
        with self._server("ceiling", "bench.ceiling_server", []) as ceiling:
            event_databases = [self._unary_phases(call, ceiling) for call in payloads.UNARY_CALLS]
        self._logging_phase(self._ceilings[(SUBMIT_FEEDBACK.method, TARGET_CONCURRENCY)])
        self._boundary_pair()
        self._auth_pair()
        self._auth_toggle()
        self._metrics_toggle()
        event_databases.insert(0, self._ingestion_phases())
        self._raw_phase(event_databases)
        return self.phases

    # Phases

    def _unary_phases(self, call: payloads.UnaryCall, ceiling: ServerProcess) -> Path:
        """Ceiling then real server at each concurrency, then the status check; returns the db file.

        Each real run follows its ceiling run at once, so both see the same machine: other work
        on it moves the pair together, not their ratio. The idle server costs nothing meanwhile.
        """
        with self._real_server(f"real-{call.method}", quiet=True) as (server, database):
            self._warm_up(ceiling, call, CEILING, database=None)
            self._warm_up(server, call, REAL, database)
            for concurrency in self._profile.concurrencies:
                reference = self._h2load_phase(
                    "ceiling", ceiling, call, concurrency, server_label=CEILING, database=None
                )
                self._ceilings[(call.method, concurrency)] = reference
                self._h2load_phase(
                    "unary",
                    server,
                    call,
                    concurrency,
                    server_label=REAL,
                    database=database,
                    ceiling=reference,
                )
            self._status_check_phase(server, call, database)
        return database

    def _logging_phase(self, ceiling: PhaseResult) -> None:
        """SubmitFeedback at the target concurrency with production's default logging."""
        call = SUBMIT_FEEDBACK
        with self._real_server("real-logging", quiet=False) as (server, database):
            self._warm_up(server, call, REAL_WITH_LOGS, database)
            logged_before = settled_status_codes(
                server.log_file, call.path, Counter(), self._profile.warm_up_requests
            )
            result = self._h2load_phase(
                "unary-logging",
                server,
                call,
                TARGET_CONCURRENCY,
                server_label=REAL_WITH_LOGS,
                database=database,
                ceiling=ceiling,
            )
            answered = result.extra.get("h2load", {}).get("status_2xx", 0)
            codes = settled_status_codes(server.log_file, call.path, logged_before, answered)
            if result.rows is not None:
                # The server's own log knows every call's gRPC status: an exact acknowledgement.
                result.rows = replace(
                    result.rows, acknowledged=codes["OK"], source="server log lines with code OK"
                )
            result.extra["logged_status_codes"] = dict(codes)
            if set(codes) - {"OK"}:
                result.detail = _describe_codes(codes)

    def _boundary_pair(self) -> None:
        """Empty ceilings, plain unary against stream-unary reading with context.read(): what the
        real server's call boundary costs gRPC's own per-call path. Both register the same two
        methods by the same code (the generated code registers every method of the service)."""
        module = "bench.ceiling_server"
        with (
            self._server("ceiling-unary", module, ["--handlers", "unary"]) as unary,
            self._server(
                "ceiling-stream-unary", module, ["--handlers", "stream-unary"]
            ) as stream_unary,
        ):
            self._pair(
                BOUNDARY,
                SUBMIT_FEEDBACK,
                _Side(BASELINE, CEILING_UNARY, unary, None),
                _Side(VARIANT, CEILING_STREAM_UNARY, stream_unary, None),
            )

    def _auth_pair(self) -> None:
        """Durable SubmitFeedback without authentication and with an ingest key, each on a fresh
        database of its own: what authentication costs."""
        keyed_name = "real-auth-keys"
        # The key exists before the server starts, as an operator's first key does.
        secret = create_key(self._workdir / keyed_name / "data", BENCH_KEY_SCOPE)
        with (
            self._real_server("real-auth-none", quiet=True, auth="none") as (plain, plain_db),
            self._real_server(keyed_name, quiet=True, auth="keys") as (keyed, keyed_db),
        ):
            self._pair(
                AUTH,
                SUBMIT_FEEDBACK,
                _Side(BASELINE, AUTH_NONE, plain, plain_db),
                _Side(
                    VARIANT,
                    AUTH_KEY,
                    keyed,
                    keyed_db,
                    (("authorization", f"Bearer {secret}"),),
                ),
                refused_without_metadata=True,
            )

    def _auth_toggle(self) -> None:
        """What keys cost one server with everything else equal (bench.auth_toggle): two
        processes on two databases differ by more than a key costs on a shared machine."""
        self._progress("auth-toggle: one server, key check switched off and on between rounds")
        self._toggle(AUTH_TOGGLE, "bench.auth_toggle", AUTH_TOGGLE_SERVER, "with a key / without")

    def _metrics_toggle(self) -> None:
        """What Prometheus metrics cost one server with everything else equal
        (bench.metrics_toggle): call counting switched off and on, /metrics scraped while on."""
        self._progress("metrics-toggle: one server, call counting switched off and on")
        self._toggle(
            METRICS_TOGGLE, "bench.metrics_toggle", METRICS_TOGGLE_SERVER, "metrics on / off"
        )

    def _toggle(self, phase: str, module: str, server: str, question: str) -> None:
        """Run a bench.toggle_rounds module at the pair sizes and add its medians as a phase."""
        summary_file = self._workdir / f"{phase}.json"
        command = [
            sys.executable,
            *("-m", module, "--json", str(summary_file)),
            *("--rounds", str(self._profile.pair_rounds)),
            *("--requests", str(self._profile.pair_requests)),
        ]
        finished = subprocess.run(command, capture_output=True, text=True, check=False)
        if finished.returncode != 0 or not summary_file.exists():
            self._add(
                PhaseResult(
                    phase,
                    SUBMIT_FEEDBACK.method,
                    server,
                    TARGET_CONCURRENCY,
                    status="error",
                    detail=finished.stderr.strip()[-500:],
                )
            )
            return
        summary = json.loads(summary_file.read_text())
        self._report(
            self._add(
                PhaseResult(
                    phase,
                    SUBMIT_FEEDBACK.method,
                    server,
                    TARGET_CONCURRENCY,
                    throughput=summary["with_rps"],
                    throughput_ratio=summary["ratio"],
                    cpu_us_per_call=summary["with_cpu_us"],
                    detail=f"{question} {summary['ratio']:.3f}x req/s, CPU "
                    f"{summary['extra_cpu_us']:+.1f} µs/call over {summary['without_cpu_us']:.0f}",
                    extra=summary,
                )
            )
        )

    def _pair(
        self,
        spec: PairSpec,
        call: payloads.UnaryCall,
        baseline: _Side,
        variant: _Side,
        *,
        refused_without_metadata: bool = False,
    ) -> None:
        """Check both sides answer, warm them up, then alternate rounds at the target concurrency.

        `refused_without_metadata`: the variant must refuse a call without its metadata (a key),
        or the pair would compare two servers that do the same thing.
        """
        if not self._pair_check(spec, call, (baseline, variant), refused_without_metadata):
            return
        for side in (baseline, variant):
            self._warm_up(side.server, call, side.label, side.database, headers=side.headers)
        for round_number in range(self._profile.pair_rounds):
            order = (baseline, variant) if round_number % 2 == 0 else (variant, baseline)
            for side in order:
                result = self._h2load_phase(
                    spec.phase,
                    side.server,
                    call,
                    TARGET_CONCURRENCY,
                    server_label=side.label,
                    database=side.database,
                    requests=self._profile.pair_requests,
                    headers=side.headers,
                )
                result.extra.update(
                    pair=spec.name,
                    side=side.side,
                    round=round_number,
                    requests=self._profile.pair_requests,
                )

    def _pair_check(
        self,
        spec: PairSpec,
        call: payloads.UnaryCall,
        sides: Sequence[_Side],
        refused_without_metadata: bool,
    ) -> bool:
        """One call per side with its metadata must answer OK (h2load cannot see gRPC status)
        and, if asked, the last side must refuse one without it with UNAUTHENTICATED."""
        result = self._add(PhaseResult(f"{spec.name}-check", call.method, "each side", 1))
        expected = [(side.label, side.server, side.metadata, "OK") for side in sides]
        if refused_without_metadata:
            last = sides[-1]
            expected.append((f"{last.label}, no metadata", last.server, (), "UNAUTHENTICATED"))
        problems = []
        for label, server, metadata, code in expected:
            run = _run(
                load.status_check(
                    server.address, call, requests=1, concurrency=1, metadata=metadata
                )
            )
            result.extra[label] = dict(run.codes)
            if dict(run.codes) != {code: 1}:
                problems.append(f"{label}: {_describe_codes(run.codes)}, expected {code}")
        if problems:
            result.status = "error"
            result.detail = "; ".join(problems) + f" (the {spec.name} rounds did not run)"
        self._report(result)
        return not problems

    def _ingestion_phases(self) -> Path:
        """LogEvents batches, then one Ingest stream, on one fresh server; returns the database."""
        profile = self._profile
        with self._real_server("real-ingestion", quiet=True) as (server, database):
            batch = self._python_load_phase(
                "batch",
                "LogEvents",
                server,
                database,
                concurrency=profile.batch_callers,
                work=lambda: load.log_events_batches(
                    server.address,
                    batch_size=profile.batch_size,
                    batches=profile.batches,
                    callers=profile.batch_callers,
                    timeout_seconds=profile.ingestion_timeout_seconds,
                ),
            )
            batch.extra["batch_size"] = profile.batch_size
            self._python_load_phase(
                "ingest",
                "Ingest",
                server,
                database,
                concurrency=1,
                work=lambda: load.ingest_stream(
                    server.address,
                    events=profile.ingest_events,
                    timeout_seconds=profile.ingestion_timeout_seconds,
                ),
            )
        return database

    def _raw_phase(self, event_databases: list[Path]) -> None:
        """Raw executemany into a migrated file, then each ingestion phase's ratio to it."""
        result = self._add(PhaseResult("raw-executemany", "executemany", "sqlite3", 1, "rows/s"))
        values = next(
            (found for database in event_databases if (found := stored_event_values(database))),
            None,
        )
        if values is None:
            result.status = "error"
            result.detail = "no event stored by the server to copy column values from"
            return
        database = self._workdir / "raw" / "events.sqlite3"
        create_events_schema(database)
        # On the server's core: the limit the server itself could reach there.
        with pinned_thread(self._pinning.server_core):
            run = insert_events(database, values, self._profile.raw_rows)
        result.throughput = run.rows_per_second
        result.rows = RowCheck(
            "events", run.rows, run.rows, run.rows_stored, "rows passed to executemany"
        )
        self._progress(f"raw executemany: {run.rows_per_second:,.0f} rows/s")
        for phase in self.phases:
            if phase.phase in ("batch", "ingest") and phase.throughput is not None:
                phase.throughput_ratio = phase.throughput / run.rows_per_second

    # One phase

    def _warm_up(
        self,
        server: ServerProcess,
        call: payloads.UnaryCall,
        server_label: str,
        database: Path | None,
        headers: Sequence[str] = (),
    ) -> None:
        """Connections, caches and lazy imports warmed before anything is measured."""
        self._h2load_phase(
            "warm-up",
            server,
            call,
            WARM_UP_CONCURRENCY,
            server_label=server_label,
            database=database,
            requests=self._profile.warm_up_requests,
            headers=headers,
        )

    def _h2load_phase(
        self,
        phase: str,
        server: ServerProcess,
        call: payloads.UnaryCall,
        concurrency: int,
        *,
        server_label: str,
        database: Path | None,
        ceiling: PhaseResult | None = None,
        requests: int | None = None,
        headers: Sequence[str] = (),
    ) -> PhaseResult:
        requests = requests or self._profile.unary_requests(concurrency)
        result = self._add(PhaseResult(phase, call.method, server_label, concurrency))
        rows_before = None if database is None else count_rows(database, call.table)
        log_file = self._workdir / f"h2load-{next(self._log_numbers)}.log"
        run: H2loadRun | None = None
        with RssSampler(server.pid) as memory, CpuMeter(server.pid) as cpu:
            try:
                run = run_h2load(
                    f"http://{server.address}{call.path}",
                    self._body_file(call),
                    requests=requests,
                    concurrency=concurrency,
                    log_file=log_file,
                    pinning=self._pinning,
                    timeout_seconds=self._profile.h2load_timeout_seconds,
                    headers=headers,
                )
            except H2loadError as error:
                result.status = "error"
                result.detail = str(error)
        log_file.unlink(missing_ok=True)
        _record_memory(result, memory)
        if run is not None:
            # Connection set-up is in it too, the same for every phase of a concurrency.
            result.cpu_us_per_call = cpu.microseconds_per_call(run.summary.status_2xx)
            result.throughput = run.requests_per_second
            result.p50_ms = run.p50_ms
            result.p99_ms = run.p99_ms
            result.response_bytes = run.response_bytes
            result.extra["h2load"] = {
                "requests": run.summary.requests,
                "status_2xx": run.summary.status_2xx,
                "failed": run.summary.failed,
                "errored": run.summary.errored,
                "timed_out": run.summary.timed_out,
                "requests_per_second_with_connects": run.summary.requests_per_second,
            }
            if run.summary.status_2xx < requests:
                result.detail = f"{requests - run.summary.status_2xx} of {requests} not 2xx"
        if database is not None and rows_before is not None:
            result.rows = RowCheck(
                call.table,
                requests,
                None if run is None else run.summary.status_2xx,
                count_rows(database, call.table) - rows_before,
                "h2load 2xx responses (HTTP 200 would hide a non-zero grpc-status)",
            )
        if ceiling is not None:
            _compare(result, ceiling)
        self._report(result)
        return result

    def _status_check_phase(
        self, server: ServerProcess, call: payloads.UnaryCall, database: Path
    ) -> None:
        """The gRPC status of every call of h2load's exact request, from a Python client."""
        requests = self._profile.status_check_requests
        result = self._add(PhaseResult("status-check", call.method, REAL, STATUS_CHECK_CONCURRENCY))
        rows_before = count_rows(database, call.table)
        with RssSampler(server.pid) as memory:
            run = _run(
                load.status_check(
                    server.address, call, requests=requests, concurrency=STATUS_CHECK_CONCURRENCY
                )
            )
        _record_memory(result, memory)
        result.extra["status_codes"] = dict(run.codes)
        if run.acknowledged != requests:
            result.status = "error"
            result.detail = _describe_codes(run.codes)
        result.rows = RowCheck(
            call.table,
            requests,
            run.acknowledged,
            count_rows(database, call.table) - rows_before,
            "gRPC status OK (Python client)",
        )
        self._report(result)

    def _python_load_phase(
        self,
        phase: str,
        method: str,
        server: ServerProcess,
        database: Path,
        *,
        concurrency: int,
        work: Callable[[], Coroutine[Any, Any, load.IngestionRun]],
    ) -> PhaseResult:
        result = self._add(PhaseResult(phase, method, REAL, concurrency, "rows/s"))
        rows_before = count_rows(database, "events")
        with RssSampler(server.pid) as memory:
            run = _run(work())
        _record_memory(result, memory)
        result.status = run.status
        result.detail = run.detail
        result.throughput = run.rows_per_second
        if phase == "batch":  # per call; a stream is one call
            result.p50_ms = run.latency_ms(0.50)
            result.p99_ms = run.latency_ms(0.99)
        result.extra.update(
            items_sent=run.items_sent, rejected_items=run.rejected, seconds=run.seconds
        )
        if run.rejected:
            result.detail = f"{run.rejected} items rejected; {result.detail}".rstrip("; ")
        result.rows = RowCheck(
            "events",
            run.items_sent,
            run.acknowledged,
            count_rows(database, "events") - rows_before,
            "accepted_count of OK responses",
        )
        self._report(result)
        return result

    # Plumbing

    @contextmanager
    def _server(self, name: str, module: str, args: list[str]) -> Iterator[ServerProcess]:
        directory = self._workdir / name
        directory.mkdir(parents=True, exist_ok=True)  # a key may have created its database
        self._progress(f"starting {name} server")
        server = ServerProcess(
            module, args, log_file=directory / "server.log", pinning=self._pinning
        )
        with server:
            yield server

    @contextmanager
    def _real_server(
        self, name: str, *, quiet: bool, auth: str | None = None
    ) -> Iterator[tuple[ServerProcess, Path]]:
        """`python -m server` on a fresh data directory; yields it and its SQLite file.

        `auth` None leaves --auth to its default, which is none on the loopback address here.
        """
        data_dir = self._workdir / name / "data"
        args = ["--data-dir", str(data_dir), *REAL_SERVER_FLAGS]
        if auth is not None:
            args.extend(("--auth", auth))
        if quiet:
            args.extend(QUIET_LOGGING)
        with self._server(name, "server", args) as server:
            yield server, data_dir / DEFAULT_DATABASE_FILE

    def _body_file(self, call: payloads.UnaryCall) -> Path:
        if call.method not in self._bodies:
            path = self._workdir / f"{call.method}.body"
            path.write_bytes(call.grpc_body())
            self._bodies[call.method] = path
        return self._bodies[call.method]

    def _add(self, result: PhaseResult) -> PhaseResult:
        self.phases.append(result)
        return result

    def _report(self, result: PhaseResult) -> None:
        figures = "-" if result.throughput is None else f"{result.throughput:,.0f} {result.unit}"
        if result.p99_ms is not None:
            figures += f", p99 {result.p99_ms:.2f} ms"
        if result.cpu_us_per_call is not None:
            figures += f", CPU {result.cpu_us_per_call:.0f} µs/call"
        if result.rows is not None:
            figures += f", rows {result.rows.stored}/{result.rows.acknowledged}"
        if result.status != OK:
            figures += f" [{result.status}: {result.detail}]"
        self._progress(
            f"{result.phase} {result.method} {result.server} c={result.concurrency}: {figures}"
        )


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a Python load coroutine on a fresh event loop."""
    return asyncio.run(work)


def _record_memory(result: PhaseResult, memory: RssSampler) -> None:
    result.peak_rss_mb = memory.peak_rss_kib / 1024 if memory.peak_rss_kib else None
    if memory.high_water_mark_kib is not None:
        result.rss_high_water_mb = memory.high_water_mark_kib / 1024


def _compare(result: PhaseResult, ceiling: PhaseResult) -> None:
    """Each figure over the ceiling's at the same concurrency."""
    result.throughput_ratio = _ratio(result.throughput, ceiling.throughput)
    result.p50_ratio = _ratio(result.p50_ms, ceiling.p50_ms)
    result.p99_ratio = _ratio(result.p99_ms, ceiling.p99_ms)


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


def _describe_codes(codes: dict[str, int]) -> str:
    return ", ".join(f"{count} {code}" for code, count in sorted(codes.items()))
