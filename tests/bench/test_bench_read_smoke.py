"""`python -m bench.read --quick` end to end: each phase runs or says why not; all checks pass."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

import pytest

from bench.read.report import STATS_PHASES, WRITES_PHASE
from bench.server_process import REPOSITORY_ROOT

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) missing"),
]

ROWS = 20_000
PHASES = {
    *STATS_PHASES,
    "list-newest",
    "list-middle-by-time",
    "list-day-month-back",
    "list-oldest",
    "list-walked",
    "export",
    WRITES_PHASE,
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON report of one quick run, which must exit 0 and leave no scratch files behind.

    --stats-without-rollups runs the GetStats phases on a checkout without rollups too, so the
    bench's own code is exercised either way.
    """
    output = tmp_path_factory.mktemp("bench-read") / "bench-read.json"
    finished = subprocess.run(
        [
            sys.executable,
            *("-m", "bench.read", "--quick", "--stats-without-rollups"),
            *("--output", str(output)),
        ],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "PASS" in finished.stdout or "FAIL" in finished.stdout
    assert list(output.parent.iterdir()) == [output], "scratch database left behind"
    loaded: dict[str, Any] = json.loads(output.read_text())
    return loaded


def test_every_phase_is_measured_or_unavailable(report: dict[str, Any]) -> None:
    statuses = {entry["phase"]: entry["status"] for entry in report["comparisons"]}
    assert set(statuses) == PHASES
    assert set(statuses.values()) <= {"ok", "unavailable"}, statuses
    for phase in ("stats-overall", "stats-conversation", "stats-user", "list-newest"):
        assert statuses[phase] == "ok", phase


def test_measured_phases_have_a_value_and_a_reference(report: dict[str, Any]) -> None:
    for entry in report["comparisons"]:
        if entry["status"] == "ok":
            assert entry["rows"] == ROWS
            assert entry["value"] > 0, entry
            assert entry["reference"] > 0, entry
            assert entry["ratio"] > 0, entry
        else:
            assert entry["detail"], entry


def test_every_check_passed(report: dict[str, Any]) -> None:
    correctness = report["correctness"]
    assert correctness["passed"] is True
    names = " ".join(check["name"] for check in correctness["checks"])
    for expected in ("read-back", "stats-overall", "stats-conversation", "list-newest"):
        assert expected in names


def test_the_load_is_reported(report: dict[str, Any]) -> None:
    (load,) = report["loads"]
    assert load["rows"] == ROWS
    assert load["added"] == {"interactions": ROWS // 4, "feedback": ROWS, "events": ROWS // 2}


def test_targets_have_verdicts(report: dict[str, Any]) -> None:
    assert {target["name"] for target in report["targets"]} == {
        "stats-p50",
        "stats-speedup",
        "list-p50",
        "export-rows",
        "writes-under-stats",
    }
    assert all(isinstance(target["passed"], bool) for target in report["targets"])
