"""The one table the suite prints: a line per scenario and database, then why anything failed."""

from __future__ import annotations

from typing import Any

from reliability.results import ScenarioResult, SuiteReport

HEADER = ("scenario", "database", "acked", "missing", "figures", "verdict", "s")


def render(report: SuiteReport) -> str:
    """The table, the failure reasons, and the total time."""
    rows = [_row(result) for result in report.results]
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = [_join(row, widths) for row in [HEADER, tuple("-" * w for w in widths), *rows]]
    for result in report.results:
        for failure in result.failures:
            lines.append(f"FAIL  {result.scenario} ({result.database}): {failure}")
        for note in result.notes:
            lines.append(f"NOTE  {result.scenario} ({result.database}): {note}")
    verdict = "FAILED" if report.failed else "all passed"
    lines.append(f"{verdict}; total time {report.duration_seconds:.0f} s ({report.mode} mode)")
    return "\n".join(lines)


def figures_text(result: ScenarioResult) -> str:
    """The scenario's own figures in a few words."""
    if result.skipped:
        return f"skipped: {result.skipped}"
    figures = result.figures
    parts: list[str] = []
    if "restart_seconds" in figures:
        parts.append(f"restart {figures['restart_seconds']} s")
    if "exit_code" in figures and "stop_mode" not in figures:
        parts.append(f"exit {figures['exit_code']} in {figures.get('exit_seconds', '?')} s")
    if "codes_after_signal" in figures:
        parts.append(
            f"after signal: {figures['acknowledged_after_signal']} OK"
            + "".join(f", {n} {code}" for code, n in figures["codes_after_signal"].items())
        )
    if figures.get("in_flight_at_signal_failed"):
        parts.append(
            f"in flight at signal, failed: {_codes(figures['in_flight_at_signal_failed'])}"
        )
    if "stop_mode" in figures:
        parts.append(
            f"stop -m {figures['stop_mode']}, {figures.get('outage_seconds', '?')} s down: "
            f"failed {_codes(figures.get('writes_failed_during_outage', {}))}; "
            f"health {_codes(figures.get('health_during_outage', {}))}; "
            f"recovery write {_seconds(figures.get('recovery_write_seconds'))}, "
            f"health SERVING {_seconds(figures.get('recovery_health_seconds'))}"
        )
    if "duplicates_stored" in figures:
        batches = f" in {figures['batches']} batches" if "batches" in figures else ""
        parts.append(
            f"{figures['distinct_requests']} requests{batches} x {figures['copies_each']} copies: "
            f"{figures['duplicates_stored']} duplicates stored "
            f"(max {figures['max_rows_per_request']} rows/request)"
        )
    if "summary" in figures:
        parts.append(str(figures["summary"]))
    if "stored_not_acknowledged" in figures:
        parts.append(f"stored unacked {figures['stored_not_acknowledged']}")
    if "error" in figures:
        parts.append(f"error: {figures['error']}")
    return "; ".join(parts)


def _row(result: ScenarioResult) -> tuple[str, ...]:
    return (
        result.scenario,
        result.database,
        _count(result.acknowledged),
        _count(result.missing),
        figures_text(result),
        result.verdict,
        f"{result.seconds:.0f}",
    )


def _codes(codes: dict[str, Any]) -> str:
    return ", ".join(f"{n} {code}" for code, n in codes.items()) or "none"


def _seconds(value: object) -> str:
    return "never" if value is None else f"{value} s"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _join(row: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
