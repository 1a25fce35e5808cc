"""Group commit: concurrent writes share one transaction, and each caller hears back after it.

One writer thread takes whatever jobs are queued (up to `max_batch` items), applies them in a
single transaction and commits once, so a burst of N calls costs one commit (one fsync on SQLite)
instead of N. A job is answered only after its batch commits. A batch that fails as a whole (a
uniqueness race, say) is retried one item per transaction, so a bad row fails alone; one that
found the database locked by another writer (SQLite's busy timeout, a PostgreSQL deadlock) is run
again whole, from scratch. The queue is bounded: when it is full, new writes are refused with a
retry delay instead of piling up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.service.errors import ResourceExhausted, ServiceError, Unavailable
from server.service.histogram import Histogram
from server.service.ports import BatchRepository, RecordStorage
from storage.errors import Conflict, StorageError, StorageUnavailable, TransactionRolledBack

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 2000
DEFAULT_MAX_PENDING = 20_000
DEFAULT_LINGER_SECONDS = 0.002
DEFAULT_LINGER_ITEMS = 64
WRITE_QUEUE_FULL = "WRITE_QUEUE_FULL"
"""ResourceExhausted.reason when the write queue cannot take a call's items."""
SHUTTING_DOWN = "SHUTTING_DOWN"
"""Why a closing queue refuses writes (UNAVAILABLE), as its refusals count it."""
REFUSAL_REASONS = (WRITE_QUEUE_FULL, SHUTTING_DOWN)
BATCH_ITEM_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
"""Buckets of the items per committed batch (DEFAULT_MAX_BATCH is the largest batch)."""
COMMIT_SECONDS_BOUNDS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)
"""Buckets of the seconds a batch takes to commit, from a SQLite commit without fsync to a busy
retry that lasts DEFAULT_BUSY_RETRY_SECONDS."""
DEFAULT_BUSY_RETRY_SECONDS = 10.0
"""How long a batch keeps retrying when other processes on the same SQLite file hold its write
lock past the busy timeout, or when PostgreSQL rolls it back to break a deadlock with another
replica; a caller should see "database is locked" only after that, and then as UNAVAILABLE.
Within the client's default 10 s deadline."""


@dataclass(slots=True, eq=False)
class Job:
    """Items of one kind from one call, waiting for their batch; outcomes line up with items.

    Each outcome is the stored record or the ServiceError that rejected that item alone. The
    future gets the outcome list once the batch has committed, or an exception when none of the
    items could be written (database down).
    """

    kind: str
    items: list[Any]
    future: asyncio.Future[list[Any]]
    on_conflict: Callable[[Any], ServiceError] | None = None
    """The error for an item that alone still breaks a uniqueness rule."""
    imported: bool = False
    """Items of another system's history, with their own times (FeedbackService.write_many)."""
    outcomes: list[Any] = field(default_factory=list)
    error: BaseException | None = None

    def reset(self) -> None:
        """Forget the outcomes of a rolled-back attempt."""
        self.outcomes = [None] * len(self.items)
        self.error = None

    def settle(self) -> None:
        """Hand the outcome to the waiting caller (on the event loop's thread)."""
        if self.future.done():  # the caller went away (deadline, cancellation)
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.outcomes)


ApplyBatch = Callable[..., None]
"""apply_batch(repository, batch=jobs): applies jobs inside one transaction, filling outcomes."""


