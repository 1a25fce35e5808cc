"""Ingest streams cut off halfway: the server lives, logs each once, stores nothing twice and
nothing it was not sent, and does not take a cut-off stream for a finished one."""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability.hostile.dataset import Dataset
from reliability.hostile.scenario import ABANDONED_INGESTS
from tests.hostile.conftest import PHASE_TIMEOUT_SECONDS, explain, run

pytestmark = [pytest.mark.hostile, pytest.mark.timeout(PHASE_TIMEOUT_SECONDS)]


def test_ingest_streams_cancelled_or_timed_out_halfway(
    hostile_dataset: Dataset, tmp_path: Path
) -> None:
    result = run(ABANDONED_INGESTS, hostile_dataset, tmp_path)

    assert result.figures.get("server_deaths") == 0, explain(result)
    assert result.figures.get("ingest_items_sent", 0) > 0, explain(result)
    assert result.failures == [], explain(result)
