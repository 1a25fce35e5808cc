"""Repository: the queries and inserts of one unit of work, speaking records instead of rows."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, assert_never

from sqlalchemy import (
    Column,
    ColumnElement,
    RowMapping,
    bindparam,
    case,
    func,
    insert,
    inspect,
    select,
    text,
)

from storage.aggregates import rollups
from storage.error_translation import translated_errors
from storage.records import (
    EventEntry,
    EventFilter,
    EventRecord,
    EventStats,
    FeedbackEntry,
    FeedbackFilter,
    FeedbackRecord,
    FeedbackStats,
    InteractionEntry,
    InteractionFilter,
    InteractionRecord,
    InteractionStats,
    Keyset,
    Label,
    NewEvent,
    NewFeedback,
    NewInteraction,
    Rating,
    Score,
    StatsFilter,
    Thumb,
)
from storage.rows import listing as listing_queries
from storage.rows.api_keys import ApiKeys
from storage.rows.sqlite_insert import insert_returning_ids
from storage.schema.models import Base, EventRow, FeedbackHistoryRow, FeedbackRow, InteractionRow

if TYPE_CHECKING:
    from sqlalchemy.orm import InstrumentedAttribute, Session

SCORE_VALUES = range(1, 6)
StoredRecord = TypeVar("StoredRecord", InteractionRecord, FeedbackRecord, EventRecord)


class BatchRepository(Protocol):
    """What group commit needs inside one write transaction: batched lookups and inserts."""

    def interactions_by_messages(
        self, message_ids: Collection[str]
    ) -> dict[str, InteractionRecord]: ...

    def latest_interactions(
        self, conversation_ids: Collection[str]
    ) -> dict[str, InteractionRecord]: ...

    def insert_interactions(self, news: Sequence[NewInteraction]) -> list[InteractionRecord]: ...

    def insert_feedback_entries(self, news: Sequence[NewFeedback]) -> list[FeedbackRecord]: ...

    def insert_events(self, news: Sequence[NewEvent]) -> list[EventRecord]: ...

    def interactions_by_requests(
        self, request_ids: Collection[str]
    ) -> dict[str, InteractionRecord]: ...

    def feedback_by_requests(self, request_ids: Collection[str]) -> dict[str, FeedbackRecord]: ...

    def events_by_requests(self, request_ids: Collection[str]) -> dict[str, EventRecord]: ...

    def events_by_event_ids(self, event_ids: Collection[str]) -> dict[str, EventRecord]: ...

    def current_votes(self, voters: Collection[Vote]) -> dict[Vote, FeedbackRecord]: ...

    def retire_votes(self, votes: Sequence[FeedbackRecord]) -> None: ...

    def insert_history(self, replaced: Sequence[FeedbackRecord]) -> None: ...


Vote = tuple[str, str]
"""(message_id, user_id): whose vote on which message; one current vote each."""


class Repository:
    """Reads and writes through one session; the caller (Storage) owns the transaction.

    A Conflict raised by an insert ends the unit of work: the database has already rolled the
    transaction back, so look the existing row up in a new unit.
    """

    def __init__(self, session: Session) -> None:
        """Work inside `session`, whose transaction the caller begins and ends."""
        self._session = session
        self.api_keys = ApiKeys(session)
        """The API key tables, in the same transaction."""
        self._rollups = rollups.RollupChanges()

    def apply_rollups(self) -> None:
        """Write the unit's rollup changes; the caller runs this last, just before committing,
        so every transaction locks rollup rows after its raw rows (see rollups.RollupChanges)."""
        self._rollups.apply(self._rollup_target())

    # Interactions

    def interaction_by_message(self, message_id: str) -> InteractionRecord | None:
        """The interaction recorded for a message id, to link feedback to it."""
        return self.interactions_by_messages({message_id}).get(message_id)

    def latest_interaction(self, conversation_id: str) -> InteractionRecord | None:
        """The conversation's most recent interaction (highest id), for conversation feedback."""
        return self.latest_interactions({conversation_id}).get(conversation_id)

    def interactions_by_messages(
        self, message_ids: Collection[str]
    ) -> dict[str, InteractionRecord]:
        """The interactions recorded for any of the message ids, by message id (one query)."""
        if not message_ids:
            return {}
        rows = self._session.execute(_BY_MESSAGES, {"ids": list(message_ids)})
        records = (interaction_from_row(row._mapping) for row in rows)
        return {record.message_id: record for record in records if record.message_id is not None}

    def latest_interactions(
        self, conversation_ids: Collection[str]
    ) -> dict[str, InteractionRecord]:
        """Each conversation's most recent interaction, by conversation id (one query)."""
        if not conversation_ids:
            return {}
        rows = self._session.execute(_LATEST_IN_CONVERSATIONS, {"ids": list(conversation_ids)})
        records = (interaction_from_row(row._mapping) for row in rows)
        return {record.conversation_id: record for record in records}

    def insert_interaction(self, new: NewInteraction) -> InteractionRecord:
        """Store a chat turn; raises Conflict if its message_id is already recorded."""
        return self.insert_interactions([new])[0]

    def insert_interactions(self, news: Sequence[NewInteraction]) -> list[InteractionRecord]:
        """Store chat turns in one statement; raises Conflict if a message_id is taken."""
        ids = self._insert_many(InteractionRow, [interaction_row(new) for new in news])
        records = stored_records(InteractionRecord, news, ids)
        self._rollups.add(rollups.INTERACTION_KIND, records, 1)
        return records

    def interaction_stats(self, stats_filter: StatsFilter) -> InteractionStats:
        """Count and averages of interactions, by occur_time, in one query."""
        conditions = _scope(
            stats_filter,
            conversation_id=InteractionRow.conversation_id,
            user_id=InteractionRow.user_id,
            message_id=InteractionRow.message_id,
            time=InteractionRow.occur_time,
        )
        total, latency_count, latency_sum, tokens_count, tokens_sum = self._session.execute(
            select(
                func.count(),
                func.count(InteractionRow.latency_ms),
                func.sum(InteractionRow.latency_ms),
                func.count(InteractionRow.total_tokens),
                func.sum(InteractionRow.total_tokens),
            ).where(*conditions)
        ).one()
        return InteractionStats(
            total_count=total,
            avg_latency_ms=_average(latency_sum, latency_count),
            avg_total_tokens=_average(tokens_sum, tokens_count),
        )

    # Feedback

    def insert_feedback(self, new: NewFeedback) -> FeedbackRecord:
        """Store a feedback entry with its rating in the column of the rating's kind."""
        return self.insert_feedback_entries([new])[0]

    def insert_feedback_entries(self, news: Sequence[NewFeedback]) -> list[FeedbackRecord]:
        """Store feedback entries in one statement."""
        ids = self._insert_many(FeedbackRow, [feedback_row(new) for new in news])
        records = stored_records(FeedbackRecord, news, ids)
        self._rollups.add(rollups.FEEDBACK_KIND, records, 1)
        return records

    def feedback_stats(self, stats_filter: StatsFilter) -> FeedbackStats:
        """Counts per rating and averages of feedback, by create_time.

        One grouped query, so every figure comes from one snapshot even under PostgreSQL's
        READ COMMITTED; the groups are few (kinds x scores, thumbs, distinct labels).
        """
        conditions = _scope(
            stats_filter,
            conversation_id=FeedbackRow.conversation_id,
            user_id=FeedbackRow.user_id,
            message_id=FeedbackRow.message_id,
            time=FeedbackRow.create_time,
        )
        groups = self._session.execute(
            select(
                FeedbackRow.rating_kind,
                FeedbackRow.score,
                FeedbackRow.thumb_up,
                FeedbackRow.label,
                func.count(),
                func.count(FeedbackRow.latency_ms),
                func.sum(FeedbackRow.latency_ms),
                func.count(FeedbackRow.tokens_used),
                func.sum(FeedbackRow.tokens_used),
                # Empty text carries no feedback; CASE yields NULL, which count() skips.
                func.count(case((FeedbackRow.text != "", 1))),
            )
            .where(*conditions)
            .group_by(
                FeedbackRow.rating_kind,
                FeedbackRow.score,
                FeedbackRow.thumb_up,
                FeedbackRow.label,
            )
        ).all()
        score_counts: dict[int, int] = dict.fromkeys(SCORE_VALUES, 0)
        label_counts: Counter[str] = Counter()
        thumbs = {True: 0, False: 0}
        latency_sums: list[float] = []
        total = latency_count = tokens_count = tokens_sum = with_text = 0
        for (
            kind,
            score,
            thumb_up,
            label,
            count,
            group_latency_count,
            group_latency_sum,
            group_tokens_count,
            group_tokens_sum,
            group_with_text,
        ) in groups:
            total += count
            latency_count += group_latency_count
            latency_sums.append(group_latency_sum or 0.0)
            tokens_count += group_tokens_count
            tokens_sum += group_tokens_sum or 0
            with_text += group_with_text
            # The CHECK constraint guarantees the kind's own column is set.
            if kind == "score" and score is not None:
                score_counts[score] += count
            elif kind == "thumb" and thumb_up is not None:
                thumbs[thumb_up] += count
            elif kind == "label" and label is not None:
                label_counts[label] += count
        scored = sum(score_counts.values())
        return FeedbackStats(
            total_count=total,
            scored_count=scored,
            # Computed from the exact integer counts rather than SQL avg(), whose type and
            # rounding differ between databases.
            avg_score=_average(sum(value * count for value, count in score_counts.items()), scored),
            score_counts=score_counts,
            thumbs_up_count=thumbs[True],
            thumbs_down_count=thumbs[False],
            label_counts=dict(label_counts),
            avg_latency_ms=_average(math.fsum(latency_sums), latency_count),
            avg_tokens=_average(tokens_sum, tokens_count),
            with_text_count=with_text,
        )

    # Lists and exports (storage.rows.listing)

    def feedback_entries(self, selection: FeedbackFilter, keyset: Keyset) -> list[FeedbackEntry]:
        """One keyset page of feedback."""
        return listing_queries.feedback_entries(self._session, selection, keyset)

    def interaction_entries(
        self, selection: InteractionFilter, keyset: Keyset
    ) -> list[InteractionEntry]:
        """One keyset page of interactions."""
        return listing_queries.interaction_entries(self._session, selection, keyset)

    def event_entries(self, selection: EventFilter, keyset: Keyset) -> list[EventEntry]:
        """One keyset page of analytics events."""
        return listing_queries.event_entries(self._session, selection, keyset)

    # Events

    def insert_event(self, new: NewEvent) -> EventRecord:
        """Store an analytics event."""
        return self.insert_events([new])[0]

    def insert_events(self, news: Sequence[NewEvent]) -> list[EventRecord]:
        """Store analytics events in one statement."""
        ids = self._insert_many(EventRow, [event_row(new) for new in news])
        records = stored_records(EventRecord, news, ids)
        self._rollups.add(rollups.EVENT_KIND, records, 1)
        return records

    # Idempotency and votes (group commit; see server.service.write_rules)

    def interactions_by_requests(
        self, request_ids: Collection[str]
    ) -> dict[str, InteractionRecord]:
        """The interactions stored by any of the request ids, by request id (one query)."""
        records = self._rows_where(_INTERACTIONS.c.request_id, request_ids, interaction_from_row)
        return {record.request_id or "": record for record in records}

    def feedback_by_requests(self, request_ids: Collection[str]) -> dict[str, FeedbackRecord]:
        """Current and replaced votes stored by any of the request ids, by request id."""
        found: dict[str, FeedbackRecord] = {}
        for column in (_HISTORY.c.request_id, _FEEDBACK.c.request_id):
            for record in self._rows_where(column, request_ids, feedback_from_row):
                found[record.request_id or ""] = record
        return found

    def events_by_requests(self, request_ids: Collection[str]) -> dict[str, EventRecord]:
        """The events stored by any of the request ids, by request id."""
        records = self._rows_where(_EVENTS.c.request_id, request_ids, event_from_row)
        return {record.request_id or "": record for record in records}

    def events_by_event_ids(self, event_ids: Collection[str]) -> dict[str, EventRecord]:
        """The events stored under any of the client event ids, by event id."""
        records = self._rows_where(_EVENTS.c.event_id, event_ids, event_from_row)
        return {record.event_id or "": record for record in records}

    def current_votes(self, voters: Collection[Vote]) -> dict[Vote, FeedbackRecord]:
        """The current vote of each of the voters that has one, by (message, user).

        On PostgreSQL the voters are first claimed for the rest of the transaction (see
        _claim_voters), so a transaction replacing the same user's vote on another replica
        waits for this one, and then finds the vote this one stores as current.
        """
        if not voters:
            return {}
        if self._session.get_bind().dialect.name == "postgresql":
            self._claim_voters(voters)
        messages = {message_id for message_id, _ in voters}
        found = votes_by_voter(
            self._rows_where(_FEEDBACK.c.message_id, messages, feedback_from_row)
        )
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
            self._session.execute(_CLAIM_ALL_VOTES, {"space": VOTE_LOCK_SPACE})
            return
        self._session.execute(_SHARE_ALL_VOTES, {"space": VOTE_LOCK_SPACE})
        self._session.execute(_CLAIM_VOTE_BUCKETS, {"space": VOTE_LOCK_SPACE, "buckets": buckets})

    def retire_votes(self, votes: Sequence[FeedbackRecord]) -> None:
        """Delete replaced votes from the feedback table and take them out of the rollups.

        On PostgreSQL the rows are locked in id order first: a DELETE locks in the order its plan
        visits rows, which need not be the same for two transactions.
        """
        if votes:
            ids = sorted(vote.id for vote in votes)
            if self._session.get_bind().dialect.name == "postgresql":
                self._session.execute(_LOCK_VOTES, {"ids": ids})
            self._session.execute(_FEEDBACK.delete().where(_FEEDBACK.c.id.in_(ids)))
            self._rollups.add(rollups.FEEDBACK_KIND, votes, -1)

    def insert_history(self, replaced: Sequence[FeedbackRecord]) -> None:
        """Keep replaced votes, with when and by which vote, in feedback_history."""
        self._insert_many(FeedbackHistoryRow, [history_row(record) for record in replaced])

    def feedback_history(self, message_id: str, user_id: str, limit: int) -> list[FeedbackRecord]:
        """A user's votes on a message, oldest first: the newest `limit` of them."""
        found: list[FeedbackRecord] = []
        for table in (_HISTORY, _FEEDBACK):
            statement = (
                select(table)
                .where(table.c.message_id == message_id, table.c.user_id == user_id)
                .order_by(table.c.id.desc())
                .limit(limit)
            )
            found += (feedback_from_row(row._mapping) for row in self._session.execute(statement))
        return sorted(found, key=lambda record: record.id)[-limit:]

    def _rows_where(
        self,
        column: Column[Any],
        values: Collection[object],
        decode: Callable[[RowMapping], StoredRecord],
    ) -> list[StoredRecord]:
        """Rows whose `column` is any of `values`, decoded (one query; none for no values)."""
        if not values:
            return []
        statement = select(column.table).where(column.in_(list(values)), column.is_not(None))
        return [decode(row._mapping) for row in self._session.execute(statement)]

    def event_stats(self, stats_filter: StatsFilter) -> EventStats:
        """Event counts per type, by event_time, in one query.

        Events carry neither conversation nor message, so a filter on either is a caller bug
        (ValueError) rather than a silently ignored condition.
        """
        if stats_filter.conversation_id is not None or stats_filter.message_id is not None:
            raise ValueError("events can only be filtered by user_id and time")
        conditions = _scope(
            stats_filter,
            conversation_id=None,
            user_id=EventRow.user_id,
            message_id=None,
            time=EventRow.event_time,
        )
        type_counts = {
            event_type: count
            for event_type, count in self._session.execute(
                select(EventRow.event_type, func.count())
                .where(*conditions)
                .group_by(EventRow.event_type)
            )
        }
        return EventStats(total_count=sum(type_counts.values()), type_counts=type_counts)

    def _insert_many(self, model: type[Base], rows: list[dict[str, Any]]) -> list[int]:
        """Insert rows now (not at commit) with one multi-row INSERT ... RETURNING id.

        The ids come back in the order of `rows`; a Conflict surfaces here, not at commit.
        """
        if not rows:
            return []
        if self._session.get_bind().dialect.name == "sqlite":
            connection = self._session.connection()
            with translated_errors():
                return insert_returning_ids(connection.exec_driver_sql, inspect(model), rows)
        statement = insert(model).returning(model.id, sort_by_parameter_order=True)  # type: ignore[attr-defined]
        with translated_errors():
            return list(self._session.scalars(statement, rows))

    # Deletions: rows go and their contributions leave the rollups in the same transaction.

    def delete_interactions(self, ids: Collection[int]) -> list[InteractionRecord]:
        """Delete interactions by id and return what was deleted; unknown ids are ignored.

        Feedback on them stays (unlinked: interaction_id becomes NULL), its rollups unchanged.
        """
        table = InteractionRow.__table__
        rows = self._session.execute(select(table).where(table.c.id.in_(list(ids))))
        records = [interaction_from_row(row._mapping) for row in rows]
        self._delete_rows(InteractionRow, records)
        self._rollups.add(rollups.INTERACTION_KIND, records, -1)
        return records

    def delete_feedback(self, ids: Collection[int]) -> list[FeedbackRecord]:
        """Delete feedback entries by id and return what was deleted; unknown ids are ignored."""
        records = self._rows_where(_FEEDBACK.c.id, ids, feedback_from_row)
        self._delete_rows(FeedbackRow, records)
        self._rollups.add(rollups.FEEDBACK_KIND, records, -1)
        return records

    def delete_events(self, ids: Collection[int]) -> list[EventRecord]:
        """Delete analytics events by id and return what was deleted; unknown ids are ignored."""
        records = self._rows_where(_EVENTS.c.id, ids, event_from_row)
        self._delete_rows(EventRow, records)
        self._rollups.add(rollups.EVENT_KIND, records, -1)
        return records

    def _delete_rows(
        self, model: type[Base], records: Sequence[InteractionRecord | FeedbackRecord | EventRecord]
    ) -> None:
        if records:
            table = model.__table__
            ids = [record.id for record in records]
            self._session.execute(table.delete().where(table.c.id.in_(ids)))  # type: ignore[attr-defined]
            # The ORM rows read above are stale now; nothing may flush them back.
            self._session.expunge_all()

    def _rollup_target(self) -> rollups.SqlTarget:
        """Rollup SQL on this unit's connection, inside its transaction."""
        connection = self._session.connection()

        def execute(sql: str, parameters: tuple[Any, ...]) -> Sequence[Any]:
            result = connection.exec_driver_sql(sql, parameters)
            return result.fetchall() if result.returns_rows else []

        sqlite = connection.dialect.name == "sqlite"
        return rollups.SqlTarget(execute, "sqlite" if sqlite else "postgresql")


