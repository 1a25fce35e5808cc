"""What the service needs of storage, as Protocols: storage implements them structurally.

The service depends on these shapes only (plus the plain records and errors of storage.records
and storage.errors), so its rules run over any implementation: the database (storage.Storage)
in production, an in-memory one in unit tests (tests/server/memory_storage.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from storage.records import (
    ApiKeyEventRecord,
    ApiKeyRecord,
    ChangeEntry,
    ErasedCounts,
    ErasureRecord,
    EventEntry,
    EventFilter,
    EventRecord,
    FeedbackEntry,
    FeedbackFilter,
    FeedbackRecord,
    InteractionEntry,
    InteractionFilter,
    InteractionRecord,
    Keyset,
    LogState,
    NewApiKey,
    NewEvent,
    NewFeedback,
    NewInteraction,
    OptOutEventRecord,
    OptOutRecord,
    StatsAnswer,
    StatsQuery,
    Subject,
)

T = TypeVar("T")

Vote = tuple[str, str]
"""(message_id, user_id): whose vote on which message; one current vote each."""


class BatchRepository(Protocol):
    """What group commit needs inside one write transaction: batched lookups and inserts.

    An insert that breaks a unique rule raises storage.errors.Conflict and ends the unit.
    """

    def interactions_by_messages(
        self, message_ids: Collection[str]
    ) -> dict[str, InteractionRecord]:
        """The interactions recorded for any of the message ids, by message id."""
        ...

    def latest_interactions(
        self, conversation_ids: Collection[str]
    ) -> dict[str, InteractionRecord]:
        """Each conversation's most recent interaction (highest id), by conversation id."""
        ...

    def insert_interactions(self, news: Sequence[NewInteraction]) -> list[InteractionRecord]:
        """Store chat turns, ids in order; Conflict if a message id is taken."""
        ...

    def insert_feedback_entries(self, news: Sequence[NewFeedback]) -> list[FeedbackRecord]:
        """Store feedback entries, ids in order; Conflict if a voter has a current vote."""
        ...

    def insert_events(self, news: Sequence[NewEvent]) -> list[EventRecord]:
        """Store analytics events, ids in order; Conflict if an event id is taken."""
        ...

    def interactions_by_requests(
        self, request_ids: Collection[str]
    ) -> dict[str, InteractionRecord]:
        """The interactions stored by any of the request ids, by request id."""
        ...

    def feedback_by_requests(self, request_ids: Collection[str]) -> dict[str, FeedbackRecord]:
        """Current and replaced votes stored by any of the request ids, by request id."""
        ...

    def events_by_requests(self, request_ids: Collection[str]) -> dict[str, EventRecord]:
        """The events stored by any of the request ids, by request id."""
        ...

    def events_by_event_ids(self, event_ids: Collection[str]) -> dict[str, EventRecord]:
        """The events stored under any of the client event ids, by event id."""
        ...

    def current_votes(self, voters: Collection[Vote]) -> dict[Vote, FeedbackRecord]:
        """The current vote of each of the voters that has one, by (message, user)."""
        ...

    def retire_votes(self, votes: Sequence[FeedbackRecord]) -> None:
        """Remove replaced votes from the current ones."""
        ...

    def insert_history(self, replaced: Sequence[FeedbackRecord]) -> None:
        """Keep replaced votes, with when and by which vote."""
        ...

    def running_erasures(self) -> frozenset[tuple[str, str]]:
        """(subject kind, subject hash) of every erasure under way, read once per transaction
        and, on PostgreSQL, behind the erasure gate (storage.rows.repository.Rows)."""
        ...

    def opted_out(self, user_hashes: Collection[str]) -> frozenset[str]:
        """Which of the user hashes belong to users who opted out (behind the gate)."""
        ...


class ReadUnit(Protocol):
    """What the service reads inside one read transaction (one consistent snapshot)."""

    def feedback_history(self, message_id: str, user_id: str, limit: int) -> list[FeedbackRecord]:
        """A user's votes on a message, oldest first: the newest `limit` of them."""
        ...

    def feedback_entries(self, selection: FeedbackFilter, keyset: Keyset) -> list[FeedbackEntry]:
        """One keyset page of feedback."""
        ...

    def interaction_entries(
        self, selection: InteractionFilter, keyset: Keyset
    ) -> list[InteractionEntry]:
        """One keyset page of interactions."""
        ...

    def event_entries(self, selection: EventFilter, keyset: Keyset) -> list[EventEntry]:
        """One keyset page of analytics events."""
        ...


class BatchWriter(Protocol):
    """Write transactions for one thread (group commit's writer)."""

    def write(self, work: Callable[[BatchRepository], T], *, busy_retry_seconds: float = 0.0) -> T:
        """Run `work` in one transaction and commit; nothing is kept if it raises."""
        ...

    def close(self) -> None:
        """Give the writer's connection back."""
        ...


class RecordStorage(Protocol):
    """The storage handle the feedback service runs its units of work on."""

    def read(self, work: Callable[[ReadUnit], T]) -> T:
        """Run `work` in one read transaction."""
        ...

    def read_stats(self, query: StatsQuery) -> StatsAnswer:
        """Answer a stats query in one read transaction."""
        ...

    def dedicated_writer(self) -> BatchWriter:
        """A writer for group commit's thread."""
        ...


