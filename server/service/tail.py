"""The live tail: one reader per server follows the change log and hands every new record to the
watchers whose filter accepts it.

Watchers never read the database while they are live: the tail reads each new entry and its
rows once, encodes each record once (shared by every watcher that takes it) and appends it to
the watchers' buffers without ever waiting on them. A watcher whose buffer would pass its
limit is dropped from the fan-out and told so (its stream then ends with RESOURCE_EXHAUSTED), so
a slow client costs its own buffer and never slows the tail or the writers.

The tail wakes on this process's commits (Storage.on_changes), on other replicas' NOTIFY
(Storage.listen_for_changes) and, as a fallback, every poll interval. It only reads while some
watch is running; otherwise it notes that its head is stale and re-reads it when one starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from typing import Any

from server.service.background import BackgroundTask
from server.service.errors import Unavailable
from server.service.ports import ChangeFeed, Closeable, WatchUnit
from server.service.watch_matching import Match, WatcherIndex
from server.service.watch_positions import KINDS, Position, Positions
from storage.errors import StorageUnavailable
from storage.records import ChangeEntry

log = logging.getLogger(__name__)

Encode = Callable[[str, str, Any], bytes]
"""(kind, position token, list entry) -> the record as the watch responses carry it."""
Rows = dict[str, dict[int, Any]]
"""Per kind, the entries read for a run of change log entries, by id."""

POLL_SECONDS = 1.0
"""How long the tail waits for a wake-up before it looks at the log anyway."""
PASS_GAP_SECONDS = 0.1
"""The least time between two passes: under a stream of commits a pass takes many at once, so
each watcher gets one message per pass rather than one per commit, for at most this much delay
(a commit after a quiet spell is read at once). At 0.05 s, 2,000 watchers cost writes at c=64
0.76x, at 0.1 s 0.82x (make bench-watch)."""
READ_ENTRIES = 256
"""Change log entries read at once (each holds one transaction's rows of one kind)."""


class Watcher:
    """One live watch in the fan-out: its filter, the records waiting to be sent, and whether
    its buffer overflowed."""

    __slots__ = (
        "floor",
        "kind",
        "limit_bytes",
        "match",
        "overflowed",
        "pending",
        "pending_bytes",
        "ready",
    )

    def __init__(self, kind: str, match: Match, floor: Position, limit_bytes: int) -> None:
        self.kind = kind
        self.match = match
        self.limit_bytes = limit_bytes
        self.floor = floor
        """The newest position taken: offers at or below it are ignored (a watch that starts
        from a position this tail has not reached yet)."""
        self.pending: deque[tuple[Position, bytes]] = deque()
        self.pending_bytes = 0
        self.ready = asyncio.Event()
        self.overflowed = False

    def offer(self, position: Position, frame: bytes) -> bool:
        """Take a record; False when the buffer overflowed (it is then emptied for good)."""
        if position <= self.floor:
            return not self.overflowed
        self.floor = position
        self.pending.append((position, frame))
        self.pending_bytes += len(frame)
        self.ready.set()
        if self.pending_bytes > self.limit_bytes:
            self.overflowed = True
            self.pending.clear()
            self.pending_bytes = 0
            return False
        return True

    def take(self, max_records: int, max_bytes: int) -> list[tuple[Position, bytes]]:
        """The oldest records waiting: at most `max_records`, of at most `max_bytes` in all
        unless the first alone is larger."""
        taken: list[tuple[Position, bytes]] = []
        size = 0
        pending = self.pending
        while pending and len(taken) < max_records:
            frame = pending[0][1]
            if taken and size + len(frame) > max_bytes:
                break
            taken.append(pending.popleft())
            size += len(frame)
        self.pending_bytes -= size
        return taken


class Tail:
    """Follows the change log for every watch of this server (see the module docstring)."""

    def __init__(
        self,
        feed: ChangeFeed,
        executor: Executor,
        encode: Encode,
        *,
        poll_seconds: float = POLL_SECONDS,
        read_entries: int = READ_ENTRIES,
    ) -> None:
        self._feed = feed
        self._executor = executor
        self.encode = encode
        """How a record is written for watch responses (the servicer's mapping)."""
        self._poll_seconds = poll_seconds
        self._read_entries = read_entries
        self._indexes: dict[str, WatcherIndex[Watcher]] = {
            kind: WatcherIndex(kind) for kind in KINDS
        }
        self._watchers: set[Watcher] = set()
        self.head: int | None = None
        """The newest change log number whose records went to every registered watcher."""
        self.epoch = ""
        self._interest: dict[str, int] = dict.fromkeys(KINDS, 0)
        """Watches running (live or catching up) per kind: while any does, the tail keeps its
        head, and it reads the rows of every kind some watch runs for, so a watch that joins
        the fan-out while the tail is reading gets the records of that read too."""
        self.stopping = False
        self._stale = True
        self._wakeup: asyncio.Event | None = None
        self._passes = 0
        self._last_pass = 0.0
        self._pass_done: asyncio.Future[None] | None = None
        self._task = BackgroundTask(self._run, "live-tail")
        self._listener: Closeable | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- lifecycle ----

    def start(self) -> None:
        """Start following on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._feed.on_changes(lambda _seq: self._wake_threadsafe())
        self._listener = self._feed.listen_for_changes(self._wake_threadsafe)
        self._task.start()

    async def stop(self) -> None:
        """End every watch (they answer UNAVAILABLE with their position) and stop following."""
        self.stopping = True
        for watcher in list(self._watchers):
            watcher.ready.set()
        await self._task.stop()
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await asyncio.get_running_loop().run_in_executor(None, listener.close)

    def begin(self, kind: str) -> None:
        """A watch of `kind` starts (call end() when it ends, however it ends)."""
        self._interest[kind] += 1

    def end(self, kind: str) -> None:
        """A watch that began has ended."""
        self._interest[kind] -= 1

    @property
    def interest(self) -> int:
        """Watches running, live or catching up."""
        return sum(self._interest.values())

    def watches_by_kind(self) -> dict[str, int]:
        """Watches running per kind; safe to read from another thread (metrics): the dict
        never changes size."""
        return dict(self._interest)

    @property
    def watchers(self) -> int:
        """Live watchers registered."""
        return len(self._watchers)

    # ---- watchers ----

    def register(self, watcher: Watcher) -> None:
        """Send `watcher` every record committed after the current head."""
        self._indexes[watcher.kind].add(watcher, watcher.match)
        self._watchers.add(watcher)
        self.wake()

    def unregister(self, watcher: Watcher) -> None:
        """Stop sending to `watcher` (a no-op once it was dropped)."""
        if watcher in self._watchers:
            self._watchers.discard(watcher)
            self._indexes[watcher.kind].remove(watcher, watcher.match)

    async def ensure_current(self) -> int:
        """The head, once the tail has read the log as far as the database had it when this was
        called if its head was stale; raises Unavailable when the database cannot be read."""
        if self.head is None or self._stale:
            await self._next_pass()
        assert self.head is not None
        return self.head

    async def _next_pass(self) -> None:
        """Wait for a pass of the loop that starts after now."""
        target = self._passes + 2 if self._pass_done is not None else self._passes + 1
        self.wake()
        while self._passes < target:
            done = self._pass_done
            if done is None:
                done = self._pass_done = asyncio.get_running_loop().create_future()
            await asyncio.shield(done)

    def wake(self) -> None:
        """Look at the log now (on the loop's thread)."""
        if self._wakeup is not None:
            self._wakeup.set()

    def _wake_threadsafe(self) -> None:
        # Called on writer and listener threads: only a loop call when someone is watching.
        if self.interest and self._loop is not None:
            self._loop.call_soon_threadsafe(self.wake)

    # ---- the loop ----

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._poll_seconds)
            gap = self._last_pass + PASS_GAP_SECONDS - loop.time()
            if gap > 0:
                await asyncio.sleep(gap)
            self._wakeup.clear()
            if not self.interest and self._pass_done is None:
                self._stale = True
                continue
            done, self._pass_done = self._pass_done, None
            self._last_pass = loop.time()
            try:
                await self._pass()
            except Unavailable as error:
                log.warning("the live tail cannot read the change log", extra={"error": str(error)})
                if done is not None:
                    done.set_exception(error)
                    done.exception()  # retrieved by whoever awaits it, or by nobody
                    self._passes += 1
                continue
            self._passes += 1
            if done is not None:
                done.set_result(None)

    async def _pass(self) -> None:
        """Read the log from the head to its end and hand out every new record."""
        if self.head is None or self._stale:
            state = await self.read(lambda unit: unit.change_state())
            self.head, self.epoch, self._stale = state.head, state.epoch, False
        while True:
            wanted = [kind for kind, running in self._interest.items() if running]
            entries, rows, more = await self.read(
                partial(read_after, seq=self.head, kinds=wanted, limit=self._read_entries)
            )
            if entries:
                self._dispatch(entries, rows)
                self.head = entries[-1].seq
            if not more:
                return

    def _dispatch(self, entries: list[ChangeEntry], rows: Rows) -> None:
        encode = self.encode
        for entry in entries:
            index = self._indexes[entry.kind]
            if not index.size:
                continue
            found = rows.get(entry.kind, {})
            positions = Positions(entry.kind, self.epoch)
            for row_id in entry.ids:
                row = found.get(row_id)
                if row is None:
                    continue  # erased or expired since
                takers = list(index.accepting(row))
                if not takers:
                    continue
                position = Position(entry.seq, row_id)
                frame = encode(entry.kind, positions.encode(position), row)
                for watcher in takers:
                    if not watcher.offer(position, frame):
                        self.unregister(watcher)

    async def read(self, work: Callable[[WatchUnit], Any]) -> Any:
        """Run a read of the change log on the storage executor; raises Unavailable."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._feed.read, work)
        except StorageUnavailable as error:
            raise Unavailable("the database is unavailable; retry later") from error


def read_after(
    unit: WatchUnit, seq: int, kinds: list[str], limit: int, through: int = 2**63 - 1
) -> tuple[list[ChangeEntry], Rows, bool]:
    """The whole transactions among the next `limit` change log entries after `seq` (up to
    `through`), the rows of `kinds` they added, and whether more entries may follow; in one
    snapshot."""
    entries = unit.changes_after(seq, through, limit)
    more = len(entries) == limit
    if more and entries[0].seq != entries[-1].seq:
        # The last transaction's entries may be cut short by the limit: leave it for next time.
        last = entries[-1].seq
        entries = [entry for entry in entries if entry.seq != last]
    rows: Rows = {}
    for kind in kinds:
        ids = sorted(row_id for entry in entries if entry.kind == kind for row_id in entry.ids)
        if ids:
            rows[kind] = {row.id: row for row in unit.entries_by_ids(kind, ids)}
    return entries, rows, more
