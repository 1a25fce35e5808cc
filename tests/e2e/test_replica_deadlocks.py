"""Two `feedback-server` replicas on one PostgreSQL database never deadlock each other.

Their group-commit batches lock the same rollup cells, key spans and votes at the same time; the
deadlocks are counted by PostgreSQL itself (pg_stat_database counts per database, so no other
test disturbs the figure), and every acknowledged write must be stored exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from reliability.health_watch import HealthWatch
from reliability.replica_load import MixedLoad, MixedLog, postgres_deadlocks, stored_writes
from reliability.server_process import ServerProcess

pytestmark = pytest.mark.postgres

REPLICAS = 2
WRITERS_PER_REPLICA = 8
LOAD_SECONDS = 12.0


@pytest.fixture
def replicas(own_database: str, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """REPLICAS started servers on one fresh PostgreSQL database of this test alone."""
    servers = [
        ServerProcess(own_database, tmp_path / f"replica-{number}.log")
        for number in range(REPLICAS)
    ]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


async def _load(addresses: list[str]) -> tuple[MixedLog, Counter[str]]:
    """The mixed load on every replica, with each replica's health polled throughout."""
    watches = [HealthWatch(address) for address in addresses]
    for watch in watches:
        watch.start()
    try:
        log = await MixedLoad(addresses, writers_per_address=WRITERS_PER_REPLICA, seed=11).run(
            LOAD_SECONDS
        )
    finally:
        for watch in watches:
            await watch.stop()
    return log, Counter(answer.status for watch in watches for answer in watch.answers)


def test_replicas_under_mixed_writes_never_deadlock_and_store_every_acknowledged_write(
    replicas: list[ServerProcess], own_database: str
) -> None:
    deadlocks_before = postgres_deadlocks(own_database)
    started = time.monotonic()
    log, health = asyncio.run(_load([server.address for server in replicas]))
    load_seconds = time.monotonic() - started
    exit_codes = [server.stop() for server in replicas]
    deadlocks = postgres_deadlocks(own_database, settle_seconds=10) - deadlocks_before
    stored = stored_writes(own_database)

    print(
        f"{len(log.interactions)} interactions and {len(log.feedback)} ratings acknowledged"
        f" in {log.calls} calls over {load_seconds:.1f} s; deadlocks {deadlocks};"
        f" failed writes {dict(log.failures)}; health answers {dict(health)};"
        f" raw rows vs all-time rollups {stored.rollup_totals}"
    )
    assert deadlocks == 0
    assert log.failures["UNAVAILABLE"] == 0
    assert log.failures == Counter()
    assert set(health) == {"SERVING"}
    # Stored exactly once each, and nothing stored that was not acknowledged.
    assert stored.interactions == Counter(dict.fromkeys(log.interactions, 1))
    assert stored.feedback == Counter(dict.fromkeys(log.feedback, 1))
    assert all(rows == counted for rows, counted in stored.rollup_totals.values())
    assert len(log.interactions) > 500
    assert len(log.feedback) > 500
    assert exit_codes == [0] * REPLICAS
