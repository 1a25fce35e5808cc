"""Clients that hold what the server has: idle connections, exports nobody reads, one caller's
many exports. The server must bound them (refuse, time out, close) and keep answering."""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability.hostile.dataset import Dataset
from reliability.hostile.scenario import (
    IDLE_CONNECTIONS,
    ONE_CALLER_CAP,
    SLOW_READERS,
    STALLED_EXPORTS,
)
from tests.hostile.conftest import PHASE_TIMEOUT_SECONDS, explain, run

pytestmark = [pytest.mark.hostile, pytest.mark.timeout(PHASE_TIMEOUT_SECONDS)]


@pytest.mark.alone  # its p99 limit
def test_thousands_of_idle_connections(hostile_dataset: Dataset, tmp_path: Path) -> None:
    result = run(IDLE_CONNECTIONS, hostile_dataset, tmp_path)

    assert result.figures.get("idle_connections", 0) >= 1000, explain(result)
    assert result.failures == [], explain(result)


@pytest.mark.alone  # its p99 limit
def test_slow_readers_are_refused_with_retry_info(hostile_dataset: Dataset, tmp_path: Path) -> None:
    result = run(SLOW_READERS, hostile_dataset, tmp_path)

    assert result.figures.get("server_deaths") == 0, explain(result)
    assert result.failures == [], explain(result)


def test_stalled_exports_are_ended_by_the_stall_timeout(
    hostile_dataset: Dataset, tmp_path: Path
) -> None:
    result = run(STALLED_EXPORTS, hostile_dataset, tmp_path)

    assert result.failures == [], explain(result)


def test_one_caller_gets_only_its_share_of_exports(
    hostile_dataset: Dataset, tmp_path: Path
) -> None:
    result = run(ONE_CALLER_CAP, hostile_dataset, tmp_path)

    assert result.failures == [], explain(result)