class ApiKeyTable(Protocol):
    """The stored keys and their audit log, inside one unit of work."""

    def create(self, new: NewApiKey) -> ApiKeyRecord:
        """Store a key and its creation's audit entry; Conflict if its prefix is taken."""
        ...

    def all(self) -> list[ApiKeyRecord]:
        """Every key, newest first."""
        ...

    def by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        """The key with this prefix, if any."""
        ...

    def revoke(self, prefix: str, actor: str, now: datetime) -> ApiKeyRecord | None:
        """Revoke the key (a revoked one stays as it was) and audit it; None if there is none."""
        ...

    def record_use(self, prefixes: Collection[str], now: datetime) -> None:
        """Note that these keys were used by `now` (last_use_time only moves forward)."""
        ...

    def events(self, limit: int) -> list[ApiKeyEventRecord]:
        """The newest `limit` audit entries, newest first."""
        ...


class KeyUnit(Protocol):
    """A unit of work as key management sees it."""

    @property
    def api_keys(self) -> ApiKeyTable:
        """The key tables in this unit's transaction."""
        ...


class KeyStorage(Protocol):
    """Units of work over the key tables: reads, and writes committed when `work` returns."""

    def read(self, work: Callable[[KeyUnit], T]) -> T:
        """Run `work` in a read-only unit of work."""
        ...

    def write(self, work: Callable[[KeyUnit], T]) -> T:
        """Run `work` in one transaction, committed when it returns."""
        ...


class ErasureTable(Protocol):
    """The erasure log inside one unit of work (storage.rows.erasure_log.ErasureLog)."""

    def begin(self, subject: Subject, requested_by: str, now: datetime) -> ErasureRecord:
        """The subject's erasure under way, or a new one; writes about it are refused from the
        unit's commit on."""
        ...

    def claim(self, subject: Subject) -> None:
        """Run this unit's batch of the subject's erasure alone (across servers)."""
        ...

    def by_id(self, erasure_id: int) -> ErasureRecord | None:
        """One entry, if it exists."""
        ...

    def count(self, erasure_id: int, erased: ErasedCounts) -> None:
        """Add one batch's rows to the entry's counts."""
        ...

    def finish(self, erasure_id: int, now: datetime) -> None:
        """Mark the entry done."""
        ...

    def newest(
        self, limit: int, before_id: int | None, subject: Subject | None
    ) -> list[ErasureRecord]:
        """Up to `limit` entries, newest first, older than `before_id`, of `subject` if given."""
        ...


class OptOutTable(Protocol):
    """The opted-out users and their choices inside one unit of work (storage.rows.opt_outs)."""

    def opt_out(
        self, user: Subject, requested_by: str, now: datetime, *, erase: bool
    ) -> OptOutRecord:
        """Mark the user opted out and record the choice."""
        ...

    def opt_in(self, user: Subject, requested_by: str, now: datetime) -> bool:
        """Take the user's writes again; whether they had opted out."""
        ...

    def get(self, user: Subject) -> OptOutRecord | None:
        """The user's opt-out, if any."""
        ...

    def events(self, user: Subject, limit: int) -> list[OptOutEventRecord]:
        """The user's newest choices, newest first."""
        ...


class ErasureUnit(Protocol):
    """A unit of work as erasure, opt-out and the access export see it."""

    @property
    def erasures(self) -> ErasureTable:
        """The erasure log in this unit's transaction."""
        ...

    @property
    def opt_outs(self) -> OptOutTable:
        """The opted-out users in this unit's transaction."""
        ...

    def erase(self, column: str, value: str, limit: int) -> ErasedCounts:
        """Delete up to `limit` rows per table whose `column` is `value`, out of the rollups."""
        ...

    def subject_rows(
        self, table: str, column: str, value: str, after_id: int, limit: int
    ) -> list[Any]:
        """Up to `limit` records of `table` whose `column` is `value`, by id after `after_id`."""
        ...


class ErasureStorage(Protocol):
    """Units of work for erasures: reads, and writes committed when `work` returns."""

    def read(self, work: Callable[[ErasureUnit], T]) -> T:
        """Run `work` in one read transaction."""
        ...

    def write(self, work: Callable[[ErasureUnit], T]) -> T:
        """Run `work` in one transaction, committed when it returns (rollups last)."""
        ...

    def checkpoint(self) -> bool:
        """Leave no copy of deleted rows in a write-ahead log the database can empty (SQLite's);
        whether none is left."""
        ...


class WatchUnit(Protocol):
    """What the live tail reads inside one read transaction (storage.rows.changes)."""

    def change_state(self) -> LogState:
        """The change log's clock and every kind's horizon."""
        ...

    def changes_after(self, seq: int, through: int, limit: int) -> list[ChangeEntry]:
        """Up to `limit` entries numbered in (seq, through], in commit order."""
        ...

    def first_change_after_id(self, kind: str, row_id: int) -> int | None:
        """The number of the oldest entry of `kind` holding an id above `row_id`, if any."""
        ...

    def entries_by_ids(self, kind: str, ids: Sequence[int]) -> list[Any]:
        """The still stored rows of `kind` among ascending `ids`, as list entries in id order."""
        ...


class Closeable(Protocol):
    """Something that runs until closed."""

    def close(self) -> None:
        """Stop it."""
        ...


class ChangeFeed(Protocol):
    """The storage handle of the live tail."""

    def read(self, work: Callable[[WatchUnit], T]) -> T:
        """Run `work` in one read transaction (one snapshot)."""
        ...

    def on_changes(self, listener: Callable[[int], None]) -> None:
        """Call `listener` after each of this process's commits that added records."""
        ...

    def listen_for_changes(self, listener: Callable[[], None]) -> Closeable:
        """Call `listener` when any process commits change log entries (a hint)."""
        ...

    def compact_changes(self, before: datetime, limit: int) -> int:
        """Remove up to `limit` of the oldest entries committed before `before`; how many."""
        ...
