"""What `make bench-read` found: a comparison per phase and size, targets, correctness checks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.results import OK, Check, TargetResult
from bench.table import aligned

UNAVAILABLE = "unavailable"
"""The checkout lacks the RPC or the feature (UNIMPLEMENTED, rollups missing, field ignored)."""
ERROR = "error"

MAX_STATS_P50_MS = 5.0
MIN_STATS_SPEEDUP = 1000.0
MAX_LIST_P50_MS = 10.0
MIN_EXPORT_ROWS_PER_SECOND = 50_000.0
MIN_WRITES_UNDER_STATS_RATIO = 0.8

STATS_PHASES = ("stats-overall", "stats-conversation", "stats-user", "stats-daily")
LIST_PHASES = (
    "list-newest",
    "list-middle-by-time",
    "list-day-month-back",
    "list-oldest",
    "list-walked",
)
LIST_PREFIX = "list-"
EXPORT_PHASE = "export"
WRITES_PHASE = "writes-under-stats"
PHASE_ORDER = (*STATS_PHASES, *LIST_PHASES, EXPORT_PHASE, WRITES_PHASE)


@dataclass(slots=True)
class Comparison:
    """One phase at one dataset size: the server's figure next to plain SQL's (or its own)."""

    rows: int
    """Feedback rows in the database."""
    phase: str
    method: str
    unit: str
    """"ms" (p50 latency: lower is better) or "rows/s", "req/s" (higher is better)."""
    reference_name: str
    """What the figure is compared with: "full scan", "OFFSET", "SELECT *", "writes alone"."""
    value: float | None = None
    p99_ms: float | None = None
    reference: float | None = None
    status: str = OK
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """How many times better than the reference: reference/value for ms, value/ref else."""
        if self.value is None or self.reference is None or not self.value or not self.reference:
            return None
        return self.reference / self.value if self.unit == "ms" else self.value / self.reference

    def to_json(self) -> dict[str, Any]:
        """The comparison with its ratio."""
        return {**asdict(self), "ratio": self.ratio}


@dataclass(slots=True)
class ReadReport:
    """Everything one run measured and checked."""

    mode: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    loads: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Why phases did not run ("rollups not available in this checkout")."""
    targets: list[TargetResult] = field(default_factory=list)
    duration_seconds: float = 0.0

    @property
    def failed_checks(self) -> list[Check]:
        """Checks that failed: a wrong answer, a lost row, an incomplete export."""
        return [check for check in self.checks if not check.passed]

    def to_json(self) -> dict[str, Any]:
        """The whole report as one JSON object."""
        return {
            "mode": self.mode,
            "duration_seconds": round(self.duration_seconds, 1),
            "machine": self.machine,
            "settings": self.settings,
            "loads": self.loads,
            "comparisons": [comparison.to_json() for comparison in in_order(self.comparisons)],
            "targets": [target.to_json() for target in self.targets],
            "notes": self.notes,
            "correctness": {
                "passed": not self.failed_checks,
                "checks": [asdict(check) for check in self.checks],
            },
        }

    def write(self, path: Path) -> None:
        """Write the JSON report, creating its directory."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def in_order(comparisons: list[Comparison]) -> list[Comparison]:
    """By size, then in the order the phases run."""
    return sorted(comparisons, key=lambda c: (c.rows, PHASE_ORDER.index(c.phase)))


def evaluate_targets(comparisons: list[Comparison]) -> list[TargetResult]:
    """The issue's targets, at the largest size measured; unmeasured targets fail."""
    largest = max((c.rows for c in comparisons), default=0)
    measured = [c for c in comparisons if c.rows == largest and c.status == OK]
    stats = [c for c in measured if c.phase in STATS_PHASES]
    lists = [c for c in measured if c.phase.startswith(LIST_PREFIX)]
    export = next((c for c in measured if c.phase == EXPORT_PHASE), None)
    writes = next((c for c in measured if c.phase == WRITES_PHASE), None)
    speedups = [c.ratio for c in stats if c.ratio is not None]
    size = f"{largest:,} rows"
    return [
        TargetResult(
            "stats-p50",
            f"slowest GetStats p50 in ms (overall, conversation, user, daily) at {size}",
            _complete([c.value for c in stats], len(STATS_PHASES), max),
            MAX_STATS_P50_MS,
            "<=",
        ),
        TargetResult(
            "stats-speedup",
            f"smallest full-scan SQL time over GetStats p50 at {size}",
            _complete(speedups, len(STATS_PHASES), min),
            MIN_STATS_SPEEDUP,
            ">=",
        ),
        TargetResult(
            "list-p50",
            f"slowest ListFeedback page p50 in ms at any depth measured at {size}",
            max((c.value for c in lists if c.value is not None), default=None),
            MAX_LIST_P50_MS,
            "<=",
        ),
        TargetResult(
            "export-rows",
            f"ExportFeedback rows/s at {size}",
            None if export is None else export.value,
            MIN_EXPORT_ROWS_PER_SECOND,
            ">=",
        ),
        TargetResult(
            "writes-under-stats",
            f"durable SubmitFeedback req/s with GetStats in a loop over req/s alone at {size}",
            None if writes is None else writes.ratio,
            MIN_WRITES_UNDER_STATS_RATIO,
            ">=",
        ),
    ]


