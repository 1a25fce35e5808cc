"""Erasure of a user's or a conversation's data, its log, and the export of a user's data.

An erasure first commits its entry in the erasure log: from then on, every write about the
subject is refused inside its own transaction (write_rules.apply_batch), and on PostgreSQL the
entry's commit waits for write transactions that checked before it (the erasure gate of
storage.rows.repository.Rows.running_erasures). Then it deletes the subject's rows in batches of
at most `batch_rows` per table, each batch one short transaction (paced: server.service.pacing)
that subtracts its rows from the rollups and adds them to the entry's counts, so writes never
wait long and a crash loses
nothing: running the erasure again resumes the entry. The batch that finds nothing left
finishes the entry; writes about the subject are taken again from its commit on. Rollup cells
keyed by the subject go with their last row (a cell whose count falls to zero is deleted).
Servers erasing one subject take turns batch by batch. On SQLite, whose deleted rows are zeroed in
the file (secure_delete), the write-ahead log is emptied last, so no copy of them stays there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from server.service import paging
from server.service.errors import NotFound, ResourceExhausted, Unavailable
from server.service.pacing import Pace
from server.service.ports import ErasureStorage, ErasureUnit
from server.service.subjects import COLUMNS, CONVERSATION, USER, Subjects
from server.service.validation import CONVERSATION_ID, IDENTIFIER, Violations
from server.service.write_rules import CONVERSATION_RULE, IDENTIFIER_RULE
from storage.errors import StorageUnavailable, TransactionRolledBack
from storage.records import ErasureRecord, Subject

T = TypeVar("T")

log = logging.getLogger(__name__)

ERASE_BATCH_ROWS = 500
"""Most rows an erasure deletes per table and transaction (server.service.pacing sizes them)."""
ERASED_KINDS = 4
"""Tables an erasure deletes from: interactions, feedback, replaced votes, events."""
MAX_ERASURES_IN_FLIGHT = 4
"""Subjects one server erases at once; more are refused with RESOURCE_EXHAUSTED."""
DEADLOCK_RETRIES = 8
"""Times a batch that PostgreSQL rolled back to break a deadlock is run again."""
MAX_LOG_PAGE = 1000
DEFAULT_LOG_PAGE = 100
EXPORT_CHUNK_ROWS = 1000
"""Records per message of a user's data export."""
EXPORTED_TABLES = ("interactions", "feedback", "history", "events")
"""A user's data export, table by table in this order."""
MAX_REQUESTER_CHARS = 64


