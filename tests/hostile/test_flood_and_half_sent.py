"""Thousands of writes in flight at once, writes as costly to redact as text can be, and messages
that never finish arriving."""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability.hostile.dataset import Dataset
from reliability.hostile.plan import CI_PLAN
from reliability.hostile.scenario import COSTLY_TEXTS, FLOOD, HALF_SENT
from tests.hostile.conftest import PHASE_TIMEOUT_SECONDS, explain, run

pytestmark = [pytest.mark.hostile, pytest.mark.timeout(PHASE_TIMEOUT_SECONDS)]


def test_a_flood_of_writes_ends_ok_or_resource_exhausted_and_loses_nothing(
    hostile_dataset: Dataset, tmp_path: Path
) -> None:
    result = run(FLOOD, hostile_dataset, tmp_path)

    assert result.acknowledged, explain(result)
    assert result.missing == 0, explain(result)
    assert result.failures == [], explain(result)


def test_half_sent_and_header_only_streams_are_answered(
    hostile_dataset: Dataset, tmp_path: Path
) -> None:
    result = run(HALF_SENT, hostile_dataset, tmp_path)

    assert len(result.figures.get("rounds", [])) == 3, explain(result)
    assert result.failures == [], explain(result)


@pytest.mark.alone  # its p99 limit
def test_writes_as_costly_to_redact_as_text_can_be_leave_reads_answered(
    hostile_dataset: Dataset, tmp_path: Path
) -> None:
    result = run(COSTLY_TEXTS, hostile_dataset, tmp_path)

    assert result.acknowledged == CI_PLAN.costly_writes, explain(result)
    assert result.missing == 0, explain(result)
    assert result.failures == [], explain(result)
