"""The retention bench's parts without a server: the prepared file, a round's figures, the
medians and the verdict."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench import payloads
from bench.retention.dataset import (
    KIND_TABLES,
    RATED_TURNS,
    RETENTION,
    kind_retention,
    old_year,
    prepare,
    shape_for,
)
from bench.retention.report import Report, render
from bench.retention.rounds import RoundResult
from server.service.retention import retention_periods

NOW = datetime(2026, 12, 3, 19, 30, tzinfo=UTC)
TABLES = ("feedback", "feedback_history", "interactions", "events")


@pytest.mark.parametrize("rows", [7, 20_000, 1_000_000, 1_234_567])
def test_the_shape_holds_at_least_the_rows_asked_for(rows: int) -> None:
    shape = shape_for(rows)
    total = shape.feedback + shape.interactions + shape.events
    assert rows <= total <= rows + 2


def test_the_old_year_has_expired_under_every_period() -> None:
    year = old_year(NOW)
    assert year.end - year.start == timedelta(days=365)
    assert all(year.end < NOW - period for period in retention_periods(RETENTION).values())


def test_each_kind_can_be_swept_alone() -> None:
    assert set(KIND_TABLES) == set(retention_periods(RETENTION))
    for kind in KIND_TABLES:
        assert set(retention_periods(kind_retention(kind))) == {kind}


def test_the_prepared_file_holds_old_rows_and_recent_rated_turns(tmp_path: Path) -> None:
    prepared = prepare(tmp_path / "prepared.sqlite3", 700, lambda _message: None, NOW)
    assert prepared.expirable_rows == 700
    assert prepared.expirable["feedback_history"] == 0
    with closing(sqlite3.connect(prepared.database)) as connection:
        counts = {
            table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in TABLES
        }
        (rated,) = connection.execute(
            "SELECT count(*) FROM interactions WHERE conversation_id = ? AND occur_time > ?",
            (payloads.CONVERSATION_ID, str(prepared.cutoff.replace(tzinfo=None))),
        ).fetchone()
        (rollups,) = connection.execute("SELECT count(*) FROM feedback_rollups").fetchone()
    assert counts == {
        **prepared.expirable,
        "interactions": prepared.expirable["interactions"] + RATED_TURNS,
    }
    assert rated == RATED_TURNS
    assert rollups > 0, "rollups were not rebuilt"
    copy = prepared.copy_to(tmp_path / "copy.sqlite3")
    assert copy.read_bytes() == prepared.database.read_bytes()


def _round(
    number: int,
    retention: str | None,
    requests_per_second: float,
    expired: int = 0,
    counts: list[tuple[float, int]] | None = None,
) -> RoundResult:
    before = {"feedback": 400, "feedback_history": 0, "interactions": 100, "events": 200}
    after = {**before, "feedback": before["feedback"] - expired}
    return RoundResult(
        number=number,
        retention=retention,
        requests_per_second=requests_per_second,
        p50_ms=8.0,
        p99_ms=40.0 if retention is None else 80.0,
        acknowledged=1000,
        stored=1000,
        window_seconds=10.0,
        expirable_before=before,
        expirable_after=after,
        server_cpu_seconds=9.0,
        counts=counts or [(0.0, 700), (10.0, 700 - expired)],
    )


def test_a_round_rates_the_sweep_while_it_had_rows() -> None:
    running = _round(1, RETENTION, 800.0, expired=300)
    assert running.expired_in_window == 300
    assert running.expired_by_table["feedback"] == 300
    assert running.finished_seconds is None
    assert running.expired_rows_per_second == 30.0
    assert running.server_cores == 0.9
    done = _round(1, "feedback=400d", 800.0, expired=400, counts=[(0.0, 400), (4.0, 0), (10.0, 0)])
    assert done.finished_seconds == 4.0
    assert done.expired_rows_per_second == 100.0


def _report(ratios: list[float]) -> Report:
    report = Report("test", {}, {"window_seconds": 10})
    report.dataset = {
        "expirable": {"feedback": 400, "feedback_history": 0, "interactions": 100, "events": 200}
    }
    for number, ratio in enumerate(ratios, 1):
        report.alone.append(_round(number, None, 1000.0))
        report.sweep.append(_round(number, RETENTION, 1000.0 * ratio, expired=100))
    return report


def test_the_verdict_is_the_median_of_the_rounds_ratios() -> None:
    report = _report([0.5, 0.85, 0.9])
    summary = report.summary()
    assert summary["ratio"] == 0.85
    assert summary["p99_ratio"] == 2.0
    assert report.to_json()["target"]["passed"] is True
    table = render(report)
    assert "PASS  writes with the sweep / alone: 0.850x req/s (target >= 0.8)" in table
    assert "FAIL" in render(_report([0.5, 0.6, 0.9]))


def test_the_estimate_needs_every_kind() -> None:
    report = _report([0.9])
    assert report.estimated_expiry_seconds() is None
    report.kinds = {
        "feedback": _round(2, "feedback=400d", 500.0, expired=200),
        "events": _round(3, "events=180d", 500.0, expired=200),
        "interactions": _round(4, "interactions=90d", 500.0, expired=100),
    }
    # 400 feedback at 20/s, 200 events at 20/s, 100 interactions at 10/s.
    assert report.estimated_expiry_seconds() == pytest.approx(20 + 10 + 10)


def test_checks_catch_lost_writes_and_expiry_without_retention() -> None:
    report = _report([0.9])
    assert report.passed_checks
    report.alone[0].stored = 990
    report.alone[0].expirable_after = {**report.alone[0].expirable_after, "events": 150}
    failed = {check.name for check in report.checks() if not check.passed}
    assert failed == {
        "every acknowledged SubmitFeedback stored (2 rounds)",
        "writes alone expired nothing",
    }
