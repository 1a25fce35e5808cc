"""Retention: records older than their kind's period are deleted in the background, with their
request ids and their share of every aggregate.

Aggregates go with the rows: GetStats describes what is stored, exactly as a full scan of the
tables would (a range older than the retention answers zero), rollups can always be rebuilt
from the rows, and no rollup cell keeps a user's or conversation's key past its rows. Age is the
time the kind's rollups and lists bucket by: feedback's create_time (a replaced vote's too),
an interaction's occur_time, an event's event_time.

Each server runs a sweep every `interval` seconds. A sweep deletes in batches of at most
`batch_rows` per table, each its own short transaction, paced (server.service.pacing) so it holds
SQLite's single write lock at most LOCK_SHARE of the time, in stretches of about 20 ms. On
PostgreSQL a batch claims its kind first (a transaction-scoped advisory lock): a replica that
finds the claim taken leaves that kind to the other one until its next sweep.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Protocol

from server.service.background import BackgroundTask
from server.service.pacing import Pace
from storage.errors import StorageUnavailable

log = logging.getLogger(__name__)

KINDS = ("interactions", "feedback", "events")
UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
MIN_PERIOD = timedelta(hours=1)
SWEEP_INTERVAL_SECONDS = 60.0
LOCK_SHARE = 0.15
"""Most of the time a sweep holds the write lock: at half, writes at c=16 fell to 0.48x of writes
alone (make bench-retention); nobody waits for a sweep."""
EXPIRE_BATCH_ROWS = 1000
"""Most rows a batch deletes per table (server.service.pacing sizes them)."""
_PERIOD = re.compile(r"(\d{1,6})([hdw])")


def retention_periods(text: str) -> dict[str, timedelta]:
    """Periods per kind from "feedback=400d,events=180d,interactions=90d" (h, d or w units);
    "" or "none" keeps everything. Raises ValueError naming what is wrong."""
    text = text.strip()
    if text.lower() in {"", "none"}:
        return {}
    periods: dict[str, timedelta] = {}
    for part in text.split(","):
        kind, _, period = part.strip().partition("=")
        kind = kind.strip().lower()
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}: use {', '.join(KINDS)}")
        if kind in periods:
            raise ValueError(f"{kind} is given twice")
        matched = _PERIOD.fullmatch(period.strip().lower())
        if matched is None:
            raise ValueError(f"{kind}: {period.strip()!r} is no period: write e.g. 90d, 12w, 36h")
        length = int(matched[1]) * UNITS[matched[2]]
        if length < MIN_PERIOD:
            raise ValueError(f"{kind}: a period must be at least 1h")
        periods[kind] = length
    return periods


def _rows(count: int | None) -> int:
    return count or 0


class ExpiringUnit(Protocol):
    """A write unit that can delete expired rows (storage.rows.repository.Rows.expire)."""

    def expire(self, kind: str, before: datetime, limit: int) -> int | None:
        """Delete up to `limit` rows of `kind` older than `before`; how many, or None when
        another transaction is expiring the kind."""
        ...


class ExpiringStorage(Protocol):
    """Write units for retention."""

    def write(self, work: Callable[[ExpiringUnit], int | None]) -> int | None:
        """Run `work` in one transaction, committed when it returns (rollups last)."""
        ...


class RetentionSweeper:
    """Deletes expired records in the background, kind by kind, batch by batch."""

    def __init__(
        self,
        storage: ExpiringStorage,
        executor: Executor,
        periods: Mapping[str, timedelta],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        interval_seconds: float = SWEEP_INTERVAL_SECONDS,
        batch_rows: int = EXPIRE_BATCH_ROWS,
    ) -> None:
        self._storage = storage
        self._executor = executor
        self._periods = dict(periods)
        self._clock = clock
        self._interval = interval_seconds
        self._batch_rows = batch_rows
        self._task = BackgroundTask(self._keep_sweeping, "retention")
        self.expired: dict[str, int] = dict.fromkeys(KINDS, 0)
        """Rows this server deleted per kind since it started."""

    def start(self) -> None:
        """Sweep now and every interval, until stop()."""
        if self._periods:
            self._task.start()

    async def stop(self) -> None:
        """Stop between two batches."""
        await self._task.stop()

    async def sweep(self) -> dict[str, int]:
        """Delete every record older than its kind's period, now; the rows deleted per kind."""
        deleted = dict.fromkeys(self._periods, 0)
        for kind, period in self._periods.items():
            before = self._clock() - period
            pace = Pace(self._batch_rows, share=LOCK_SHARE)
            while True:
                expire: Callable[[int], Awaitable[int | None]] = partial(self._expire, kind, before)
                count = await pace.run(expire, _rows)
                if not count:  # None: another replica holds the kind
                    break
                deleted[kind] += count
                self.expired[kind] += count
        if any(deleted.values()):
            log.info("retention: expired %s", deleted, extra={"expired": deleted})
        return deleted

    async def _expire(self, kind: str, before: datetime, rows: int) -> int | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._storage.write, lambda unit: unit.expire(kind, before, rows)
        )

    async def _keep_sweeping(self) -> None:
        while True:
            try:
                await self.sweep()
            except StorageUnavailable as error:
                log.warning("retention: the database is unavailable; next sweep later: %s", error)
            except Exception:
                log.exception("retention: the sweep failed; next sweep later")
            await asyncio.sleep(self._interval)
