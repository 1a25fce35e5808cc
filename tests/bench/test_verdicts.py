"""Row checks and targets: a missing row is a failure, a slow phase only a FAIL in the report."""

from __future__ import annotations

from bench.pairs import AUTH, BASELINE, VARIANT
from bench.results import BenchReport, PhaseResult, RowCheck
from bench.table import render
from bench.targets import evaluate_targets, write_cpu_us


def test_missing_and_extra_rows() -> None:
    lost = RowCheck("events", sent=10, acknowledged=10, stored=8, source="test")
    unacknowledged = RowCheck("events", sent=10, acknowledged=8, stored=10, source="test")
    unknown = RowCheck("events", sent=10, acknowledged=None, stored=3, source="test")
    assert (lost.missing, lost.extra, lost.exact) == (2, 0, False)
    assert (unacknowledged.missing, unacknowledged.extra) == (0, 2)
    assert (unknown.missing, unknown.exact) == (0, False)


def test_report_counts_missing_rows() -> None:
    phase = PhaseResult("unary", "LogEvent", "real", 64)
    phase.rows = RowCheck("events", sent=5, acknowledged=5, stored=4, source="test")
    report = BenchReport(mode="quick", machine={}, settings={}, phases=[phase])
    assert report.missing_rows == 1
    assert report.to_json()["correctness"]["passed"] is False


def test_targets_from_phases() -> None:
    submit = PhaseResult("unary", "SubmitFeedback", "real", 64)
    submit.throughput_ratio, submit.p99_ratio, submit.rss_high_water_mb = 0.9, 2.0, 120.0
    submit.rows = RowCheck("feedback", sent=1, acknowledged=1, stored=1, source="test")
    memory = PhaseResult("unary", "LogEvent", "real", 256)
    memory.rss_high_water_mb = 250.0
    batch = PhaseResult("batch", "LogEvents", "real", 4, "rows/s")
    batch.throughput_ratio = 1.2
    unavailable = PhaseResult("ingest", "Ingest", "real", 1, "rows/s", status="unavailable")
    without_key = PhaseResult(AUTH.phase, "SubmitFeedback", "none", 64)
    with_key = PhaseResult(AUTH.phase, "SubmitFeedback", "keys", 64)
    for side, result, throughput in ((BASELINE, without_key, 1000.0), (VARIANT, with_key, 900.0)):
        result.throughput = throughput
        result.extra.update(side=side, round=0, requests=10)
    toggled = PhaseResult("auth-toggle", "SubmitFeedback", "one server", 64)
    toggled.throughput_ratio = 0.94  # judged, unlike the two-server pair's 0.90 beside it
    metered = PhaseResult("metrics-toggle", "SubmitFeedback", "one server", 64)
    metered.throughput_ratio = 0.98
    phases = [submit, memory, batch, unavailable, without_key, with_key, toggled, metered]

    verdicts = {
        target.name: (target.measured, target.passed) for target in evaluate_targets(phases)
    }

    assert verdicts == {
        "unary-throughput": (0.9, True),
        "unary-p99": (2.0, False),
        "ingestion-throughput": (1.2, True),
        "peak-rss": (250.0, False),
        "auth-throughput": (0.94, False),
        "metrics-throughput": (0.98, True),
        "rows-acknowledged": (0.0, True),
    }


def test_unmeasured_target_fails() -> None:
    verdicts = {target.name: target.passed for target in evaluate_targets([])}
    assert not any(verdicts.values())


def test_server_cpu_per_durable_write_is_reported_beside_the_ratios() -> None:
    quiet = PhaseResult("unary", "SubmitFeedback", "real", 64)
    quiet.cpu_us_per_call = 450.0
    logged = PhaseResult("unary-logging", "SubmitFeedback", "real, INFO logs", 64)
    logged.cpu_us_per_call = 470.0
    other_concurrency = PhaseResult("ceiling", "SubmitFeedback", "ceiling", 16)
    other_concurrency.cpu_us_per_call = 99.0
    phases = [quiet, logged, other_concurrency]
    report = BenchReport(mode="quick", machine={}, settings={}, phases=phases)
    report.write_cpu_us = write_cpu_us(phases)

    assert report.write_cpu_us == {"quiet": 450.0, "INFO logs": 470.0, "ceiling": None}
    assert report.to_json()["durable_write_cpu_us"] == report.write_cpu_us
    assert (
        "server CPU per durable SubmitFeedback at c=64: quiet 450 µs, INFO logs 470 µs, ceiling -"
        in render(report).splitlines()
    )
