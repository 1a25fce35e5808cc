"""Group commit: concurrent writes share one transaction, and each caller hears back after it.

One writer thread takes whatever jobs are queued (up to `max_batch`), applies them in a single
transaction and commits once, so a burst of N calls costs one commit (one fsync on SQLite) instead
of N. A job is answered only after its batch commits. A batch that fails as a whole (a uniqueness
race, say) is retried one job per transaction, so a bad row fails alone. The queue is bounded:
when it is full, new writes are refused with a retry delay instead of piling up in memory.
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
from storage import Repository, Storage
from storage.errors import Conflict, StorageError, StorageUnavailable

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 1000
DEFAULT_MAX_PENDING = 10_000


@dataclass(slots=True, eq=False)
class Job:
    """One write waiting for its batch: the validated item, and where its outcome goes."""

    kind: str
    item: Any
    future: asyncio.Future[Any]
    on_conflict: Callable[[], ServiceError] | None = None
    """The error to answer with when the item alone still breaks a uniqueness rule."""
    result: Any = None
    error: BaseException | None = field(default=None)

    def settle(self) -> None:
        """Hand the outcome to the waiting caller (on the event loop's thread)."""
        if self.future.done():  # the caller went away (deadline, cancellation)
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.result)


ApplyBatch = Callable[[Repository, Sequence[Job]], None]
"""Applies jobs inside one transaction, setting each job's result or (rule) error."""


class GroupCommitter:
    """A bounded write queue drained by one thread that commits many jobs per transaction."""

    def __init__(
        self,
        storage: Storage,
        apply_batch: ApplyBatch,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self._storage = storage
        self._apply_batch = apply_batch
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._queue: deque[Job] = deque()
        self._condition = threading.Condition()
        self._closing = False
        self._rows_per_second = 1000.0  # refined by every commit; sizes the retry delay
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def submit(self, jobs: Sequence[Job]) -> None:
        """Queue all of `jobs` or none: raises ResourceExhausted when they do not fit now."""
        with self._condition:
            if self._closing:
                raise Unavailable("the server is shutting down; retry on another replica")
            pending = len(self._queue)
            if pending + len(jobs) > self._max_pending:
                delay = min(5.0, max(0.05, (pending + len(jobs)) / self._rows_per_second))
                raise ResourceExhausted(
                    f"the write queue is full ({pending} writes waiting); retry later", delay
                )
            self._queue.extend(jobs)
            self._condition.notify()

    async def write(self, job: Job) -> Any:
        """Queue one job and wait until its batch has committed; returns its result."""
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
        """Jobs queued and not yet taken by the writer."""
        return len(self._queue)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._closing:
                    self._condition.wait()
                if not self._queue:
                    return  # closing, and everything queued has been committed
                count = min(len(self._queue), self._max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
            started = time.perf_counter()
            try:
                self._commit(batch)
            except BaseException as error:  # never let the writer die with callers waiting
                log.exception("group commit failed unexpectedly")
                for job in batch:
                    job.error = error
            elapsed = max(time.perf_counter() - started, 1e-6)
            self._rows_per_second = 0.8 * self._rows_per_second + 0.2 * (len(batch) / elapsed)
            # A closed loop has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                batch[0].future.get_loop().call_soon_threadsafe(_settle_all, batch)

    def _commit(self, batch: list[Job]) -> None:
        try:
            self._storage.write(lambda repository: self._apply_batch(repository, batch))
        except StorageUnavailable as error:
            _fail_unsettled(batch, error)
        except StorageError:
            # One job broke a rule only the database could check; isolate it.
            for job in batch:
                self._commit_alone(job)

    def _commit_alone(self, job: Job) -> None:
        job.result = job.error = None
        try:
            self._storage.write(lambda repository: self._apply_batch(repository, [job]))
        except Conflict as error:
            job.error = job.on_conflict() if job.on_conflict else error
        except StorageUnavailable as error:
            _fail_unsettled([job], error)


def _fail_unsettled(jobs: Sequence[Job], error: StorageUnavailable) -> None:
    """Nothing was committed: jobs that would have been stored fail as retryable."""
    for job in jobs:
        if job.error is None:
            job.result = None
            job.error = Unavailable("the database is unavailable; nothing was written, retry later")
            job.error.__cause__ = error


def _settle_all(batch: Sequence[Job]) -> None:
    for job in batch:
        job.settle()
