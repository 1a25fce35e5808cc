"""PostgreSQL stopped and restarted under load, on the suite's own cluster.

During the outage every failed write must say UNAVAILABLE (retryable), no write answered OK may
be missing afterwards, and the service must recover by itself once PostgreSQL is back.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

from reliability.databases import create_postgres_database
from reliability.health_watch import SERVING, HealthWatch
from reliability.postgres_instance import PostgresInstance
from reliability.results import ScenarioResult
from reliability.server_process import ServerProcess
from reliability.write_load import WriteLoad

OUTAGE = "PostgreSQL stop/start"
RECOVERY_TIMEOUT_SECONDS = 30.0
LOAD_TIMEOUT_SECONDS = 180.0
WRITES_AFTER_RECOVERY = 500
"""Acknowledged writes wanted after recovery, to show the service is really back."""
RETRYABLE = frozenset({"UNAVAILABLE"})


async def postgres_outage(
    instance: PostgresInstance,
    workdir: Path,
    *,
    acknowledged_before: int,
    outage_seconds: float,
    stop_mode: str = "fast",
    concurrency: int = 64,
) -> ScenarioResult:
    """Stop `instance` under load for `outage_seconds`, start it again, measure the recovery."""
    result = ScenarioResult(OUTAGE, "postgresql")
    started = time.monotonic()
    prefix = f"outage-{secrets.token_hex(3)}"
    database = create_postgres_database(instance.server_url, "outage")
    server = ServerProcess(database.url, workdir / f"{prefix}.log")
    result.figures["stop_mode"] = stop_mode
    try:
        server.start()
        load = WriteLoad(server.address, prefix=prefix, concurrency=concurrency)
        health = HealthWatch(server.address)
        load.start()
        health.start()
        try:
            await load.wait_acknowledged(acknowledged_before, LOAD_TIMEOUT_SECONDS)
            outage_began = time.monotonic()
            await asyncio.to_thread(instance.stop, stop_mode)
            await asyncio.sleep(outage_seconds)
            await asyncio.to_thread(instance.start)
            postgres_back = await asyncio.to_thread(instance.wait_accepting)
            recovered = await _wait_recovery(load, health, postgres_back)
            await load.wait_acknowledged(
                len(load.log.acknowledged) + WRITES_AFTER_RECOVERY, RECOVERY_TIMEOUT_SECONDS
            )
        finally:
            log = await load.stop()
            await health.stop()
        first_write = log.first_acknowledged_after(postgres_back)
        first_serving = health.first_after(postgres_back, SERVING)
        outage_end = first_write if first_write is not None else time.monotonic()
        failed = log.failures_between(outage_began, outage_end)
        wrong_codes = {code: n for code, n in failed.items() if code not in RETRYABLE}
        result.figures["outage_seconds"] = round(postgres_back - outage_began, 2)
        result.figures["writes_failed_during_outage"] = dict(failed)
        result.figures["health_during_outage"] = dict(
            health.statuses_between(outage_began, postgres_back)
        )
        if set(result.figures["health_during_outage"]) != {"NOT_SERVING"}:
            result.notes.append(
                "health during the outage was "
                f"{result.figures['health_during_outage']}, expected only NOT_SERVING"
            )
        result.figures["recovery_write_seconds"] = _since(postgres_back, first_write)
        result.figures["recovery_health_seconds"] = _since(postgres_back, first_serving)
        result.figures["exit_code"] = server.stop()
        result.check(
            recovered, f"no write succeeded {RECOVERY_TIMEOUT_SECONDS:.0f} s after restart"
        )
        result.check(
            not wrong_codes, f"writes failed during the outage with non-retryable {wrong_codes}"
        )
        stored = database.values_with_prefix("interactions", "message_id", f"{prefix}-w")
        acknowledged = set(log.acknowledged)
        missing = acknowledged - stored.keys()
        result.acknowledged = len(acknowledged)
        result.missing = len(missing)
        result.figures["stored_not_acknowledged"] = len(stored.keys() - acknowledged)
        result.figures["codes"] = dict(log.codes)
        if missing:
            result.figures["missing_examples"] = sorted(missing)[:5]
        result.check(not missing, f"{len(missing)} acknowledged writes are not in the database")
    finally:
        server.stop()
        result.seconds = time.monotonic() - started
    return result


async def _wait_recovery(load: WriteLoad, health: HealthWatch, postgres_back: float) -> bool:
    """Wait until a write succeeded after `postgres_back` (and health said SERVING), or time out."""
    deadline = postgres_back + RECOVERY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        written = load.log.first_acknowledged_after(postgres_back) is not None
        if written and health.first_after(postgres_back, SERVING) is not None:
            return True
        await asyncio.sleep(0.02)
    return load.log.first_acknowledged_after(postgres_back) is not None


def _since(start: float, moment: float | None) -> float | None:
    return None if moment is None else round(moment - start, 2)
