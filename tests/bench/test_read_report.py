"""Read-bench verdicts: ratios point the right way, targets use the largest size, gaps fail."""

from __future__ import annotations

from bench.read.aggregates import Aggregate, differences
from bench.read.report import UNAVAILABLE, Comparison, evaluate_targets, verdict


def _stats(rows: int, phase: str, p50_ms: float, full_scan_ms: float) -> Comparison:
    return Comparison(rows, phase, "GetStats", "ms", "full scan", p50_ms, reference=full_scan_ms)


def test_ratios_say_how_many_times_better_than_the_reference() -> None:
    assert _stats(10, "stats-overall", 2.0, 4000.0).ratio == 2000.0
    export = Comparison(10, "export", "ExportFeedback", "rows/s", "SELECT *", 60_000.0)
    export.reference = 120_000.0
    assert export.ratio == 0.5


def test_targets_are_evaluated_at_the_largest_size() -> None:
    small = [_stats(1_000, phase, 50.0, 60.0) for phase in _STATS]
    large = [_stats(10_000, phase, 2.0, 5000.0) for phase in _STATS]
    page = Comparison(10_000, "list-walked", "ListFeedback", "ms", "OFFSET", 4.0, reference=70.0)
    writes = Comparison(10_000, "writes-under-stats", "SubmitFeedback", "req/s", "alone", 900.0)
    writes.reference = 1000.0
    export = Comparison(10_000, "export", "ExportFeedback", "rows/s", "SELECT *")
    export.status = UNAVAILABLE

    verdicts = {
        target.name: (target.measured, target.passed)
        for target in evaluate_targets([*small, *large, page, writes, export])
    }

    assert verdicts == {
        "stats-p50": (2.0, True),
        "stats-speedup": (2500.0, True),
        "list-p50": (4.0, True),
        "export-rows": (None, False),
        "writes-under-stats": (0.9, True),
    }


def test_a_missing_stats_phase_leaves_the_stats_targets_unmeasured() -> None:
    measured = [_stats(10, phase, 1.0, 5000.0) for phase in _STATS[:3]]
    targets = {target.name: target for target in evaluate_targets(measured)}
    assert targets["stats-p50"].measured is None
    assert not targets["stats-speedup"].passed


def test_row_verdicts() -> None:
    assert verdict(_stats(10, "stats-user", 4.0, 5000.0)) == "PASS"
    assert verdict(_stats(10, "stats-user", 4.0, 3000.0)) == "FAIL"  # only 750x the scan
    assert verdict(Comparison(10, "stats-user", "GetStats", "ms", "", status=UNAVAILABLE)) == "-"


def test_differences_name_every_wrong_figure() -> None:
    sql = Aggregate.of({"feedback.total": 3, "feedback.score5": 0}, {"feedback.avg_score": 4.5})
    same = Aggregate.of({"feedback.total": 3}, {"feedback.avg_score": 4.5 + 1e-12})
    wrong = Aggregate.of({"feedback.total": 2, "feedback.score5": 1}, {})
    assert differences(sql, same) == []
    assert differences(sql, wrong) == [
        "feedback.score5: SQL 0, GetStats 1",
        "feedback.total: SQL 3, GetStats 2",
        "feedback.avg_score: SQL 4.5, GetStats None",
    ]


_STATS = ("stats-overall", "stats-conversation", "stats-user", "stats-daily")
