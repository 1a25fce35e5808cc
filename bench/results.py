"""What a bench run found: one record per phase, the targets, and the JSON they are written as."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # bench.pairs builds on PhaseResult
    from bench.pairs import PairSummary

OK = "ok"


@dataclass(frozen=True, slots=True)
class Check:
    """One correctness check of a run: GetStats equals SQL, no acknowledged write missing..."""

    name: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RowCheck:
    """Rows a phase left in the database against the writes the server acknowledged."""

    table: str
    sent: int
    """Writes the load generator sent (items, for batches and streams)."""
    acknowledged: int | None
    """Writes answered as stored; None when the phase failed before it could tell."""
    stored: int
    """Rows that appeared in the table during the phase."""
    source: str
    """Where the acknowledged count comes from (h2load 2xx, gRPC status OK, accepted_count...)."""

    @property
    def missing(self) -> int:
        """Acknowledged writes with no row: lost data, always a failure."""
        if self.acknowledged is None:
            return 0
        return max(0, self.acknowledged - self.stored)

    @property
    def extra(self) -> int:
        """Rows for writes never acknowledged (the call failed after its commit): not a loss."""
        if self.acknowledged is None:
            return 0
        return max(0, self.stored - self.acknowledged)

    @property
    def exact(self) -> bool:
        """Stored equals acknowledged."""
        return self.acknowledged is not None and self.stored == self.acknowledged

    def to_json(self) -> dict[str, Any]:
        """The check with its verdicts."""
        return {**asdict(self), "missing": self.missing, "extra": self.extra, "exact": self.exact}


@dataclass(slots=True)
class PhaseResult:
    """One measured phase: one server, one method, one concurrency."""

    phase: str
    """warm-up, ceiling, unary, unary-logging, status-check, batch, ingest, raw-executemany, or
    a round of an A/B pair (auth-round, boundary-round)."""
    method: str
    server: str
    concurrency: int
    unit: str = "req/s"
    status: str = OK
    """"ok", "unavailable" (the server lacks the RPC) or "error"."""
    detail: str = ""
    throughput: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    throughput_ratio: float | None = None
    """Throughput over the ceiling's at the same concurrency, or over raw executemany rows/s."""
    p50_ratio: float | None = None
    p99_ratio: float | None = None
    peak_rss_mb: float | None = None
    """Largest VmRSS sampled during this phase."""
    rss_high_water_mb: float | None = None
    """VmHWM at the end of this phase: the process's peak so far, this phase included."""
    response_bytes: float | None = None
    cpu_us_per_call: float | None = None
    """Server CPU (user + system, all threads) during the phase per answered call, in µs."""
    rows: RowCheck | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The phase as a JSON object."""
        data = asdict(self)
        data["rows"] = None if self.rows is None else self.rows.to_json()
        return data


@dataclass(frozen=True, slots=True)
class TargetResult:
    """One goal the service should meet, and whether this run met it."""

    name: str
    description: str
    measured: float | None
    limit: float
    comparison: str
    """">=" or "<=": how measured must relate to limit."""

    @property
    def passed(self) -> bool:
        """Met; a target that could not be measured is not met."""
        if self.measured is None:
            return False
        if self.comparison == ">=":
            return self.measured >= self.limit
        return self.measured <= self.limit

    def to_json(self) -> dict[str, Any]:
        """The target with its verdict."""
        return {**asdict(self), "passed": self.passed}


@dataclass(slots=True)
class BenchReport:
    """Everything one run measured, and the facts needed to compare it with another run."""

    mode: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    phases: list[PhaseResult] = field(default_factory=list)
    targets: list[TargetResult] = field(default_factory=list)
    pairs: list[PairSummary] = field(default_factory=list)
    """The A/B pairs' medians and ratios, computed from their rounds among the phases."""
    write_cpu_us: dict[str, float | None] = field(default_factory=dict)
    """Server CPU µs per durable SubmitFeedback at the target concurrency (bench.targets)."""
    duration_seconds: float = 0.0

    @property
    def row_checks(self) -> list[tuple[PhaseResult, RowCheck]]:
        """Every phase's row check."""
        return [(phase, phase.rows) for phase in self.phases if phase.rows is not None]

    @property
    def missing_rows(self) -> int:
        """Acknowledged writes that were not stored, over all phases."""
        return sum(check.missing for _, check in self.row_checks)

    def to_json(self) -> dict[str, Any]:
        """The whole report as one JSON object."""
        return {
            "mode": self.mode,
            "duration_seconds": round(self.duration_seconds, 1),
            "machine": self.machine,
            "settings": self.settings,
            "phases": [phase.to_json() for phase in self.phases],
            "targets": [target.to_json() for target in self.targets],
            "pairs": [pair.to_json() for pair in self.pairs],
            "durable_write_cpu_us": self.write_cpu_us,
            "correctness": {
                "passed": self.missing_rows == 0,
                "missing_rows": self.missing_rows,
                "all_exact": all(check.exact for _, check in self.row_checks),
                "checks": [
                    {
                        "phase": phase.phase,
                        "method": phase.method,
                        "server": phase.server,
                        "concurrency": phase.concurrency,
                        **check.to_json(),
                    }
                    for phase, check in self.row_checks
                ],
            },
        }

    def write(self, path: Path) -> None:
        """Write the JSON report, creating its directory."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
