"""The raw rows of one unit of work, speaking records: one implementation on every database.

Every statement is driver-level SQL run through one `Execute` (see storage.rows.bulk_insert):
on SQLite's group commit straight on sqlite3, elsewhere on the SQLAlchemy connection of the
unit. A batch of ten ratings cost about 920 us of CPU through SQLAlchemy's statements and 260 us
this way. The values cross the driver through storage.rows.row_codec, so each path stores and
reads exactly what SQLAlchemy's column types would. The only differences between databases are
PostgreSQL's locks (claims on voters, row locks in id order), which SQLite's single writer does
not need.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import cached_property
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, Generic, TypeVar, assert_never

from sqlalchemy import Table

from storage.aggregates import kinds as aggregates
from storage.aggregates.sql import SqlTarget
from storage.aggregates.write import RollupChanges
from storage.records import (
    ChangeEntry,
    ErasedCounts,
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
    Label,
    LogState,
    NewEvent,
    NewFeedback,
    NewInteraction,
    Rating,
    Score,
    Thumb,
)
from storage.rows import executors, id_blocks
from storage.rows import listing as listing_queries
from storage.rows.api_keys import ApiKeys
from storage.rows.bulk_insert import Execute, Getter, insert_returning_ids, inserted_columns
from storage.rows.changes import WATCHED_KINDS, ChangeCollector, ChangeLog
from storage.rows.erasure_log import ERASURE_LOCK_SPACE, ErasureLog
from storage.rows.opt_outs import OptOuts
from storage.rows.row_codec import CODECS, MARKS, Dialect, table_codec
from storage.schema.models import Base, EventRow, FeedbackHistoryRow, FeedbackRow, InteractionRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

StoredRecord = TypeVar("StoredRecord", InteractionRecord, FeedbackRecord, EventRecord)

Vote = tuple[str, str]
"""(message_id, user_id): whose vote on which message; one current vote each."""


@dataclass(frozen=True, eq=False)
class RowKind(Generic[StoredRecord]):
    """One raw table as data: its records, the few columns and fields that are not a copy of
    each other, its rollups. Every other column holds the record field of the same name."""

    model: type[Base]
    record_type: type[StoredRecord]
    rollup_kind: aggregates.AggregateKind | None
    """The rollups its rows count in; None for a table no rollup reads."""
    column_values: Mapping[str, Getter] = field(default_factory=dict)
    """Inserted columns computed from the record rather than copied from a field."""
    field_values: Mapping[str, Callable[[Mapping[str, Any]], Any]] = field(default_factory=dict)
    """Record fields computed from the row rather than copied from a column."""

    @property
    def table(self) -> Table:
        """The table the model maps."""
        table = self.model.__table__
        assert isinstance(table, Table)
        return table

    @cached_property
    def getters(self) -> tuple[Getter, ...]:
        """Per inserted column (bulk_insert.inserted_columns), how to read it off a record."""
        return tuple(
            self.column_values.get(name) or attrgetter(name)
            for name in inserted_columns(self.table)
        )

    @cached_property
    def _readers(self) -> tuple[tuple[str, Callable[[Mapping[str, Any]], Any]], ...]:
        columns = set(self.table.columns.keys())
        readers = []
        for record_field in fields(self.record_type):
            name = record_field.name
            read = self.field_values.get(name)
            if read is None:
                read = itemgetter(name) if name in columns else _constant(record_field.default)
            readers.append((name, read))
        return tuple(readers)

    def from_row(self, row: Mapping[str, Any]) -> StoredRecord:
        """The record of a decoded row (values by column name, typed)."""
        return self.record_type(**{name: read(row) for name, read in self._readers})


def _constant(value: object) -> Callable[[Mapping[str, Any]], Any]:
    return lambda row: value


class Rows:
    """Group commit's lookups and inserts (and the few reads of one record's rows), in the
    transaction of `execute`, which the caller begins and ends.

    A Conflict raised by an insert ends the unit of work: the database has already rolled the
    transaction back, so look the existing row up in a new unit.
    """

    def __init__(self, execute: Execute, dialect: Dialect) -> None:
        """Run statements through `execute` (the caller translates its errors) on `dialect`."""
        self._execute = execute
        self._dialect = dialect
        self._mark = MARKS[dialect]
        self._rollups = RollupChanges()
        self._blocks = id_blocks.BlockChanges()
        self._changes = ChangeCollector()
        self._running_erasures: frozenset[tuple[str, str]] | None = None
        self._gate_passed = False

    def finish(self) -> None:
        """Write the unit's id block and rollup changes, then its change log entries; the
        caller runs this last, just before committing, so every transaction locks rows in one
        order: raw rows, id blocks, rollups (see storage.aggregates.write.RollupChanges), and
        the change clock last of all, for as short a time as the commit takes."""
        self._blocks.apply(self._execute, self._dialect)
        self._rollups.apply(SqlTarget(self._execute, self._dialect))
        self._changes.apply(self._execute, self._dialect, datetime.now(UTC))

    @property
    def change_seq(self) -> int | None:
        """The unit's number in the change log once finished (None: it added no record)."""
        return self._changes.seq

    # Interactions

    def interactions_by_messages(
        self, message_ids: Collection[str]
    ) -> dict[str, InteractionRecord]:
        """The interactions recorded for any of the message ids, by message id (one query)."""
        records = self._rows_where(INTERACTIONS, "message_id", message_ids)
        return {record.message_id: record for record in records if record.message_id is not None}

    def latest_interactions(
        self, conversation_ids: Collection[str]
    ) -> dict[str, InteractionRecord]:
        """Each conversation's most recent interaction (highest id), by conversation id."""
        if not conversation_ids:
            return {}
        keys = tuple(conversation_ids)
        latest = (
            f"SELECT max(id) FROM interactions WHERE conversation_id IN ({self._marks(keys)})"
            " GROUP BY conversation_id"
        )
        records = self._select(INTERACTIONS, f"id IN ({latest})", keys)
        return {record.conversation_id: record for record in records}

    def insert_interactions(self, news: Sequence[NewInteraction]) -> list[InteractionRecord]:
        """Store chat turns in one statement per chunk; raises Conflict if a message_id is taken."""
        return self._insert(INTERACTIONS, news)

    # Feedback

    def insert_feedback_entries(self, news: Sequence[NewFeedback]) -> list[FeedbackRecord]:
        """Store feedback entries in one statement per chunk."""
        return self._insert(FEEDBACK, news)

    # Events

    def insert_events(self, news: Sequence[NewEvent]) -> list[EventRecord]:
        """Store analytics events in one statement per chunk."""
        return self._insert(EVENTS, news)

    # Idempotency and votes (group commit; see server.service.write_rules)

    def interactions_by_requests(
        self, request_ids: Collection[str]
    ) -> dict[str, InteractionRecord]:
        """The interactions stored by any of the request ids, by request id (one query)."""
        records = self._rows_where(INTERACTIONS, "request_id", request_ids)
        return {record.request_id or "": record for record in records}

    def feedback_by_requests(self, request_ids: Collection[str]) -> dict[str, FeedbackRecord]:
        """Current and replaced votes stored by any of the request ids, by request id."""
        found: dict[str, FeedbackRecord] = {}
        for kind in (HISTORY, FEEDBACK):
            for record in self._rows_where(kind, "request_id", request_ids):
                found[record.request_id or ""] = record
        return found

    def events_by_requests(self, request_ids: Collection[str]) -> dict[str, EventRecord]:
        """The events stored by any of the request ids, by request id."""
        records = self._rows_where(EVENTS, "request_id", request_ids)
        return {record.request_id or "": record for record in records}

    def events_by_event_ids(self, event_ids: Collection[str]) -> dict[str, EventRecord]:
        """The events stored under any of the client event ids, by event id."""
        records = self._rows_where(EVENTS, "event_id", event_ids)
        return {record.event_id or "": record for record in records}

    def current_votes(self, voters: Collection[Vote]) -> dict[Vote, FeedbackRecord]:
        """The current vote of each of the voters that has one, by (message, user).

        On PostgreSQL the voters are first claimed for the rest of the transaction (see
        _claim_voters), so a transaction replacing the same user's vote on another replica
        waits for this one, and then finds the vote this one stores as current. SQLite's single
        writer needs no claims.
        """
        if not voters:
            return {}
        if self._dialect == "postgresql":
            self._claim_voters(voters)
        messages = {message_id for message_id, _ in voters}
        found = votes_by_voter(self._rows_where(FEEDBACK, "message_id", messages))
        return {voter: found[voter] for voter in voters if voter in found}

    def _claim_voters(self, voters: Collection[Vote]) -> None:
        """Take transaction-scoped advisory locks on the voters, in one global order.

        Two transactions replacing votes of the same users lock their old rows and their
        (message, user) unique keys in batch order: opposite orders deadlocked. Claims come first,
        sorted, so the second one waits whole. Voters hash to buckets; past MAX_VOTE_CLAIMS of
        them a batch takes the one exclusive claim on all votes instead, so no transaction holds
        more than MAX_VOTE_CLAIMS + 1 locks of PostgreSQL's shared lock table. Every claimer
        takes that claim on all votes first (shared when it claims buckets).
        """
        buckets = sorted({vote_bucket(voter) for voter in voters})
        if len(buckets) > MAX_VOTE_CLAIMS:
            self._execute("SELECT pg_advisory_xact_lock(%s, 0)", (VOTE_LOCK_SPACE,))
            return
        self._execute("SELECT pg_advisory_xact_lock_shared(%s, 0)", (VOTE_LOCK_SPACE,))
        # unnest returns the sorted buckets in array order, and each row's lock is taken in
        # that order.
        self._execute(
            "SELECT pg_advisory_xact_lock(%s, bucket)"
            " FROM unnest(CAST(%s AS integer[])) AS claimed(bucket)",
            (VOTE_LOCK_SPACE, buckets),
        )

    def retire_votes(self, votes: Sequence[FeedbackRecord]) -> None:
        """Delete replaced votes from the feedback table and take them out of the rollups.

        On PostgreSQL the rows are locked in id order first: a DELETE locks in the order its plan
        visits rows, which need not be the same for two transactions.
        """
        if not votes:
            return
        ids = tuple(sorted(vote.id for vote in votes))
        where = f"id IN ({self._marks(ids)})"
        if self._dialect == "postgresql":
            self._execute(f"SELECT id FROM feedback WHERE {where} ORDER BY id FOR UPDATE", ids)
        self._execute(f"DELETE FROM feedback WHERE {where}", ids)
        self._rollups.add(aggregates.FEEDBACK, votes, -1)

    def erase(self, column: str, value: str, limit: int) -> ErasedCounts:
        """Delete up to `limit` rows of each raw table whose `column` ("user_id" or
        "conversation_id") is `value`, their rollup contributions with them; the rows deleted
        per table. Bounded, so an erasure of any size is many short transactions that never
        stall writes; run it until it deletes nothing.

        Feedback and its history go before interactions, which feedback references. On
        PostgreSQL the rows are locked in id order first, as retire_votes does. The id blocks
        are left as they are: bounds of fewer rows still bound them.
        """
        erased: dict[str, int] = {}
        lock = " FOR UPDATE" if self._dialect == "postgresql" else ""
        for name, kind in ERASED_TABLES.items():
            table = kind.table
            if column not in table.c:
                continue
            records = self._select(
                kind,
                f"{column} = {self._mark} ORDER BY id LIMIT {int(limit)}{lock}",
                (value,),
            )
            erased[name] = len(records)
            if records:
                self._delete(kind, records, f"{column} = {self._mark}", (value,))
        return ErasedCounts(**erased)

    def expire(self, kind: str, before: datetime, limit: int) -> int | None:
        """Delete up to `limit` rows of `kind` ("interactions", "feedback" with its replaced
        votes, or "events") whose time (the one their rollups bucket by) is before `before`,
        out of the rollups with them; how many. None on PostgreSQL when another transaction
        is expiring the kind: one at a time, whichever replica runs it.

        Oldest first, and on PostgreSQL skipping rows other transactions hold (a vote being
        replaced), so expiry never waits for a writer.
        """
        if self._dialect == "postgresql":
            claimed = self._execute(
                "SELECT pg_try_advisory_xact_lock(%s, %s)",
                (RETENTION_LOCK_SPACE, EXPIRED_KINDS.index(kind) + 1),
            )
            if not next(iter(claimed))[0]:
                return None
        lock = " FOR UPDATE SKIP LOCKED" if self._dialect == "postgresql" else ""
        cutoff = CODECS[self._dialect].encode_time(before)
        expired = 0
        for row_kind in EXPIRED_TABLES[kind]:
            column = id_blocks.TIME_COLUMNS.get(row_kind.table.name, "create_time")
            records = self._select(
                row_kind,
                f"{column} < {self._mark} ORDER BY {column} LIMIT {int(limit)}{lock}",
                (cutoff,),
            )
            if records:
                self._delete(row_kind, records, f"{column} < {self._mark}", (cutoff,))
                expired += len(records)
        return expired

    def _delete(
        self,
        kind: RowKind[Any],
        records: Sequence[Any],
        condition: str,
        parameters: tuple[Any, ...],
    ) -> None:
        """Delete the rows of `records`, which all meet `condition` (so an index finds them:
        feedback_history has none on id), and take them out of the rollups.

        A vote's id is in its history once (a vote is replaced once), so ids name rows in either
        table.
        """
        ids = tuple(record.id for record in records)
        self._execute(
            f"DELETE FROM {kind.table.name} WHERE {condition} AND id IN ({self._marks(ids)})",
            (*parameters, *ids),
        )
        if kind.rollup_kind is not None:
            self._rollups.add(kind.rollup_kind, records, -1)

    def subject_rows(
        self, table: str, column: str, value: str, after_id: int, limit: int
    ) -> list[Any]:
        """Up to `limit` records of `table` (an ErasedCounts field) whose `column` is `value`,
        in id order after `after_id`: a user's data, chunk by chunk."""
        kind = ERASED_TABLES[table]
        return self._select(
            kind,
            f"{column} = {self._mark} AND id > {self._mark} ORDER BY id LIMIT {int(limit)}",
            (value, after_id),
        )

    def running_erasures(self) -> frozenset[tuple[str, str]]:
        """(subject kind, subject hash) of every erasure under way, whose subjects' writes are
        refused (see server.service.erasure); read once per transaction, behind the gate."""
        if self._running_erasures is None:
            self._pass_gate()
            found = self._execute(
                "SELECT subject_kind, subject_hash FROM erasures WHERE finish_time IS NULL", ()
            )
            self._running_erasures = frozenset((kind, digest) for kind, digest in found)
        return self._running_erasures

    def opted_out(self, user_hashes: Collection[str]) -> frozenset[str]:
        """Which of the user hashes belong to users who opted out (behind the gate)."""
        if not user_hashes:
            return frozenset()
        self._pass_gate()
        keys = tuple(user_hashes)
        found = self._execute(
            f"SELECT user_hash FROM opt_outs WHERE user_hash IN ({self._marks(keys)})", keys
        )
        return frozenset(digest for (digest,) in found)

    def _pass_gate(self) -> None:
        """Take the shared side of the erasure gate for the rest of the transaction (PostgreSQL).

        Erasures and opt-outs change under its exclusive side (storage.rows.erasure_log
        .close_gate), so they wait for every write transaction that read them before, and every
        later one sees them: READ COMMITTED takes a snapshot per statement, and the reads come
        after this one.
        """
        if self._dialect == "postgresql" and not self._gate_passed:
            self._execute("SELECT pg_advisory_xact_lock_shared(%s, 0)", (ERASURE_LOCK_SPACE,))
            self._gate_passed = True

    def insert_history(self, replaced: Sequence[FeedbackRecord]) -> None:
        """Keep replaced votes, with when and by which vote, in feedback_history."""
        if replaced:
            table = HISTORY.table
            insert_returning_ids(self._execute, self._dialect, table, HISTORY.getters, replaced)

    def feedback_history(self, message_id: str, user_id: str, limit: int) -> list[FeedbackRecord]:
        """A user's votes on a message, oldest first: the newest `limit` of them."""
        found: list[FeedbackRecord] = []
        for kind in (HISTORY, FEEDBACK):
            found += self._select(
                kind,
                f"message_id = {self._mark} AND user_id = {self._mark}"
                f" ORDER BY id DESC LIMIT {int(limit)}",
                (message_id, user_id),
            )
        return sorted(found, key=lambda record: record.id)[-limit:]

    def _insert(self, kind: RowKind[StoredRecord], news: Sequence[Any]) -> list[StoredRecord]:
        """Insert new records of `kind` now (not at commit); their stored records, in order."""
        if not news:
            return []
        ids = insert_returning_ids(self._execute, self._dialect, kind.table, kind.getters, news)
        records = stored_records(kind.record_type, news, ids)
        time_column = id_blocks.TIME_COLUMNS.get(kind.table.name)
        if time_column is not None:
            times = attrgetter(time_column)
            self._blocks.add(kind.table.name, ((record.id, times(record)) for record in records))
        if kind.rollup_kind is not None:
            self._rollups.add(kind.rollup_kind, records, 1)
        if kind.table.name in WATCHED_KINDS:
            self._changes.add(kind.table.name, ids)
        return records

    def _rows_where(
        self, kind: RowKind[StoredRecord], column: str, values: Collection[str]
    ) -> list[StoredRecord]:
        """Rows whose `column` is any of `values`, decoded (one query; none for no values)."""
        if not values:
            return []
        keys = tuple(values)
        return self._select(kind, f"{column} IN ({self._marks(keys)})", keys)

    def _select(
        self, kind: RowKind[StoredRecord], condition: str, parameters: tuple[Any, ...]
    ) -> list[StoredRecord]:
        """The records of the rows of `kind` meeting `condition` (driver SQL)."""
        codec = table_codec(kind.table, self._dialect)
        sql = f"SELECT {', '.join(codec.columns)} FROM {kind.table.name} WHERE {condition}"
        return [kind.from_row(codec.decoded(row)) for row in self._execute(sql, parameters)]

    def _marks(self, values: tuple[Any, ...]) -> str:
        return ", ".join([self._mark] * len(values))


