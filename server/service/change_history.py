"""Keeps the change log to the watch history: entries older than it are compacted in the
background, so the log's size follows the write rate, not the age of the database.

Any replica may compact; they take turns on the horizon rows (storage.rows.changes), and a
watch that asks for a position older than the horizon is told so (OUT_OF_RANGE).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta

from server.service.background import BackgroundTask
from server.service.ports import ChangeFeed
from storage.errors import StorageUnavailable

log = logging.getLogger(__name__)

COMPACT_EVERY_SECONDS = 60.0
COMPACT_BATCH = 5000
"""Entries removed per transaction: each is a few dozen bytes, so a batch is quick."""


class ChangeHistory:
    """Compacts entries older than `history` every COMPACT_EVERY_SECONDS."""

    def __init__(self, feed: ChangeFeed, executor: Executor, history: timedelta) -> None:
        self._feed = feed
        self._executor = executor
        self._history = history
        self._task = BackgroundTask(self._run, "change-history")
        self.compacted = 0
        """Entries this server removed."""

    def start(self) -> None:
        """Start compacting on the running loop."""
        self._task.start()

    async def stop(self) -> None:
        """Stop compacting (between two batches)."""
        await self._task.stop()

    async def compact(self, older_than: timedelta | None = None) -> int:
        """Remove every entry older than the history (or `older_than`) now; how many."""
        loop = asyncio.get_running_loop()
        before = datetime.now(UTC) - (self._history if older_than is None else older_than)
        removed = 0
        while True:
            batch = await loop.run_in_executor(
                self._executor, self._feed.compact_changes, before, COMPACT_BATCH
            )
            removed += batch
            if batch < COMPACT_BATCH:
                break
        self.compacted += removed
        return removed

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(COMPACT_EVERY_SECONDS)
            try:
                await self.compact()
            except StorageUnavailable as error:
                log.warning("cannot compact the change log", extra={"error": str(error)})