def _scope(
    stats_filter: StatsFilter,
    *,
    conversation_id: InstrumentedAttribute[str] | InstrumentedAttribute[str | None] | None,
    user_id: InstrumentedAttribute[str] | InstrumentedAttribute[str | None],
    message_id: InstrumentedAttribute[str | None] | None,
    time: InstrumentedAttribute[datetime],
) -> list[ColumnElement[bool]]:
    """WHERE conditions for a stats filter: equality on ids, half-open [start, end) on time."""
    conditions: list[ColumnElement[bool]] = []
    if conversation_id is not None and stats_filter.conversation_id is not None:
        conditions.append(conversation_id == stats_filter.conversation_id)
    if stats_filter.user_id is not None:
        conditions.append(user_id == stats_filter.user_id)
    if message_id is not None and stats_filter.message_id is not None:
        conditions.append(message_id == stats_filter.message_id)
    if stats_filter.start_time is not None:
        conditions.append(time >= stats_filter.start_time)
    if stats_filter.end_time is not None:
        conditions.append(time < stats_filter.end_time)
    return conditions


def _average(total: float | None, count: int) -> float | None:
    """total / count, or None when no row carried the value (never NaN)."""
    if count == 0 or total is None:
        return None
    return float(total) / count


def _utc(moment: datetime) -> datetime:
    """The same instant with UTC as its zone, as every record carries."""
    return moment.astimezone(UTC)


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