def _user_rows(unit: ErasureUnit, *, table: str, user_id: str, after: int) -> list[Any]:
    return unit.subject_rows(table, "user_id", user_id, after, EXPORT_CHUNK_ROWS)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ErasureService:
    """Runs erasures (one task per subject, which outlives a client that leaves) and reads
    their log and a user's data."""

    def __init__(
        self,
        storage: ErasureStorage,
        executor: Executor,
        subjects: Subjects,
        clock: Callable[[], datetime] = _utc_now,
        *,
        batch_rows: int = ERASE_BATCH_ROWS,
        max_in_flight: int = MAX_ERASURES_IN_FLIGHT,
    ) -> None:
        self._storage = storage
        self._executor = executor
        self._subjects = subjects
        self._clock = clock
        self._batch_rows = batch_rows
        self._max_in_flight = max_in_flight
        self._running: dict[Subject, asyncio.Task[ErasureRecord]] = {}

    async def erase(self, kind: str, subject_id: str, requested_by: str) -> ErasureRecord:
        """Erase every row about the user or conversation; the finished log entry, with the
        rows removed (those of an earlier, interrupted run of the same erasure included).

        A call for a subject this server is already erasing waits for that erasure. A client
        that leaves does not stop it. Raises InvalidArgument for a malformed id,
        ResourceExhausted when MAX_ERASURES_IN_FLIGHT other subjects are being erased, and
        Unavailable when the database is down (run it again: it resumes).
        """
        subject = self.subject(kind, subject_id)
        task = self._running.get(subject)
        if task is None:
            if len(self._running) >= self._max_in_flight:
                raise ResourceExhausted(
                    f"this server is already erasing {len(self._running)} subjects; retry later",
                    1.0,
                    reason="ERASURES_IN_FLIGHT",
                )
            task = asyncio.get_running_loop().create_task(
                self._erase(subject, subject_id, requested_by[:MAX_REQUESTER_CHARS]),
                name=f"erasure-{subject.kind}",
            )
            self._running[subject] = task
            task.add_done_callback(lambda done: self._ended(subject, done))
        return await asyncio.shield(task)

    def _ended(self, subject: Subject, task: asyncio.Task[ErasureRecord]) -> None:
        if self._running.get(subject) is task:
            del self._running[subject]
        if not task.cancelled():
            task.exception()  # retrieved: every caller that waited has seen it

    async def close(self) -> None:
        """Stop the erasures under way between two batches; each resumes when run again."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _erase(self, subject: Subject, subject_id: str, requested_by: str) -> ErasureRecord:
        column = COLUMNS[subject.kind]
        entry = await self.run_write(
            lambda unit: unit.erasures.begin(subject, requested_by, self._clock())
        )
        pace = Pace(self._batch_rows * ERASED_KINDS)
        while True:
            finished, _ = await pace.run(
                lambda rows: self.run_write(
                    lambda unit: self._batch(unit, subject, column, subject_id, entry.id, rows)
                ),
                lambda outcome: outcome[1],
            )
            if finished is not None:
                break
        # Finished: a later call starts a new erasure rather than join this one's checkpoint.
        if self._running.get(subject) is asyncio.current_task():
            del self._running[subject]
        if not await self._run_storage(self._storage.checkpoint):
            log.warning(
                "erasure %d: a reader kept SQLite's write-ahead log from being emptied; the"
                " erased rows leave it with the next checkpoint",
                finished.id,
            )
        return finished

    def _batch(
        self,
        unit: ErasureUnit,
        subject: Subject,
        column: str,
        subject_id: str,
        erasure_id: int,
        rows: int,
    ) -> tuple[ErasureRecord | None, int]:
        """One batch of about `rows` rows, shared by the tables: (the finished entry once nothing
        is left, else None; the rows it deleted)."""
        unit.erasures.claim(subject)
        entry = unit.erasures.by_id(erasure_id)
        if entry is None:
            raise NotFound("erasure", str(erasure_id), "the erasure's log entry was deleted")
        if entry.finish_time is not None:
            return entry, 0  # another server finished it
        erased = unit.erase(column, subject_id, -(-rows // ERASED_KINDS))
        if erased.total:
            unit.erasures.count(erasure_id, erased)
            return None, erased.total
        unit.erasures.finish(erasure_id, self._clock())
        return unit.erasures.by_id(erasure_id), 0

    async def log(
        self, page_size: int, page_token: str, user_id: str, conversation_id: str
    ) -> tuple[list[ErasureRecord], str]:
        """A page of the erasure log, newest first, of one user or conversation if either id is
        given; and the next page's token ("" after the last page)."""
        check = Violations()
        if page_size < 0:
            check.add("page_size", "must not be negative")
        if user_id and conversation_id:
            check.add("conversation_id", "must be empty when user_id is set")
        check.raise_if_any()
        subject = None
        if user_id:
            subject = self.subject(USER, user_id)
        elif conversation_id:
            subject = self.subject(CONVERSATION, conversation_id)
        fingerprint = paging.filters_fingerprint("erasures", subject)
        before = None
        if page_token:
            try:
                before = paging.decode_page_token(page_token, fingerprint)
            except paging.InvalidPageToken as error:
                check.add("page_token", str(error))
                check.raise_if_any()
        limit = min(page_size or DEFAULT_LOG_PAGE, MAX_LOG_PAGE)
        entries = await self.run_read(lambda unit: unit.erasures.newest(limit + 1, before, subject))
        if len(entries) <= limit:
            return entries, ""
        del entries[limit:]
        return entries, paging.encode_page_token(entries[-1].id, fingerprint)

    async def export_user(self, user_id: str) -> AsyncGenerator[tuple[str, list[Any]], None]:
        """Everything stored about the user, as (table, records) chunks: interactions, current
        feedback, replaced votes, events, each in id order. Each chunk is one short read; a
        slow reader holds one chunk."""
        self.subject(USER, user_id)
        for table in EXPORTED_TABLES:
            after = 0
            while True:
                read = partial(_user_rows, table=table, user_id=user_id, after=after)
                records = await self.run_read(read)
                if records:
                    yield table, records
                if len(records) < EXPORT_CHUNK_ROWS:
                    break
                after = records[-1].id

    def subject(self, kind: str, subject_id: str) -> Subject:
        """The log's name for a subject of a request; InvalidArgument for a malformed id."""
        check = Violations()
        if kind == USER:
            check.required_match("user_id", subject_id, IDENTIFIER, IDENTIFIER_RULE)
        elif kind == CONVERSATION:
            check.required_match("conversation_id", subject_id, CONVERSATION_ID, CONVERSATION_RULE)
        else:
            raise AssertionError(f"not a subject kind: {kind!r}")
        check.raise_if_any()
        return self._subjects.of(kind, subject_id)

    async def run_write(self, work: Callable[[ErasureUnit], T]) -> T:
        """Run one write unit on the executor, again when PostgreSQL broke a deadlock."""
        for attempt in range(DEADLOCK_RETRIES + 1):
            try:
                return await self._run(self._storage.write, work)
            except TransactionRolledBack:
                if attempt == DEADLOCK_RETRIES:
                    raise Unavailable("the erasure kept deadlocking; run it again") from None
                await asyncio.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    async def run_read(self, work: Callable[[ErasureUnit], T]) -> T:
        """Run one read unit on the executor."""
        return await self._run(self._storage.read, work)

    async def _run(
        self, unit: Callable[[Callable[[ErasureUnit], T]], T], work: Callable[[ErasureUnit], T]
    ) -> T:
        return await self._run_storage(partial(unit, work))

    async def _run_storage(self, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, call)
        except TransactionRolledBack:
            raise
        except StorageUnavailable as error:
            raise Unavailable("the database is unavailable; retry later") from error
