"""`python -m bench --quick` end to end: every phase runs and every acknowledged write is kept."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.server_process import REPOSITORY_ROOT

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) missing"),
]

UNARY_METHODS = {"SubmitFeedback", "LogEvent"}
CONCURRENCIES = {1, 16, 64, 256}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The JSON report of one quick run, which must exit 0."""
    output = tmp_path_factory.mktemp("bench") / "bench.json"
    finished = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "PASS" in finished.stdout or "FAIL" in finished.stdout
    loaded: dict[str, object] = json.loads(Path(output).read_text())
    return loaded


def _phases(report: dict[str, object]) -> list[dict[str, object]]:
    phases = report["phases"]
    assert isinstance(phases, list)
    return phases


def _extra(entry: dict[str, object]) -> dict[str, object]:
    extra = entry["extra"]
    assert isinstance(extra, dict)
    return extra


def test_every_unary_phase_ran_at_every_concurrency(report: dict[str, object]) -> None:
    for phase in ("ceiling", "unary"):
        measured = {
            (entry["method"], entry["concurrency"])
            for entry in _phases(report)
            if entry["phase"] == phase and entry["status"] == "ok" and entry["throughput"]
        }
        assert measured == {(m, c) for m in UNARY_METHODS for c in CONCURRENCIES}, phase


def test_every_other_phase_ran(report: dict[str, object]) -> None:
    statuses = {entry["phase"]: entry["status"] for entry in _phases(report)}
    for phase in (
        "unary-logging",
        "status-check",
        "boundary-check",
        "auth-check",
        "auth-toggle",
        "metrics-toggle",
        "batch",
        "ingest",
        "raw-executemany",
    ):
        assert statuses.get(phase) == "ok", phase


def test_pairs_ran_every_round_on_both_sides(report: dict[str, object]) -> None:
    for phase in ("auth-round", "boundary-round"):
        rounds = [entry for entry in _phases(report) if entry["phase"] == phase]
        extras = [_extra(entry) for entry in rounds]
        assert {(extra["side"], extra["round"]) for extra in extras} == {
            (side, number) for side in ("baseline", "variant") for number in (0, 1)
        }, phase
        assert all(entry["status"] == "ok" and entry["cpu_us_per_call"] for entry in rounds)
    pairs = report["pairs"]
    assert isinstance(pairs, list)
    assert {pair["name"] for pair in pairs} == {"auth", "boundary"}
    for pair in pairs:
        assert pair["throughput_ratio"] is not None
        assert pair["cpu_us_difference"] is not None


def test_unary_phases_have_latency_ratios_and_memory(report: dict[str, object]) -> None:
    for entry in _phases(report):
        if entry["phase"] == "unary":
            assert entry["p50_ms"] is not None
            assert entry["p99_ms"] is not None
            assert entry["throughput_ratio"] is not None
            assert entry["p99_ratio"] is not None
            assert entry["rss_high_water_mb"] is not None
            assert entry["cpu_us_per_call"] is not None


def test_rows_stored_equal_writes_acknowledged(report: dict[str, object]) -> None:
    correctness = report["correctness"]
    assert isinstance(correctness, dict)
    assert correctness["passed"] is True
    checks = correctness["checks"]
    assert checks, "no phase checked its rows"
    for check in checks:
        assert check["stored"] == check["acknowledged"], check


def test_targets_have_verdicts(report: dict[str, object]) -> None:
    targets = report["targets"]
    assert isinstance(targets, list)
    assert {target["name"] for target in targets} == {
        "unary-throughput",
        "unary-p99",
        "ingestion-throughput",
        "peak-rss",
        "auth-throughput",
        "metrics-throughput",
        "rows-acknowledged",
    }
    assert all(isinstance(target["passed"], bool) for target in targets)


def test_machine_info_is_recorded(report: dict[str, object]) -> None:
    machine = report["machine"]
    assert isinstance(machine, dict)
    assert machine["nproc"] >= 1
    assert machine["python"]


def test_server_cpu_per_durable_write_is_measured(report: dict[str, object]) -> None:
    figures = report["durable_write_cpu_us"]
    assert isinstance(figures, dict)
    assert set(figures) == {"quiet", "INFO logs", "ceiling"}
    assert all(isinstance(value, float) and value > 0 for value in figures.values()), figures