class Repository(Rows):
    """Rows, lists and API keys through one session; the caller (Storage) owns the transaction."""

    def __init__(self, session: Session) -> None:
        """Work inside `session`, whose transaction the caller begins and ends."""
        connection = session.connection()
        dialect: Dialect = "sqlite" if connection.dialect.name == "sqlite" else "postgresql"
        super().__init__(executors.on_connection(connection), dialect)
        self.session = session
        """The unit's session, for SQL this class does not offer (tests' full scans)."""
        self.api_keys = ApiKeys(session)
        """The API key tables, in the same transaction."""
        self.erasures = ErasureLog(session, dialect)
        """The erasure log, in the same transaction."""
        self.opt_outs = OptOuts(session)
        """The opted-out users, in the same transaction."""
        self.changes = ChangeLog(session)
        """The change log, in the same transaction."""

    # Lists and exports (storage.rows.listing)

    def feedback_entries(self, selection: FeedbackFilter, keyset: Keyset) -> list[FeedbackEntry]:
        """One keyset page of feedback."""
        return listing_queries.feedback_entries(self.session, selection, keyset)

    def interaction_entries(
        self, selection: InteractionFilter, keyset: Keyset
    ) -> list[InteractionEntry]:
        """One keyset page of interactions."""
        return listing_queries.interaction_entries(self.session, selection, keyset)

    def event_entries(self, selection: EventFilter, keyset: Keyset) -> list[EventEntry]:
        """One keyset page of analytics events."""
        return listing_queries.event_entries(self.session, selection, keyset)

    # The live tail (storage.rows.changes)

    def change_state(self) -> LogState:
        """The change log's clock and horizons."""
        return self.changes.state()

    def changes_after(self, seq: int, through: int, limit: int) -> list[ChangeEntry]:
        """Up to `limit` change log entries numbered in (seq, through], in commit order."""
        return self.changes.entries_after(seq, through, limit)

    def first_change_after_id(self, kind: str, row_id: int) -> int | None:
        """The number of the oldest change log entry of `kind` with an id above `row_id`."""
        return self.changes.first_after_id(kind, row_id)

    def entries_by_ids(self, kind: str, ids: Sequence[int]) -> list[Any]:
        """The still stored rows of `kind` among ascending `ids`, as list entries in id order."""
        return listing_queries.entries_by_ids(self.session, kind, ids)


