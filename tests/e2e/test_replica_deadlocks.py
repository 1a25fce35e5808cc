"""Two `feedback-server` replicas on one PostgreSQL database never deadlock each other.

Their group-commit batches lock the same rollup cells, key spans and votes at the same time; the
deadlocks are counted by PostgreSQL itself (pg_stat_database counts per database, so no other
test disturbs the figure, and a deadlock the servers retried away still counts), and every
acknowledged write must be stored exactly once. The scenario is `make reliability`'s "replicas".
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from reliability.databases import POSTGRESQL, Database
from reliability.replicas import replicas_under_mixed_writes
from reliability.results import PASS

pytestmark = pytest.mark.postgres

LOAD_SECONDS = 12.0
WRITERS_PER_REPLICA = 8


def test_replicas_under_mixed_writes_never_deadlock_and_store_every_acknowledged_write(
    own_database: str, tmp_path: Path
) -> None:
    result = asyncio.run(
        replicas_under_mixed_writes(
            Database(POSTGRESQL, own_database),
            tmp_path,
            seconds=LOAD_SECONDS,
            writers_per_replica=WRITERS_PER_REPLICA,
            seed=11,
        )
    )

    figures = result.figures
    print(f"{result.acknowledged} writes acknowledged in {result.seconds:.1f} s; {figures}")
    assert figures["deadlocks"] == 0
    assert "UNAVAILABLE" not in figures["failed_writes"]
    assert figures["failed_writes"] == {}
    assert set(figures["health"]) == {"SERVING"}
    assert result.missing == 0
    assert figures["stored_twice"] == 0
    assert figures["stored_not_acknowledged"] == 0
    assert result.acknowledged is not None
    assert result.acknowledged > 1000
    assert result.verdict == PASS, result.failures
