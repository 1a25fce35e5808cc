"""`python -m bench.retention --quick` end to end: both sides measured, a ratio, checks passed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from typing import Any

import pytest

from bench.server_process import REPOSITORY_ROOT

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) missing"),
]

ROWS = 60_000


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """The table and the JSON report of one quick run, which must exit 0 and leave no scratch
    files behind."""
    output = tmp_path_factory.mktemp("bench-retention") / "bench-retention.json"
    finished = subprocess.run(
        [sys.executable, "-m", "bench.retention", "--quick", "--output", str(output)],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert list(output.parent.iterdir()) == [output], "scratch files left behind"
    loaded: dict[str, Any] = json.loads(output.read_text())
    return finished.stdout, loaded


def test_the_table_gives_the_ratio_and_a_verdict(run: tuple[str, dict[str, Any]]) -> None:
    table, _ = run
    assert re.search(r"^sweep / alone\s+\d+\.\d{3}x", table, re.MULTILINE), table
    verdict = re.search(
        r"^(PASS|FAIL)  writes with the sweep / alone: (\d+\.\d{3})x req/s \(target >= 0\.8\)",
        table,
        re.MULTILINE,
    )
    assert verdict is not None, table


def test_both_sides_ran_every_round(run: tuple[str, dict[str, Any]]) -> None:
    _, report = run
    summary = report["summary"]
    assert summary["rounds"] == 2
    assert len(summary["round_ratios"]) == 2
    assert summary["ratio"] > 0
    for side in ("alone", "sweep"):
        assert summary[side]["requests_per_second"] > 0
        assert 0 < summary[side]["p50_ms"] <= summary[side]["p99_ms"]
    retentions = [entry["retention"] for entry in report["rounds"]]
    assert retentions.count(None) == 2
    assert retentions.count(report["settings"]["retention"]) == 2


def test_the_sweep_expired_rows_and_writes_alone_none(run: tuple[str, dict[str, Any]]) -> None:
    _, report = run
    assert sum(report["dataset"]["expirable"].values()) == ROWS
    for entry in report["rounds"]:
        if entry["retention"] is None:
            assert entry["expired_in_window"] == 0, entry
        else:
            assert entry["expired_in_window"] > 0, entry
            assert entry["expired_rows_per_second"] > 0, entry
    assert report["summary"]["sweep"]["expired_rows_per_second"] > 0


def test_each_kind_was_swept_alone(run: tuple[str, dict[str, Any]]) -> None:
    _, report = run
    kinds = report["kinds"]
    assert set(kinds) == {"feedback", "events", "interactions"}
    for kind, entry in kinds.items():
        assert entry["retention"].startswith(f"{kind}="), entry
        assert entry["expired_in_window"] > 0, kind
    assert report["summary"]["estimated_expiry_seconds"] > 0


def test_every_check_passed(run: tuple[str, dict[str, Any]]) -> None:
    _, report = run
    assert [check for check in report["checks"] if not check["passed"]] == []
    assert {check["name"].split(" (")[0] for check in report["checks"]} == {
        "every acknowledged SubmitFeedback stored",
        "every server exited 0",
        "writes alone expired nothing",
        "every sweep expired rows",
    }
    for entry in report["rounds"]:
        assert entry["missing"] == 0
        assert entry["stored"] >= entry["acknowledged"] > 0
