"""The human-readable report: one line per measured phase, then the targets and the row checks."""

from __future__ import annotations

from bench.results import OK, BenchReport, PhaseResult

HIDDEN_PHASES = frozenset({"warm-up"})
HEADER = (
    "phase",
    "method",
    "server",
    "c",
    "throughput",
    "p50 ms",
    "p99 ms",
    "thr x",
    "p50 x",
    "p99 x",
    "RSS MB",
    "rows stored/acked",
)


def render(report: BenchReport) -> str:
    """The phases table, the targets with PASS/FAIL, and the correctness verdict."""
    lines = aligned(
        HEADER, [_phase_row(phase) for phase in report.phases if phase.phase not in HIDDEN_PHASES]
    )
    lines.append("")
    lines.append("x columns: over the ceiling at the same c (req/s), over raw executemany (rows/s)")
    lines.append("")
    for target in report.targets:
        measured = "not measured" if target.measured is None else f"{target.measured:.2f}"
        verdict = "PASS" if target.passed else "FAIL"
        lines.append(
            f"{verdict}  {target.name}: {measured} (target {target.comparison} "
            f"{target.limit:g}): {target.description}"
        )
    lines.append("")
    lines.append(_correctness(report))
    lines.append(f"total time {report.duration_seconds:.0f} s ({report.mode} mode)")
    return "\n".join(lines)


def _phase_row(phase: PhaseResult) -> tuple[str, ...]:
    if phase.throughput is None:
        throughput = "-" if phase.status == OK else phase.status
    else:
        throughput = f"{phase.throughput:,.0f} {phase.unit}"
        if phase.status != OK:
            throughput += f" ({phase.status})"
    rows = "-"
    if phase.rows is not None:
        acknowledged = "?" if phase.rows.acknowledged is None else str(phase.rows.acknowledged)
        rows = f"{phase.rows.stored}/{acknowledged}"
        if phase.rows.missing:
            rows += f" MISSING {phase.rows.missing}"
    return (
        phase.phase,
        phase.method,
        phase.server,
        str(phase.concurrency),
        throughput,
        _number(phase.p50_ms),
        _number(phase.p99_ms),
        _number(phase.throughput_ratio),
        _number(phase.p50_ratio),
        _number(phase.p99_ratio),
        _number(phase.peak_rss_mb, digits=0),
        rows,
    )


def _correctness(report: BenchReport) -> str:
    checks = report.row_checks
    if report.missing_rows:
        lost = [
            f"{phase.phase} {phase.method} c={phase.concurrency}: {check.missing} missing"
            for phase, check in checks
            if check.missing
        ]
        return "CORRECTNESS FAILURE: acknowledged writes without a row: " + "; ".join(lost)
    inexact = [
        f"{phase.phase} {phase.method} c={phase.concurrency}: "
        f"{check.stored} stored, {check.acknowledged} acknowledged"
        for phase, check in checks
        if not check.exact
    ]
    summary = f"correctness: no acknowledged write missing in {len(checks)} row checks"
    return summary if not inexact else summary + "; not exact: " + "; ".join(inexact)


def aligned(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """The header, a rule and the rows, each column padded to its widest cell."""
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    rule = tuple("-" * width for width in widths)
    return [_join(row, widths) for row in [header, rule, *rows]]


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _join(row: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
