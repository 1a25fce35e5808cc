"""DatabaseHealth's rules with a probe we control: down at once, up only when the probe passes."""

from __future__ import annotations

import asyncio
import threading

from server.service.database_health import DatabaseHealth
from storage.errors import StorageUnavailable


class Database:
    """A probe target that is up or down as the test says."""

    def __init__(self) -> None:
        self.up = True
        self.probes = 0

    def probe(self) -> None:
        self.probes += 1
        if not self.up:
            raise StorageUnavailable("down")


async def _watched(database: Database) -> tuple[DatabaseHealth, list[bool]]:
    changes: list[bool] = []

    async def record(up: bool) -> None:
        changes.append(up)

    health = DatabaseHealth(database.probe, record, down_seconds=0.05, up_seconds=0.2)
    health.start()
    return health, changes


def test_a_failure_turns_it_down_and_the_probe_brings_it_back() -> None:
    async def scenario() -> list[bool]:
        database = Database()
        health, changes = await _watched(database)
        database.up = False
        threading.Thread(target=health.report_failure).start()  # from a writer thread
        await asyncio.sleep(0.2)
        assert not health.up
        database.up = True
        await asyncio.sleep(0.2)
        await health.stop()
        return changes

    assert asyncio.run(scenario()) == [False, True]


def test_failures_reported_while_down_do_not_delay_the_probe() -> None:
    async def scenario() -> int:
        database = Database()
        database.up = False
        health, _ = await _watched(database)
        # Callers keep failing (and reporting) faster than the probe interval of 0.05 s.
        for _ in range(15):
            health.report_failure()
            await asyncio.sleep(0.02)
        await health.stop()
        return database.probes

    assert asyncio.run(scenario()) >= 3


def test_an_idle_outage_is_found_by_the_periodic_probe() -> None:
    async def scenario() -> list[bool]:
        database = Database()
        health, changes = await _watched(database)
        database.up = False
        await asyncio.sleep(0.35)
        await health.stop()
        return changes

    assert asyncio.run(scenario()) == [False]