class GroupCommitter:
    """A bounded write queue drained by one thread that commits many jobs per transaction."""

    def __init__(
        self,
        storage: RecordStorage,
        apply_batch: ApplyBatch,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_pending: int = DEFAULT_MAX_PENDING,
        linger_seconds: float = DEFAULT_LINGER_SECONDS,
        linger_items: int = DEFAULT_LINGER_ITEMS,
        busy_retry_seconds: float = DEFAULT_BUSY_RETRY_SECONDS,
    ) -> None:
        self._storage = storage
        self._apply_batch = apply_batch
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._linger_seconds = linger_seconds
        self._linger_items = linger_items
        self._busy_retry_seconds = busy_retry_seconds
        self._queue: deque[Job] = deque()
        self._pending_items = 0
        self._condition = threading.Condition()
        self._closing = False
        self._items_per_second = 1000.0  # refined by every commit; sizes the retry delay
        # What metrics read at scrape time (server.metrics): the batches and their commit
        # times are counted by the writer thread alone, refusals under the condition's lock.
        self.batch_items = Histogram(BATCH_ITEM_BOUNDS)
        """Items per committed batch."""
        self.commit_seconds = Histogram(COMMIT_SECONDS_BOUNDS)
        """Seconds per batch, from its first transaction to its last commit (retries included)."""
        self.refusals = dict.fromkeys(REFUSAL_REASONS, 0)
        """Calls whose writes the queue refused, by reason."""
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def submit(self, jobs: Sequence[Job]) -> None:
        """Queue all jobs or none: raises ResourceExhausted (Unavailable when closing) at once."""
        for job in jobs:
            job.reset()
        with self._condition:
            if self._closing:
                self.refusals[SHUTTING_DOWN] += 1
                raise Unavailable("the server is shutting down; retry on another replica")
            waiting = self._pending_items + sum(len(job.items) for job in jobs)
            if waiting > self._max_pending and self._pending_items > 0:
                self.refusals[WRITE_QUEUE_FULL] += 1
                delay = min(5.0, max(0.05, waiting / self._items_per_second))
                raise ResourceExhausted(
                    f"the write queue is full ({self._pending_items} writes waiting); retry later",
                    delay,
                    reason=WRITE_QUEUE_FULL,
                )
            self._queue.extend(jobs)
            self._pending_items = waiting
            self._condition.notify()

    async def write(self, job: Job) -> list[Any]:
        """Queue a job and wait until its batch has committed; returns its outcomes."""
        self.submit([job])
        return await job.future

    def close(self) -> None:
        """Refuse new jobs, commit every queued one, and stop the writer thread."""
        with self._condition:
            self._closing = True
            self._condition.notify()
        self._thread.join()

    @property
    def pending(self) -> int:
        """Items queued and not yet taken by the writer."""
        return self._pending_items

    @property
    def limit(self) -> int:
        """Items that may wait; a call that would queue more is refused (WRITE_QUEUE_FULL)."""
        return self._max_pending

    def _take(self) -> list[Job] | None:
        """The next batch: whole jobs, up to max_batch items (at least one job)."""
        with self._condition:
            idle = not self._queue
            while not self._queue and not self._closing:
                self._condition.wait()
            if not self._queue:
                return None  # closing, and everything queued has been committed
            if not idle:
                self._linger()
            batch = [self._queue.popleft()]
            items = len(batch[0].items)
            while self._queue and items + len(self._queue[0].items) <= self._max_batch:
                job = self._queue.popleft()
                items += len(job.items)
                batch.append(job)
            self._pending_items -= items
            return batch

    def _linger(self) -> None:
        """Under load, wait briefly for more jobs so one commit serves more of them.

        Writes already waiting when the last commit finished mean callers are arriving faster
        than single commits; a short wait then makes the batch, and throughput, much larger. An
        idle writer never lingers, so a lone call is not delayed.
        """
        deadline = time.monotonic() + self._linger_seconds
        while self._pending_items < self._linger_items and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._condition.wait(remaining)

    def _run(self) -> None:
        self._writer = self._storage.dedicated_writer()
        try:
            self._drain()
        finally:
            self._writer.close()

    def _drain(self) -> None:
        while (batch := self._take()) is not None:
            started = time.perf_counter()
            try:
                self._commit(batch)
            except BaseException as error:  # never let the writer die with callers waiting
                log.exception("group commit failed unexpectedly")
                for job in batch:
                    job.error = error
            items = sum(len(job.items) for job in batch)
            elapsed = max(time.perf_counter() - started, 1e-6)
            self.batch_items.observe(items)
            self.commit_seconds.observe(elapsed)
            self._items_per_second = 0.8 * self._items_per_second + 0.2 * (items / elapsed)
            # A closed loop has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                batch[0].future.get_loop().call_soon_threadsafe(_settle_all, batch)

    def _write_afresh(self, batch: list[Job]) -> None:
        """Apply jobs in one transaction, tried again from scratch after lock contention."""

        def apply_afresh(repository: BatchRepository) -> None:
            # A busy retry runs this again: outcomes of the rolled-back attempt must not count.
            for job in batch:
                job.reset()
            self._apply_batch(repository, batch=batch)

        self._writer.write(apply_afresh, busy_retry_seconds=self._busy_retry_seconds)

    def _commit(self, batch: list[Job]) -> None:
        try:
            self._write_afresh(batch)
        except StorageUnavailable as error:
            _fail(batch, error)
        except StorageError:
            # One item broke a rule only the database could check; isolate it.
            for job in batch:
                self._commit_items_alone(job)

    def _commit_items_alone(self, job: Job) -> None:
        job.reset()
        for index, item in enumerate(job.items):
            try:
                job.outcomes[index] = self._commit_alone(job, item)
            except Conflict as error:
                job.outcomes[index] = job.on_conflict(item) if job.on_conflict else error
            except StorageUnavailable as error:
                job.outcomes[index] = _unavailable(error)
            except StorageError as error:
                job.outcomes[index] = error

    def _commit_alone(self, job: Job, item: Any) -> Any:
        """One item in its own transaction; its outcome.

        A uniqueness conflict here means another writer (a replica on the same database)
        committed the same message, request id, event id or vote first. One more attempt sees
        that row in its lookups and answers as for any repeat; a second conflict is final.
        """
        try:
            return self._commit_one(job, item)
        except Conflict:
            return self._commit_one(job, item)

    def _commit_one(self, job: Job, item: Any) -> Any:
        single = Job(job.kind, [item], job.future, job.on_conflict)
        self._write_afresh([single])
        return single.outcomes[0]


def _unavailable(cause: StorageUnavailable) -> Unavailable:
    if isinstance(cause, TransactionRolledBack):
        # Deadlocked with other writers for as long as the retries lasted; the database is fine.
        error = Unavailable("the write kept colliding with others; nothing was written, retry")
    else:
        error = Unavailable("the database is unavailable; nothing was written, retry later")
    error.__cause__ = cause
    return error


def _fail(jobs: Sequence[Job], cause: StorageUnavailable) -> None:
    """Nothing was committed: every job fails as retryable."""
    for job in jobs:
        job.error = _unavailable(cause)


def _settle_all(batch: Sequence[Job]) -> None:
    for job in batch:
        job.settle()
