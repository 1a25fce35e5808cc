"""The reliability table and JSON: verdicts, failure and note lines, skips that do not fail."""

from __future__ import annotations

import json
from pathlib import Path

from reliability.results import FAIL, PASS, SKIP, ScenarioResult, SuiteReport
from reliability.table import render


def _report() -> SuiteReport:
    passed = ScenarioResult("kill -9 under load", "sqlite", acknowledged=10_000, missing=0)
    passed.figures["restart_seconds"] = 0.9
    lost = ScenarioResult("SIGTERM drain", "postgresql", acknowledged=5, missing=2)
    lost.figures.update(exit_code=0, exit_seconds=0.4)
    lost.check(False, "2 acknowledged writes are not in the database")
    lost.notes.append("3 writes in flight at SIGTERM ended CANCELLED")
    skipped = ScenarioResult("fuzz", "-")
    skipped.skipped = "tests/fuzz does not exist yet"
    return SuiteReport(mode="quick", results=[passed, lost, skipped], duration_seconds=12)


def test_verdicts_fail_only_on_failures_and_skip_on_skips() -> None:
    assert [result.verdict for result in _report().results] == [PASS, FAIL, SKIP]
    assert _report().failed


def test_table_has_a_row_per_result_and_says_why_it_failed() -> None:
    text = render(_report())

    assert "10,000" in text
    assert "restart 0.9 s" in text
    assert "exit 0 in 0.4 s" in text
    assert "FAIL  SIGTERM drain (postgresql): 2 acknowledged writes" in text
    assert "NOTE  SIGTERM drain (postgresql): 3 writes in flight" in text
    assert "skipped: tests/fuzz does not exist yet" in text
    assert text.splitlines()[-1].startswith("FAILED")


def test_json_carries_each_verdict(tmp_path: Path) -> None:
    path = tmp_path / "out" / "reliability.json"
    _report().write(path)

    document = json.loads(path.read_text())
    assert document["failed"] is True
    assert [result["verdict"] for result in document["results"]] == [PASS, FAIL, SKIP]
