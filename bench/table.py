"""The human-readable report: one line per measured phase, then the targets and the row checks."""

from __future__ import annotations

from bench.pairs import PAIRS, PairSummary, SideSummary
from bench.results import OK, BenchReport, PhaseResult
from bench.targets import TARGET_CONCURRENCY

HIDDEN_PHASES = frozenset({"warm-up", *(pair.phase for pair in PAIRS)})
"""Warm-ups, and the A/B rounds, which the pairs table sums up (each is in the JSON)."""
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
    "CPU µs/call",
    "RSS MB",
    "rows stored/acked",
)
PAIR_HEADER = ("pair", "side", "throughput", "p50 ms", "p99 ms", "CPU µs/call", "rows stored/acked")


def render(report: BenchReport) -> str:
    """The phases table, the targets with PASS/FAIL, and the correctness verdict."""
    lines = aligned(
        HEADER, [_phase_row(phase) for phase in report.phases if phase.phase not in HIDDEN_PHASES]
    )
    lines.append("")
    lines.append("x columns: over the ceiling at the same c (req/s), over raw executemany (rows/s)")
    lines.append("CPU: the server process's user + system time during the phase per answered call")
    lines.append("")
    if report.pairs:
        lines.extend(_pairs(report.pairs))
        lines.append("")
    for target in report.targets:
        measured = "not measured" if target.measured is None else f"{target.measured:.2f}"
        verdict = "PASS" if target.passed else "FAIL"
        lines.append(
            f"{verdict}  {target.name}: {measured} (target {target.comparison} "
            f"{target.limit:g}): {target.description}"
        )
    if report.write_cpu_us:
        lines.append(_write_cpu(report.write_cpu_us))
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
        _number(phase.cpu_us_per_call, digits=0),
        _number(phase.peak_rss_mb, digits=0),
        rows,
    )


def _write_cpu(figures: dict[str, float | None]) -> str:
    """The noise-free figure beside the ratios: server CPU per durable write."""
    sides = ", ".join(
        f"{side} {'-' if value is None else f'{value:.0f} µs'}" for side, value in figures.items()
    )
    return f"server CPU per durable SubmitFeedback at c={TARGET_CONCURRENCY}: {sides}"


def _pairs(pairs: list[PairSummary]) -> list[str]:
    """Each pair's two sides (medians over its rounds) and their ratios."""
    rows: list[tuple[str, ...]] = []
    notes = []
    for pair in pairs:
        rows.append(_side_row(pair.name, pair.baseline))
        rows.append(_side_row(pair.name, pair.variant))
        cpu = "-"
        if pair.cpu_ratio is not None and pair.cpu_us_difference is not None:
            cpu = f"{pair.cpu_ratio:.2f}x ({pair.cpu_us_difference:+.0f} µs)"
        ratio = _times(pair.throughput_ratio)
        rows.append((pair.name, pair.ratio_label, ratio, "-", _times(pair.p99_ratio), cpu, "-"))
        ratios = " ".join(f"{ratio:.2f}" for ratio in pair.round_throughput_ratios)
        notes.append(f"{pair.name}: {pair.question}; req/s ratio by round: {ratios}")
    first = pairs[0]
    lines = [
        f"A/B pairs, {first.method} at c={first.concurrency}: medians of "
        f"{first.baseline.rounds} rounds of {first.requests_per_round} calls per side in "
        "alternating order; ratios are the medians of each round's own",
        *aligned(PAIR_HEADER, rows),
    ]
    return lines + notes


def _side_row(name: str, side: SideSummary) -> tuple[str, ...]:
    rows = "-"
    if side.stored is not None and side.acknowledged is not None:
        rows = f"{side.stored}/{side.acknowledged}"
    throughput = "-" if side.throughput is None else f"{side.throughput:,.0f} req/s"
    return (
        name,
        side.server,
        throughput,
        _number(side.p50_ms),
        _number(side.p99_ms),
        _number(side.cpu_us_per_call, digits=0),
        rows,
    )


def _times(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.3f}x"


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