VOTE_LOCK_SPACE = int.from_bytes(b"vote")
"""The first key of the vote claims (pg_advisory_xact_lock's two-key space); the second is a
voter's bucket, or 0 for the claim on all votes."""
MAX_VOTE_CLAIMS = 64
"""Buckets a transaction claims one by one; more, and it claims all votes at once."""


def vote_bucket(voter: Vote) -> int:
    """The voter's claim bucket, 1 to 2^31 - 1, the same in every process (unlike hash())."""
    message_id, user_id = voter
    digest = hashlib.blake2b(f"{message_id}\0{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest) % (2**31 - 1) + 1


def votes_by_voter(records: Iterable[FeedbackRecord]) -> dict[Vote, FeedbackRecord]:
    """Votes (feedback naming both a message and a user) by (message, user)."""
    return {
        (record.message_id, record.user_id): record
        for record in records
        if record.message_id is not None and record.user_id is not None
    }


def _rating_columns(rating: Rating) -> tuple[str, int | None, bool | None, str | None]:
    """(rating_kind, score, thumb_up, label) with only the kind's own column set."""
    match rating:
        case Score(value=value):
            return "score", value, None, None
        case Thumb(up=up):
            return "thumb", None, up, None
        case Label(name=name):
            return "label", None, None, name
        case _:
            assert_never(rating)


def stored_records(
    record_type: type[StoredRecord], news: Sequence[object], ids: Sequence[int]
) -> list[StoredRecord]:
    """Records of just-inserted rows: the values inserted plus the ids the database gave."""
    names = _inserted_fields(record_type)
    return [
        record_type(id=row_id, **{name: getattr(new, name) for name in names})
        for new, row_id in zip(news, ids, strict=True)
    ]


_INSERTED_FIELDS: dict[type, tuple[str, ...]] = {}


def _inserted_fields(record_type: type) -> tuple[str, ...]:
    """The fields a record inherits from its New* base: what was inserted (cached)."""
    names = _INSERTED_FIELDS.get(record_type)
    if names is None:
        names = tuple(field.name for field in fields(record_type.__bases__[0]))
        _INSERTED_FIELDS[record_type] = names
    return names


def _rating(row: Mapping[str, Any]) -> Rating:
    """The rating a row's kind column selects; the CHECK constraint guarantees its column is set."""
    kind, score, thumb_up, label = row["rating_kind"], row["score"], row["thumb_up"], row["label"]
    if kind == "score" and score is not None:
        return Score(score)
    if kind == "thumb" and thumb_up is not None:
        return Thumb(bool(thumb_up))
    if kind == "label" and label is not None:
        return Label(label)
    raise ValueError(f"feedback {row['id']} has an inconsistent rating of kind {kind!r}")


def _rating_kind(new: NewFeedback) -> str:
    match new.rating:
        case Score():
            return "score"
        case Thumb():
            return "thumb"
        case Label():
            return "label"
        case _:
            assert_never(new.rating)


def _score(new: NewFeedback) -> int | None:
    return new.rating.value if isinstance(new.rating, Score) else None


def _thumb_up(new: NewFeedback) -> bool | None:
    return new.rating.up if isinstance(new.rating, Thumb) else None


def _label(new: NewFeedback) -> str | None:
    return new.rating.name if isinstance(new.rating, Label) else None


_RATING_COLUMNS: dict[str, Getter] = {
    "rating_kind": _rating_kind,
    "score": _score,
    "thumb_up": _thumb_up,
    "label": _label,
}
"""A rating in the column of its kind, the other two NULL (the table's CHECK constraint)."""

INTERACTIONS: RowKind[InteractionRecord] = RowKind(
    InteractionRow, InteractionRecord, aggregates.INTERACTIONS
)
FEEDBACK: RowKind[FeedbackRecord] = RowKind(
    FeedbackRow,
    FeedbackRecord,
    aggregates.FEEDBACK,
    column_values=_RATING_COLUMNS,
    field_values={"rating": _rating},
)
HISTORY: RowKind[FeedbackRecord] = RowKind(
    FeedbackHistoryRow,
    FeedbackRecord,
    None,
    column_values=_RATING_COLUMNS,
    field_values={"rating": _rating},
)
"""Replaced votes: kept for history and idempotent replays, counted in no rollup."""
EVENTS: RowKind[EventRecord] = RowKind(EventRow, EventRecord, aggregates.EVENTS)

ERASED_TABLES: Mapping[str, RowKind[Any]] = {
    "feedback": FEEDBACK,
    "history": HISTORY,
    "interactions": INTERACTIONS,
    "events": EVENTS,
}
"""The tables an erasure deletes from, by their ErasedCounts field, in deletion order."""
EXPIRED_KINDS = ("interactions", "feedback", "events")
EXPIRED_TABLES: Mapping[str, tuple[RowKind[Any], ...]] = {
    "interactions": (INTERACTIONS,),
    "feedback": (FEEDBACK, HISTORY),
    "events": (EVENTS,),
}
"""What retention deletes per kind: a kind's replaced votes expire with its current ones (by the
time each vote was given)."""
RETENTION_LOCK_SPACE = int.from_bytes(b"rtnt")
"""The first key of the retention claims (pg_try_advisory_xact_lock), the second a kind's place
in EXPIRED_KINDS plus one."""