def _complete(values: Sequence[float | None], expected: int, pick: Any) -> float | None:
    """pick(values) when every expected phase was measured, None otherwise."""
    present = [value for value in values if value is not None]
    return pick(present) if present and len(present) == expected else None


def target_for(comparison: Comparison) -> str:
    """The target a comparison is held to, as the table shows it."""
    if comparison.phase in STATS_PHASES:
        return f"<= {MAX_STATS_P50_MS:g} ms, >= {MIN_STATS_SPEEDUP:g}x"
    if comparison.phase.startswith(LIST_PREFIX):
        return f"<= {MAX_LIST_P50_MS:g} ms"
    if comparison.phase == EXPORT_PHASE:
        return f">= {MIN_EXPORT_ROWS_PER_SECOND:,.0f} rows/s"
    if comparison.phase == WRITES_PHASE:
        return f">= {MIN_WRITES_UNDER_STATS_RATIO:g}x"
    return "-"


def verdict(comparison: Comparison) -> str:
    """PASS or FAIL against the comparison's target; "-" when it was not measured."""
    if comparison.status != OK or comparison.value is None:
        return "-"
    ratio = comparison.ratio
    if comparison.phase in STATS_PHASES:
        passed = comparison.value <= MAX_STATS_P50_MS and (
            ratio is not None and ratio >= MIN_STATS_SPEEDUP
        )
    elif comparison.phase.startswith(LIST_PREFIX):
        passed = comparison.value <= MAX_LIST_P50_MS
    elif comparison.phase == EXPORT_PHASE:
        passed = comparison.value >= MIN_EXPORT_ROWS_PER_SECOND
    elif comparison.phase == WRITES_PHASE:
        passed = ratio is not None and ratio >= MIN_WRITES_UNDER_STATS_RATIO
    else:
        return "-"
    return "PASS" if passed else "FAIL"


HEADER = (
    "rows",
    "phase",
    "method",
    "value",
    "p99 ms",
    "reference",
    "ratio",
    "target",
    "verdict",
    "why not measured",
)


def render(report: ReadReport) -> str:
    """The comparisons table, the targets with PASS/FAIL, notes and the correctness verdict."""
    lines = aligned(HEADER, [_row(comparison) for comparison in in_order(report.comparisons)])
    lines.append("")
    lines.append(
        "value: p50 ms or throughput; ratio: times better than the reference "
        "(reference/value for ms, value/reference for throughput)"
    )
    for load in report.loads:
        rollups = load["rollup_seconds"]
        lines.append(
            f"load to {load['rows']:,} feedback rows: {load['insert_seconds']:.0f} s inserts, "
            f"{load['index_seconds']:.0f} s indexes, "
            + ("no rollups" if rollups is None else f"{rollups:.0f} s rollups")
        )
    lines.append("")
    for target in report.targets:
        measured = "not measured" if target.measured is None else f"{target.measured:,.2f}"
        lines.append(
            f"{'PASS' if target.passed else 'FAIL'}  {target.name}: {measured} "
            f"(target {target.comparison} {target.limit:g}): {target.description}"
        )
    for note in report.notes:
        lines.append(f"note: {note}")
    lines.append("")
    failed = report.failed_checks
    if failed:
        lines.append("CORRECTNESS FAILURE: " + "; ".join(f"{c.name}: {c.detail}" for c in failed))
    else:
        lines.append(f"correctness: {len(report.checks)} checks passed")
    lines.append(f"total time {report.duration_seconds:.0f} s ({report.mode} mode)")
    return "\n".join(lines)


def _row(comparison: Comparison) -> tuple[str, ...]:
    if comparison.status != OK:
        shown = "not available in this checkout" if comparison.status == UNAVAILABLE else "error"
        return (
            f"{comparison.rows:,}",
            comparison.phase,
            comparison.method,
            shown,
            "-",
            "-",
            "-",
            target_for(comparison),
            "-",
            comparison.detail,
        )
    reference = (
        "-"
        if comparison.reference is None
        else f"{_figure(comparison.reference, comparison.unit)} {comparison.reference_name}"
    )
    if "depth" in comparison.extra and comparison.reference is not None:
        reference += f" {comparison.extra['depth']:,}"
    ratio = comparison.ratio
    return (
        f"{comparison.rows:,}",
        comparison.phase,
        comparison.method,
        _figure(comparison.value, comparison.unit),
        "-" if comparison.p99_ms is None else f"{comparison.p99_ms:.2f}",
        reference,
        "-" if ratio is None else f"{ratio:,.2f}x",
        target_for(comparison),
        verdict(comparison),
        "",
    )


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:,.2f} ms"
    return f"{value:,.0f} {unit}"