def interaction_row(new: NewInteraction) -> dict[str, Any]:
    """Insert values of a chat turn, keyed by mapped attribute."""
    return {
        "conversation_id": new.conversation_id,
        "message_id": new.message_id,
        "user_id": new.user_id,
        "model": new.model,
        "input_hash": new.input_hash,
        "output_hash": new.output_hash,
        "latency_ms": new.latency_ms,
        "prompt_tokens": new.prompt_tokens,
        "completion_tokens": new.completion_tokens,
        "total_tokens": new.total_tokens,
        "metadata_": new.metadata,
        "occur_time": new.occur_time,
        "create_time": new.create_time,
        "request_id": new.request_id,
        "request_digest": new.request_digest,
    }


def feedback_row(new: NewFeedback) -> dict[str, Any]:
    """Insert values of a feedback entry, its rating in the column of the rating's kind."""
    kind, score, thumb_up, label = _rating_columns(new.rating)
    return {
        "conversation_id": new.conversation_id,
        "message_id": new.message_id,
        "user_id": new.user_id,
        "interaction_id": new.interaction_id,
        "model": new.model,
        "rating_kind": kind,
        "score": score,
        "thumb_up": thumb_up,
        "label": label,
        "text": new.text,
        "latency_ms": new.latency_ms,
        "tokens_used": new.tokens_used,
        "input_hash": new.input_hash,
        "output_hash": new.output_hash,
        "metadata_": new.metadata,
        "create_time": new.create_time,
        "request_id": new.request_id,
        "request_digest": new.request_digest,
        "replaces_id": new.replaces_id,
    }


