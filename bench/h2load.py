"""h2load runs of one unary gRPC method, with throughput and percentiles from its per-request log.

h2load speaks HTTP/2, not gRPC: it counts every HTTP 200 as a success, even one whose trailers
carry a non-zero grpc-status. Callers therefore check stored rows against its 2xx count.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.cores import Pinning
from bench.percentiles import percentile

INSTALL_HINT = "install Debian's nghttp2-client package (apt-get install nghttp2-client)"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
DURATION_GRACE_SECONDS = 60
"""How long a timed run may take past its duration (connecting, draining) before it is stopped."""

_REQUESTS = re.compile(
    r"requests: (?P<total>\d+) total, (?P<started>\d+) started, (?P<done>\d+) done, "
    r"(?P<succeeded>\d+) succeeded, (?P<failed>\d+) failed, (?P<errored>\d+) errored, "
    r"(?P<timeout>\d+) timeout"
)
_STATUS_CODES = re.compile(r"status codes: (?P<ok>\d+) 2xx")
_DATA_BYTES = re.compile(r"\((?P<bytes>\d+)\) data")
_FINISHED = re.compile(r"finished in [\d.]+\w+, (?P<rate>[\d.]+) req/s")


class H2loadMissingError(RuntimeError):
    """h2load is not on PATH."""


class H2loadError(RuntimeError):
    """h2load failed, timed out or printed something this module cannot read."""


@dataclass(frozen=True, slots=True)
class H2loadSummary:
    """The counts h2load prints at the end of a run."""

    requests: int
    succeeded: int
    failed: int
    errored: int
    timed_out: int
    status_2xx: int
    data_bytes: int
    requests_per_second: float


@dataclass(frozen=True, slots=True)
class H2loadRun:
    """One run: h2load's counts plus throughput and latency computed from the request log."""

    summary: H2loadSummary
    requests_per_second: float
    """2xx responses per second, first request start to last response end (connects excluded)."""
    p50_ms: float
    p99_ms: float
    response_bytes: float
    """Average DATA bytes per 2xx response (gRPC prefix included), to compare response sizes."""


def require_h2load() -> str:
    """The path of h2load; raises H2loadMissingError saying how to install it."""
    path = shutil.which("h2load")
    if path is None:
        raise H2loadMissingError(f"h2load not found on PATH: {INSTALL_HINT}")
    return path


def run_h2load(
    url: str,
    body_file: Path,
    *,
    concurrency: int,
    log_file: Path,
    pinning: Pinning,
    requests: int | None = None,
    duration_seconds: int | None = None,
    timeout_seconds: float | None = None,
    headers: Sequence[str] = (),
) -> H2loadRun:
    """POST `body_file` to `url` over `concurrency` connections, one stream each, either
    `requests` times or for `duration_seconds` (h2load --duration).

    `headers` ("name: value") go with every request after the gRPC ones, e.g. an authorization.
    `log_file` is replaced: h2load appends to an existing one, whose old lines would count as
    this run's. In a timed run, calls still open when the time ends are not in the log: they
    neither count as answered nor add latency, though the server may store them. Raises
    H2loadError when h2load fails, takes longer than `timeout_seconds` (a timed run: its
    duration plus DURATION_GRACE_SECONDS) or answers nothing.
    """
    if (requests is None) == (duration_seconds is None):
        raise ValueError("give run_h2load either requests or duration_seconds")
    if duration_seconds is not None:
        amount = f"--duration={duration_seconds}"
        timeout_seconds = timeout_seconds or duration_seconds + DURATION_GRACE_SECONDS
    else:
        amount = f"--requests={requests}"
        timeout_seconds = timeout_seconds or 600.0
    log_file.unlink(missing_ok=True)
    command = [
        require_h2load(),
        amount,
        f"--clients={concurrency}",
        "--max-concurrent-streams=1",
        "--threads=1",
        f"--data={body_file}",
        f"--log-file={log_file}",
        *(f"--header={header}" for header in (*GRPC_HEADERS, *headers)),
        url,
    ]
    try:
        finished = subprocess.run(
            pinning.load_command(command),
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise H2loadError(f"h2load took longer than {timeout_seconds:.0f} s") from error
    if finished.returncode != 0:
        raise H2loadError(f"h2load exited with {finished.returncode}: {finished.stderr.strip()}")
    summary = parse_summary(finished.stdout)
    starts, ends, latencies = read_request_log(log_file)
    if not latencies:
        raise H2loadError(f"h2load got no 2xx response:\n{finished.stdout}")
    latencies.sort()
    elapsed_seconds = max(max(ends) - min(starts), 1) / 1_000_000
    return H2loadRun(
        summary=summary,
        requests_per_second=len(latencies) / elapsed_seconds,
        p50_ms=percentile(latencies, 0.50) / 1000,
        p99_ms=percentile(latencies, 0.99) / 1000,
        response_bytes=summary.data_bytes / max(summary.status_2xx, 1),
    )


def parse_summary(output: str) -> H2loadSummary:
    """The counts in h2load's closing lines; raises H2loadError if they are not there."""
    requests = _REQUESTS.search(output)
    status = _STATUS_CODES.search(output)
    data = _DATA_BYTES.search(output)
    finished = _FINISHED.search(output)
    if requests is None or status is None or data is None or finished is None:
        raise H2loadError(f"cannot read h2load's output:\n{output}")
    return H2loadSummary(
        requests=int(requests["total"]),
        succeeded=int(requests["succeeded"]),
        failed=int(requests["failed"]),
        errored=int(requests["errored"]),
        timed_out=int(requests["timeout"]),
        status_2xx=int(status["ok"]),
        data_bytes=int(data["bytes"]),
        requests_per_second=float(finished["rate"]),
    )


def read_request_log(path: Path) -> tuple[list[int], list[int], list[float]]:
    """Start and end times (µs since the epoch) and latencies (µs) of the 2xx requests.

    Each line of h2load's --log-file is: start time in µs since the epoch, HTTP status,
    µs until the end of the response.
    """
    starts: list[int] = []
    ends: list[int] = []
    latencies: list[float] = []
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or not 200 <= int(fields[1]) < 300:
            continue
        start, elapsed = int(fields[0]), int(fields[2])
        starts.append(start)
        ends.append(start + elapsed)
        latencies.append(float(elapsed))
    return starts, ends, latencies
