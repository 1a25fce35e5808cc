"""Hostile clients against a real `feedback-server` process on loopback.

Every test starts its own server over a copy of one seeded SQLite file (seeded once per session
through Ingest) and runs one phase of reliability.hostile at CI_PLAN's sizes; the `hostile`
reliability scenario runs the same phases larger. A phase's checks live in the phase, so a test
asserts its failures are none and shows the figures when they are not.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
from pathlib import Path

import pytest

from reliability.hostile.dataset import Dataset
from reliability.hostile.plan import CI_PLAN
from reliability.hostile.scenario import HostilePhase, seed_dataset
from reliability.results import ScenarioResult

PHASE_TIMEOUT_SECONDS = 100
"""pytest-timeout for one phase: its own waits are bounded well below this."""


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker here: pyproject's marker list belongs to the other suites."""
    config.addinivalue_line(
        "markers",
        "hostile: starts a real server and abuses it for several seconds "
        "(tests/hostile; deselect with -m 'not hostile')",
    )


@pytest.fixture(scope="session")
def hostile_dataset(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Dataset:
    """The seeded file (CI_PLAN: 10,000 events, 5,000 feedback): exports of 10 and 5 chunks.

    Seeded once per run, not once per pytest-xdist worker (3-5 s each): the workers share the
    parent of their temporary directories, and the first to take the lock seeds it for all.
    Phases only read it, through copies.
    """
    if worker_id == "master":  # not distributed: the run's own directory
        return seed_dataset(tmp_path_factory.mktemp("hostile-seed"), CI_PLAN)
    shared = tmp_path_factory.getbasetemp().parent / "hostile-seed"
    shared.mkdir(exist_ok=True)
    seeded = shared / "seeded"  # written last, so a worker that failed halfway seeds nothing
    with (shared / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if seeded.exists():
            return Dataset(Path(seeded.read_text()), CI_PLAN.seed_events, CI_PLAN.seed_feedback)
        dataset = seed_dataset(shared, CI_PLAN)
        seeded.write_text(str(dataset.path))
        return dataset


def run(phase: HostilePhase, dataset: Dataset, workdir: Path) -> ScenarioResult:
    """Run one phase at CI sizes on its own event loop."""
    return asyncio.run(phase.run(dataset, workdir, CI_PLAN))


def explain(result: ScenarioResult) -> str:
    """The failures and figures of a phase, for an assertion message."""
    figures = {key: value for key, value in result.figures.items() if key != "summary"}
    return "\n".join(
        [
            *result.failures,
            *(f"note: {note}" for note in result.notes),
            json.dumps(figures, default=str),
        ]
    )
