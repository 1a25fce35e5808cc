"""Pacing of background deletes (erasures, retention) so that writes keep flowing beside them.

A delete transaction holds SQLite's single write lock, and on PostgreSQL the hot rollup rows
every write updates, for as long as it runs: measured before pacing, one 1500-row erasure
batch after another left a concurrent writer 1 write a second on SQLite (its busy handler never
found the lock free) and a quarter of its rate on PostgreSQL. So each batch is sized to hold
them about TARGET_SECONDS (or twice the quickest batch yet, where a transaction's fixed cost is
higher), from the rate the previous batches deleted at, and is followed by a rest, so that the
deletes hold the lock at most a given share of the time (erasures half, since someone waits for
them; retention, which nobody waits for, less), in short stretches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

TARGET_SECONDS = 0.02
"""How long one delete transaction should hold the write lock."""
MIN_ROWS = 100
"""Fewest rows a batch deletes: below it a transaction's fixed cost is most of it."""
MAX_ROWS = 1000
FIRST_ROWS = 100


class Pace:
    """Batch sizes and rests for one run of background deletes."""

    def __init__(self, max_rows: int = MAX_ROWS, *, share: float = 0.5) -> None:
        """Batches of at most `max_rows`, holding the lock at most `share` of the time."""
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.rows = min(FIRST_ROWS, max_rows)
        """Rows the next batch should delete."""
        self._max_rows = max_rows
        self._rest_per_second = (1 - share) / share
        self._rest = 0.0
        self._quickest = float("inf")

    async def run(self, batch: Callable[[int], Awaitable[T]], deleted: Callable[[T], int]) -> T:
        """Rest after the previous batch as its share says, run `batch` with the current size, and
        adjust the size to what it deleted and how fast. (Resting first, its result is there
        as soon as it committed.)"""
        await asyncio.sleep(self._rest)
        started = time.monotonic()
        result = await batch(self.rows)
        took = time.monotonic() - started
        rows = deleted(result)
        self._quickest = min(self._quickest, took)
        if rows and took > 0:
            # A transaction's fixed cost (some 30 ms on PostgreSQL: a score of round trips and
            # the commit) must not make every batch the smallest: aim at twice the quickest seen.
            target = max(TARGET_SECONDS, 2 * self._quickest)
            wanted = int(rows / took * target)  # at most halved or doubled at a time
            wanted = max(self.rows // 2, min(self.rows * 2, wanted))
            self.rows = max(min(MIN_ROWS, self._max_rows), min(self._max_rows, wanted))
        self._rest = took * self._rest_per_second
        return result
