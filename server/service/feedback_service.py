"""FeedbackService: the use cases of recording, rating, logging and reading, over any storage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from server.service.errors import InvalidArgument, ServiceError, Unavailable
from server.service.group_commit import GroupCommitter, Job
from server.service.inputs import (
    EventInput,
    FeedbackInput,
    HistoricInput,
    InteractionInput,
    StatsInput,
)
from server.service.list_inputs import ExportRequest, PageRequest, SelectionT
from server.service.listing import (
    Chunk,
    EntryT,
    FilterT,
    Listing,
    Page,
    export,
    list_page,
)
from server.service.ports import ReadUnit, RecordStorage
from server.service.privacy import Privacy
from server.service.stats import StatsChange, compare, valid_stats_query
from server.service.stream_clock import StreamClock
from server.service.subjects import Subjects
from server.service.validation import IDENTIFIER, Violations
from server.service.write_rules import (
    EVENT,
    FEEDBACK,
    IDENTIFIER_RULE,
    INTERACTION,
    Duplicate,
    Rules,
    Suppressed,
    apply_batch,
    message_exists,
    valid_event,
    valid_feedback,
    valid_interaction,
)
from storage.errors import StorageUnavailable
from storage.records import (
    EventRecord,
    EventStats,
    FeedbackRecord,
    FeedbackStats,
    InteractionRecord,
    InteractionStats,
    NewInteraction,
    StatsBucket,
    StatsGroup,
    StatsPeriod,
)

T = TypeVar("T")

MAX_BATCH_ITEMS = 1000
"""Most items one batch call (or one Ingest chunk) may carry."""

WriteInput = InteractionInput | FeedbackInput | EventInput | HistoricInput

HISTORY_START = datetime(2000, 1, 1, tzinfo=UTC)
"""The earliest create_time an import may give: older is taken for a mistake (an epoch, a unit)."""
WriteOutcome = InteractionRecord | FeedbackRecord | EventRecord | Duplicate | Suppressed | Exception
"""A stored record, what an earlier request stored (Duplicate), nothing because the user opted
out (Suppressed), or why the item was not stored (a ServiceError for anything foreseen)."""

MAX_HISTORY = 1000
"""Most votes ListFeedbackHistory returns: the newest."""


@dataclass(frozen=True, slots=True)
class Stats:
    """Everything a stats request asked for; a kind is None when the filters exclude it."""

    feedback: FeedbackStats | None
    interactions: InteractionStats | None
    events: EventStats | None
    buckets: Sequence[StatsBucket] = ()
    groups: Sequence[StatsGroup] = ()
    previous: StatsPeriod | None = None
    change: StatsChange | None = None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class FeedbackService:
    """Validates requests, queues writes for group commit and runs reads off the event loop."""

    def __init__(
        self,
        storage: RecordStorage,
        executor: Executor,
        rules: Rules | None = None,
        clock: Callable[[], datetime] = _utc_now,
        *,
        max_pending_writes: int = 20_000,
        privacy: Privacy | None = None,
    ) -> None:
        self._storage = storage
        self._executor = executor
        self._rules = rules or Rules()
        self._privacy = privacy or Privacy()
        # One thread for large redactions, so they queue behind each other and never ahead of
        # reads in the storage pool (see _redacted).
        self._redaction_thread = ThreadPoolExecutor(1, thread_name_prefix="redaction")
        self._clock = clock
        self._committer = GroupCommitter(
            storage,
            partial(
                apply_batch, rules=self._rules, subjects=Subjects(self._privacy.subject_hasher)
            ),
            max_pending=max_pending_writes,
        )

    @property
    def write_queue(self) -> GroupCommitter:
        """The group-commit queue of every write, for the metrics that read it."""
        return self._committer

    def close(self) -> None:
        """Commit every queued write and stop the writer (blocking)."""
        self._committer.close()
        self._redaction_thread.shutdown()

    # ---- writes ----

    async def record_interaction(self, request: InteractionInput) -> InteractionRecord | Suppressed:
        """Store one chat turn; the texts are hashed and dropped."""
        _, item = self._validated(request, self._clock(), None)
        (item,) = await self._redacted([item], _scanned_size(request))
        record: InteractionRecord | Suppressed = await self._write_one(INTERACTION, item)
        return record

    async def submit_feedback(self, request: FeedbackInput) -> FeedbackRecord | Suppressed:
        """Store one rating, linked to the recorded interaction it is about."""
        _, item = self._validated(request, self._clock(), None)
        (item,) = await self._redacted([item], _scanned_size(request))
        record: FeedbackRecord | Suppressed = await self._write_one(FEEDBACK, item)
        return record

    async def log_event(self, request: EventInput) -> EventRecord | Suppressed:
        """Store one analytics event."""
        _, item = self._validated(request, self._clock(), None)
        (item,) = await self._redacted([item], _scanned_size(request))
        record: EventRecord | Suppressed = await self._write_one(EVENT, item)
        return record

    async def _write_one(self, kind: str, item: Any) -> Any:
        """The stored record; a repeated request gets the record its first call stored, a write
        about an opted-out user Suppressed."""
        outcome = (await self._committer.write(self._job(kind, [item])))[0]
        if isinstance(outcome, Exception):
            raise outcome
        if isinstance(outcome, Duplicate):
            return outcome.record
        return outcome

    async def write_many(
        self,
        requests: Sequence[WriteInput | InvalidArgument],
        field: str,
        *,
        clock_offset: timedelta | None = None,
    ) -> list[WriteOutcome]:
        """Store up to MAX_BATCH_ITEMS items, each validated and stored on its own.

        Returns one outcome per request, in order; a request that is already an InvalidArgument
        (rejected by the caller, say for its size) keeps it. Admission is all-or-nothing
        (ResourceExhausted when the queue cannot take the whole batch); if no item could be
        stored because the database is down, raises Unavailable. `clock_offset` is the client
        clock's error estimated over an Ingest stream (see stream_clock), used instead of each
        item's own sent_time.
        """
        if not 1 <= len(requests) <= MAX_BATCH_ITEMS:
            check = Violations()
            check.add(field, f"must hold 1 to {MAX_BATCH_ITEMS} items, got {len(requests)}")
            check.raise_if_any()
        now = self._clock()
        outcomes: list[WriteOutcome | None] = [None] * len(requests)
        by_kind: dict[tuple[str, bool], tuple[list[int], list[Any]]] = {}
        scanned = 0
        for index, request in enumerate(requests):
            try:
                if isinstance(request, HistoricInput):
                    kind, item = self._historic(request, now)
                else:
                    kind, item = self._validated(request, now, clock_offset)
            except InvalidArgument as error:
                outcomes[index] = error
                continue
            positions, items = by_kind.setdefault(
                (kind, isinstance(request, HistoricInput)), ([], [])
            )
            positions.append(index)
            items.append(item)
            scanned += _scanned_size(request)
        groups = [items for _, items in by_kind.values()]
        redacted = iter(await self._redacted([item for items in groups for item in items], scanned))
        for items in groups:
            items[:] = [next(redacted) for _ in items]
        jobs = [
            (positions, self._job(kind, items, imported=imported))
            for (kind, imported), (positions, items) in by_kind.items()
        ]
        self._committer.submit([job for _, job in jobs])
        results = await asyncio.gather(*(job.future for _, job in jobs), return_exceptions=True)
        for (positions, _), result in zip(jobs, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            for position, outcome in zip(positions, result, strict=True):
                outcomes[position] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    def _historic(self, request: HistoricInput, now: datetime) -> tuple[str, Any]:
        """The kind and validated item of an imported write, with its source's times."""
        check = Violations()
        create_time = request.create_time
        if create_time is None:
            check.add("create_time", "is required: when the source stored the item")
        elif create_time > now:
            check.add(
                "create_time",
                f"must not be after the server's time {now.isoformat()},"
                f" got {create_time.isoformat()}",
            )
        elif create_time < HISTORY_START:
            check.add(
                "create_time",
                f"must be {HISTORY_START.date().isoformat()} or later,"
                f" got {create_time.isoformat()}",
            )
        check.raise_if_any()
        assert create_time is not None
        # The source's times are taken as they are: it is no client clock to correct.
        kind, item = self._validated(request.item, create_time, timedelta(0))
        happened = getattr(item, "occur_time", None) or getattr(item, "event_time", None)
        if happened is not None and happened > now:
            name = "occur_time" if kind == INTERACTION else "event_time"
            check.add(name, f"must not be after the server's time {now.isoformat()}")
            check.raise_if_any()
        return kind, item

    def _validated(
        self,
        request: WriteInput | InvalidArgument,
        now: datetime,
        clock_offset: timedelta | None,
    ) -> tuple[str, Any]:
        """The kind and validated item of a write; raises InvalidArgument."""
        match request:
            case InvalidArgument():
                raise request
            case InteractionInput():
                hasher = self._privacy.text_hasher
                return INTERACTION, valid_interaction(request, now, clock_offset, hasher)
            case FeedbackInput():
                return FEEDBACK, valid_feedback(request, self._rules, now)
            case EventInput():
                return EVENT, valid_event(request, now, clock_offset)
            case HistoricInput():
                check = Violations()
                check.add("item", "must not be an import inside an import")
                check.raise_if_any()
        raise AssertionError(f"not a write: {request!r}")

    async def _redacted(self, items: list[Any], scanned: int) -> list[Any]:
        """The validated items with their free text redacted, before any is queued: nothing
        unredacted reaches the writer, the database or its WAL.

        `scanned` is about how many characters redaction reads. Beyond INLINE_REDACTION_CHARS
        the work runs on the redaction thread: a hostile 16 KiB object costs tens of
        milliseconds, which on the event loop would stall every other call. That thread gives
        the loop the GIL back every few milliseconds, and a flood of such writes waits for it
        without holding up reads in the storage pool.
        """
        privacy = self._privacy
        if privacy.redactor is None:
            return items
        if scanned <= INLINE_REDACTION_CHARS:
            return [privacy.redacted(item) for item in items]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._redaction_thread, lambda: [privacy.redacted(item) for item in items]
        )

    def stream_clock(self) -> StreamClock:
        """A new estimate of one Ingest stream's client clock error, on this service's clock."""
        return StreamClock(self._clock)

    def _job(self, kind: str, items: list[Any], *, imported: bool = False) -> Job:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        conflict = _interaction_conflict if kind == INTERACTION else None
        return Job(kind, items, future, on_conflict=conflict, imported=imported)

    # ---- reads ----

    async def get_stats(self, request: StatsInput) -> Stats:
        """Aggregate feedback, interactions and events from the rollups; see service.stats."""
        query = valid_stats_query(request)
        loop = asyncio.get_running_loop()
        try:
            answer = await loop.run_in_executor(self._executor, self._storage.read_stats, query)
        except StorageUnavailable as error:
            raise Unavailable("the database is unavailable; retry later") from error
        overall = answer.overall
        return Stats(
            feedback=overall.feedback,
            interactions=overall.interactions,
            events=overall.events,
            buckets=answer.buckets,
            groups=answer.groups,
            previous=answer.previous,
            change=None if answer.previous is None else compare(overall, answer.previous.stats),
        )

    async def feedback_history(self, message_id: str, user_id: str) -> list[FeedbackRecord]:
        """One user's votes on one message, oldest first, the current one last."""
        check = Violations()
        check.required_match("message_id", message_id, IDENTIFIER, IDENTIFIER_RULE)
        check.required_match("user_id", user_id, IDENTIFIER, IDENTIFIER_RULE)
        check.raise_if_any()
        return await self._read(
            lambda repository: repository.feedback_history(message_id, user_id, MAX_HISTORY)
        )

    async def list_page(
        self, listing: Listing[SelectionT, FilterT, EntryT], request: PageRequest[SelectionT]
    ) -> Page[EntryT]:
        """One page of feedback, interactions or events (see server.service.listing)."""
        return await list_page(listing, request, self._read)

    def export(
        self, listing: Listing[SelectionT, FilterT, EntryT], request: ExportRequest[SelectionT]
    ) -> AsyncGenerator[Chunk[EntryT], None]:
        """Every matching row, chunk by chunk (see server.service.listing)."""
        return export(listing, request, self._read)

    async def _read(self, work: Callable[[ReadUnit], T]) -> T:
        """Run a read on the executor so the event loop keeps serving."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._storage.read, work)
        except StorageUnavailable as error:
            raise Unavailable("the database is unavailable; retry later") from error


INLINE_REDACTION_CHARS = 2048
"""Redaction of up to this many characters runs on the event loop (at most about 5 ms even for
hostile text; typical comments cost 15-150 us, less than a thread hop's wait)."""


def _scanned_size(request: WriteInput | InvalidArgument) -> int:
    """About how many characters redaction reads in a write: its text, label and JSON as sent."""
    match request:
        case HistoricInput():
            return _scanned_size(request.item)
        case InteractionInput():
            return request.metadata_bytes
        case FeedbackInput():
            return len(request.text) + len(request.label or "") + request.metadata_bytes
        case EventInput():
            return request.details_bytes
    return 0


def _interaction_conflict(item: NewInteraction) -> ServiceError:
    return message_exists(item.message_id or "")