def history_row(record: FeedbackRecord) -> dict[str, Any]:
    """Insert values of a replaced vote, keyed by mapped attribute."""
    return {
        **feedback_row(record),
        "id": record.id,
        "replace_time": record.replace_time,
        "replaced_by_id": record.replaced_by_id,
    }


def event_row(new: NewEvent) -> dict[str, Any]:
    """Insert values of an analytics event."""
    return {
        "user_id": new.user_id,
        "event_type": new.event_type,
        "details": new.details,
        "event_time": new.event_time,
        "receive_time": new.receive_time,
        "event_id": new.event_id,
        "request_id": new.request_id,
        "request_digest": new.request_digest,
    }


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


# Group commit runs these lookups for every batch: plain Core statements, built once, cost about
# a third of the ORM queries.
_INTERACTIONS = Base.metadata.tables["interactions"]
_FEEDBACK = Base.metadata.tables["feedback"]
_HISTORY = Base.metadata.tables["feedback_history"]
_EVENTS = Base.metadata.tables["events"]
_BY_MESSAGES = select(_INTERACTIONS).where(
    _INTERACTIONS.c.message_id.in_(bindparam("ids", expanding=True))
)
VOTE_LOCK_SPACE = int.from_bytes(b"vote")
"""The first key of the vote claims (pg_advisory_xact_lock's two-key space); the second is a
voter's bucket, or 0 for the claim on all votes."""
MAX_VOTE_CLAIMS = 64
"""Buckets a transaction claims one by one; more, and it claims all votes at once."""
_CLAIM_ALL_VOTES = text("SELECT pg_advisory_xact_lock(:space, 0)")
_SHARE_ALL_VOTES = text("SELECT pg_advisory_xact_lock_shared(:space, 0)")
# unnest returns the sorted buckets in array order, and each row's lock is taken in that order.
_CLAIM_VOTE_BUCKETS = text(
    "SELECT pg_advisory_xact_lock(:space, bucket)"
    " FROM unnest(CAST(:buckets AS integer[])) AS claimed(bucket)"
)
_LOCK_VOTES = (
    select(_FEEDBACK.c.id)
    .where(_FEEDBACK.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_FEEDBACK.c.id)
    .with_for_update()
)
_LATEST_IN_CONVERSATIONS = select(_INTERACTIONS).where(
    _INTERACTIONS.c.id.in_(
        select(func.max(_INTERACTIONS.c.id))
        .where(_INTERACTIONS.c.conversation_id.in_(bindparam("ids", expanding=True)))
        .group_by(_INTERACTIONS.c.conversation_id)
    )
)


