"""Replicas on one PostgreSQL database under mixed writes: PostgreSQL must count no deadlock.

Deadlocks are counted by PostgreSQL itself (pg_stat_database, per database), so a deadlock the
servers retried away still counts; every acknowledged write must be stored exactly once, no write
may fail, and health must stay SERVING on every replica.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from pathlib import Path

from reliability.databases import Database
from reliability.health_watch import HealthWatch
from reliability.replica_load import MixedLoad, postgres_deadlocks, stored_writes
from reliability.results import ScenarioResult
from reliability.server_process import ServerProcess

REPLICAS = "replicas, no deadlock"
SETTLE_SECONDS = 10.0
"""How long to wait for the servers' sessions to end (and report their counts) after the load."""


async def replicas_under_mixed_writes(
    database: Database,
    workdir: Path,
    *,
    seconds: float,
    writers_per_replica: int,
    replicas: int = 2,
    seed: int | None = None,
) -> ScenarioResult:
    """`replicas` servers on one fresh PostgreSQL database, mixed writes to all for `seconds`
    (`seed` picks the writes; random by default)."""
    result = ScenarioResult(REPLICAS, database.kind)
    started = time.monotonic()
    prefix = f"replicas-{secrets.token_hex(3)}"
    servers = [
        ServerProcess(database.url, workdir / f"{prefix}-{number}.log")
        for number in range(replicas)
    ]
    watches: list[HealthWatch] = []
    try:
        for server in servers:
            server.start()
        deadlocks_before = postgres_deadlocks(database.url)
        watches = [HealthWatch(server.address) for server in servers]
        for watch in watches:
            watch.start()
        try:
            load = MixedLoad(
                [server.address for server in servers],
                writers_per_address=writers_per_replica,
                seed=secrets.randbits(32) if seed is None else seed,
            )
            log = await load.run(seconds)
        finally:
            for watch in watches:
                await watch.stop()
    finally:
        exit_codes = [server.stop() for server in servers]
    deadlocks = postgres_deadlocks(database.url, settle_seconds=SETTLE_SECONDS) - deadlocks_before
    stored = stored_writes(database.url)
    health = Counter(answer.status for watch in watches for answer in watch.answers)

    acknowledged = len(log.interactions) + len(log.feedback)
    missing = len(log.interactions - set(stored.interactions)) + len(
        log.feedback - set(stored.feedback)
    )
    stored_twice = sum(1 for count in stored.interactions.values() if count > 1) + sum(
        1 for count in stored.feedback.values() if count > 1
    )
    not_acknowledged = len(set(stored.interactions) - log.interactions) + len(
        set(stored.feedback) - log.feedback
    )
    result.acknowledged = acknowledged
    result.missing = missing
    result.figures.update(
        {
            "replicas": replicas,
            "calls": log.calls,
            "deadlocks": deadlocks,
            "failed_writes": dict(log.failures),
            "health": dict(health),
            "stored_twice": stored_twice,
            "stored_not_acknowledged": not_acknowledged,
            "rollup_totals": stored.rollup_totals,
            "exit_codes": exit_codes,
            "summary": f"{replicas} replicas, {log.calls} calls: {deadlocks} deadlocks, failed "
            + (", ".join(f"{n} {code}" for code, n in log.failures.items()) or "none")
            + ", health "
            + ", ".join(f"{n} {status}" for status, n in health.items()),
        }
    )
    result.check(deadlocks == 0, f"PostgreSQL detected {deadlocks} deadlocks")
    result.check(not log.failures, f"writes failed: {dict(log.failures)}")
    result.check(set(health) == {"SERVING"}, f"health was not always SERVING: {dict(health)}")
    result.check(missing == 0, f"{missing} acknowledged writes are not stored")
    result.check(stored_twice == 0, f"{stored_twice} request ids are stored more than once")
    result.check(not_acknowledged == 0, f"{not_acknowledged} stored writes were never acknowledged")
    result.check(
        all(rows == counted for rows, counted in stored.rollup_totals.values()),
        f"the all-time rollups disagree with the raw rows: {stored.rollup_totals}",
    )
    result.check(exit_codes == [0] * replicas, f"servers exited with {exit_codes}")
    result.check(acknowledged > 0, "no write was acknowledged")
    result.seconds = time.monotonic() - started
    return result
