"""Export streams abandoned every way a client abandons them: the server lives through it,
still answers, and logs each abandoned call once (the SIGSEGV of issue 11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability.hostile.dataset import Dataset
from reliability.hostile.scenario import (
    CANCELLED_EXPORTS,
    DEADLINE_EXPORTS,
    KILLED_CLIENTS,
    RESET_EXPORTS,
    STOPPED_READERS,
)
from tests.hostile.conftest import PHASE_TIMEOUT_SECONDS, explain, run

pytestmark = [pytest.mark.hostile, pytest.mark.timeout(PHASE_TIMEOUT_SECONDS)]


def test_export_clients_killed_or_interrupted_mid_stream(
    hostile_dataset: Dataset, tmp_path: Path
) -> None:
    result = run(KILLED_CLIENTS, hostile_dataset, tmp_path)

    assert result.figures.get("server_deaths") == 0, explain(result)
    assert result.failures == [], explain(result)


def test_exports_whose_deadline_passes_mid_stream(hostile_dataset: Dataset, tmp_path: Path) -> None:
    result = run(DEADLINE_EXPORTS, hostile_dataset, tmp_path)

    assert result.figures.get("server_deaths") == 0, explain(result)
    assert result.failures == [], explain(result)


def test_exports_cancelled_by_the_client(hostile_dataset: Dataset, tmp_path: Path) -> None:
    result = run(CANCELLED_EXPORTS, hostile_dataset, tmp_path)

    assert result.figures.get("server_deaths") == 0, explain(result)
    assert result.failures == [], explain(result)


def test_exports_cut_by_a_tcp_reset(hostile_dataset: Dataset, tmp_path: Path) -> None:
    result = run(RESET_EXPORTS, hostile_dataset, tmp_path)

    assert result.figures.get("server_deaths") == 0, explain(result)
    assert result.failures == [], explain(result)


def test_readers_that_stop_reading_and_leave(hostile_dataset: Dataset, tmp_path: Path) -> None:
    result = run(STOPPED_READERS, hostile_dataset, tmp_path)

    assert result.figures.get("server_deaths") == 0, explain(result)
    assert result.failures == [], explain(result)