def interaction_from_row(row: RowMapping | Mapping[str, Any]) -> InteractionRecord:
    """A record from a Core row of the interactions table (column names, typed values)."""
    return InteractionRecord(
        id=row["id"],
        conversation_id=row["conversation_id"],
        message_id=row["message_id"],
        user_id=row["user_id"],
        model=row["model"],
        input_hash=row["input_hash"],
        output_hash=row["output_hash"],
        latency_ms=row["latency_ms"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        total_tokens=row["total_tokens"],
        metadata=row["metadata"],
        occur_time=row["occur_time"],
        create_time=row["create_time"],
        request_id=row["request_id"],
        request_digest=row["request_digest"],
    )


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


def _rating(row: RowMapping | Mapping[str, Any]) -> Rating:
    """The rating a row's kind column selects; the CHECK constraint guarantees its column is set."""
    kind, score, thumb_up, label = row["rating_kind"], row["score"], row["thumb_up"], row["label"]
    if kind == "score" and score is not None:
        return Score(score)
    if kind == "thumb" and thumb_up is not None:
        return Thumb(bool(thumb_up))
    if kind == "label" and label is not None:
        return Label(label)
    raise ValueError(f"feedback {row['id']} has an inconsistent rating of kind {kind!r}")


def feedback_from_row(row: RowMapping | Mapping[str, Any]) -> FeedbackRecord:
    """A record from a row of the feedback or feedback_history table (column names, typed)."""
    return FeedbackRecord(
        id=row["id"],
        conversation_id=row["conversation_id"],
        message_id=row["message_id"],
        user_id=row["user_id"],
        interaction_id=row["interaction_id"],
        model=row["model"],
        rating=_rating(row),
        text=row["text"],
        latency_ms=row["latency_ms"],
        tokens_used=row["tokens_used"],
        input_hash=row["input_hash"],
        output_hash=row["output_hash"],
        metadata=row["metadata"],
        create_time=_utc(row["create_time"]),
        request_id=row["request_id"],
        request_digest=row["request_digest"],
        replaces_id=row["replaces_id"],
        replace_time=None if row.get("replace_time") is None else _utc(row["replace_time"]),
        replaced_by_id=row.get("replaced_by_id"),
    )


def event_from_row(row: RowMapping | Mapping[str, Any]) -> EventRecord:
    """A record from a row of the events table (column names, typed values)."""
    return EventRecord(
        id=row["id"],
        user_id=row["user_id"],
        event_type=row["event_type"],
        details=row["details"],
        event_time=_utc(row["event_time"]),
        receive_time=_utc(row["receive_time"]),
        event_id=row["event_id"],
        request_id=row["request_id"],
        request_digest=row["request_digest"],
    )
