"""What each scenario found: one record per scenario and database, and the JSON they become."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PASS = "PASS"
FAIL = "FAIL"
SKIP = "SKIP"


@dataclass(slots=True)
class ScenarioResult:
    """One scenario on one database: the writes it acknowledged, those missing, and a verdict."""

    scenario: str
    database: str
    acknowledged: int | None = None
    """Writes answered OK (items, for batches); None when the scenario does not write."""
    missing: int | None = None
    """Acknowledged writes with no row in the database: always a failure."""
    figures: dict[str, Any] = field(default_factory=dict)
    """Scenario-specific measurements (exit code, seconds, status codes, duplicates...)."""
    failures: list[str] = field(default_factory=list)
    """Why the verdict is FAIL, one sentence each; empty when it passes."""
    notes: list[str] = field(default_factory=list)
    """Findings worth a look that the verdict does not judge (the brief fixes what it judges)."""
    skipped: str = ""
    """Why the scenario did not run; non-empty makes the verdict SKIP."""
    seconds: float = 0.0
    """Wall time of the scenario, setup included."""

    @property
    def verdict(self) -> str:
        """SKIP when it did not run, FAIL when anything it checks failed, else PASS."""
        if self.skipped:
            return SKIP
        return FAIL if self.failures else PASS

    def check(self, passed: bool, failure: str) -> None:
        """Record `failure` unless `passed`: the scenarios' one way to fail."""
        if not passed:
            self.failures.append(failure)

    def to_json(self) -> dict[str, Any]:
        """The result with its verdict."""
        return {**asdict(self), "verdict": self.verdict}


@dataclass(slots=True)
class SuiteReport:
    """The whole run: its mode, results in run order and total time."""

    mode: str
    results: list[ScenarioResult] = field(default_factory=list)
    duration_seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """Whether any scenario failed (skips do not count)."""
        return any(result.verdict == FAIL for result in self.results)

    def write(self, path: Path) -> None:
        """Write the report as indented JSON, creating the directory."""
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "mode": self.mode,
            "duration_seconds": round(self.duration_seconds, 1),
            "settings": self.settings,
            "failed": self.failed,
            "results": [result.to_json() for result in self.results],
        }
        path.write_text(json.dumps(document, indent=2, default=str) + "\n")
