"""A/B pairs: medians of each round's own ratio, so drift that moves both sides cancels."""

from __future__ import annotations

import os

import pytest

from bench.cpu import CpuMeter, cpu_seconds
from bench.pairs import AUTH, BASELINE, BOUNDARY, VARIANT, find_pair, summarize_pairs
from bench.results import BenchReport, PhaseResult, RowCheck
from bench.table import render


def _round(
    phase: str, side: str, number: int, throughput: float, cpu: float, *, status: str = "ok"
) -> PhaseResult:
    result = PhaseResult(phase, "SubmitFeedback", side, 64, status=status)
    result.throughput, result.p50_ms, result.p99_ms = throughput, 10.0, throughput / 100
    result.cpu_us_per_call = cpu
    result.rows = RowCheck("feedback", 100, 100, 100, "test")
    result.extra.update(side=side, round=number, requests=100)
    return result


def test_ratios_are_medians_of_each_rounds_own() -> None:
    # The machine slows down from round to round; each round's ratio stays 0.9 or so.
    phases = [
        _round(AUTH.phase, BASELINE, 0, 1000.0, 500.0),
        _round(AUTH.phase, VARIANT, 0, 900.0, 510.0),
        _round(AUTH.phase, VARIANT, 1, 450.0, 530.0),
        _round(AUTH.phase, BASELINE, 1, 500.0, 500.0),
        _round(AUTH.phase, BASELINE, 2, 200.0, 500.0),
        _round(AUTH.phase, VARIANT, 2, 190.0, 520.0),
    ]

    (pair,) = summarize_pairs(phases)

    assert pair.name == "auth"
    assert pair.round_throughput_ratios == pytest.approx([0.9, 0.9, 0.95])
    assert pair.throughput_ratio == pytest.approx(0.9)
    assert pair.cpu_us_difference == pytest.approx(20.0)
    assert pair.baseline.throughput == pytest.approx(500.0)
    assert pair.variant.cpu_us_per_call == pytest.approx(520.0)
    assert (pair.variant.stored, pair.variant.acknowledged) == (300, 300)
    assert pair.requests_per_round == 100


def test_a_round_missing_a_side_is_left_out() -> None:
    phases = [
        _round(BOUNDARY.phase, BASELINE, 0, 3000.0, 300.0),
        _round(BOUNDARY.phase, VARIANT, 0, 2700.0, 320.0),
        _round(BOUNDARY.phase, BASELINE, 1, 3000.0, 300.0),
        _round(BOUNDARY.phase, VARIANT, 1, 10.0, 999.0, status="error"),
    ]

    pair = find_pair(summarize_pairs(phases), BOUNDARY.name)

    assert pair is not None
    assert pair.baseline.rounds == 1
    assert pair.throughput_ratio == pytest.approx(0.9)
    assert find_pair(summarize_pairs(phases), AUTH.name) is None


def test_table_shows_pairs_not_their_rounds() -> None:
    phases = [
        _round(AUTH.phase, BASELINE, 0, 1000.0, 500.0),
        _round(AUTH.phase, VARIANT, 0, 980.0, 510.0),
    ]
    report = BenchReport("quick", {}, {}, phases=phases, pairs=summarize_pairs(phases))

    table = render(report)

    assert "auth-round" not in table
    assert "with key / without  0.980x" in table
    assert "1.02x (+10 µs)" in table
    assert report.to_json()["pairs"][0]["throughput_ratio"] == pytest.approx(0.98)


def test_cpu_meter_counts_this_process() -> None:
    before = cpu_seconds(os.getpid())
    with CpuMeter(os.getpid()) as meter:
        sum(i * i for i in range(2_000_000))
    assert before is not None
    assert before > 0
    assert meter.seconds is not None
    assert meter.seconds >= 0
    assert meter.microseconds_per_call(0) is None


def test_cpu_of_a_process_that_is_gone_is_none() -> None:
    assert cpu_seconds(2**22 + 1) is None
