"""Records for tests: valid defaults, so each test spells out only what it is about."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from storage.aggregates.sql import SqlTarget
from storage.aggregates.write import RollupChanges
from storage.records import (
    EventEntry,
    EventRecord,
    FeedbackEntry,
    FeedbackRecord,
    InteractionEntry,
    InteractionRecord,
    Label,
    NewEvent,
    NewFeedback,
    NewInteraction,
    RatingKind,
    Score,
    Thumb,
)
from storage.rows import executors
from storage.rows.repository import EVENTS, FEEDBACK, INTERACTIONS, RowKind
from storage.rows.row_codec import Dialect
from storage.schema.models import EventRow

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from _typeshed import DataclassInstance

    from storage import Repository

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
"""A fixed instant with microseconds, so precision loss shows."""

StoredRecord = TypeVar("StoredRecord")
RowRecord = TypeVar("RowRecord", InteractionRecord, FeedbackRecord, EventRecord)


def minutes(count: float) -> datetime:
    """T0 plus `count` minutes."""
    return T0 + timedelta(minutes=count)


def new_interaction(**changes: Any) -> NewInteraction:
    """A minimal valid interaction with `changes` applied."""
    return replace(
        NewInteraction(conversation_id="conv-1", occur_time=T0, create_time=T0), **changes
    )


def new_feedback(**changes: Any) -> NewFeedback:
    """A minimal valid feedback entry (score 3 on conv-1) with `changes` applied."""
    return replace(
        NewFeedback(conversation_id="conv-1", rating=Score(3), create_time=T0), **changes
    )


def new_event(**changes: Any) -> NewEvent:
    """A minimal valid analytics event with `changes` applied."""
    return replace(
        NewEvent(user_id="user-1", event_type="page_view", event_time=T0, receive_time=T0),
        **changes,
    )


def stored(
    new: DataclassInstance, record_type: Callable[..., StoredRecord], record_id: int
) -> StoredRecord:
    """The record a store of `new` should give back under `id`: every field unchanged."""
    values = {field.name: getattr(new, field.name) for field in fields(new)}
    return record_type(id=record_id, **values)


def insert_interaction(repository: Repository, new: NewInteraction) -> InteractionRecord:
    """Store one chat turn through the batch insert; Conflict if its message_id is taken."""
    return repository.insert_interactions([new])[0]


def insert_feedback(repository: Repository, new: NewFeedback) -> FeedbackRecord:
    """Store one feedback entry through the batch insert."""
    return repository.insert_feedback_entries([new])[0]


def insert_event(repository: Repository, new: NewEvent) -> EventRecord:
    """Store one analytics event through the batch insert."""
    return repository.insert_events([new])[0]


def interaction_by_message(repository: Repository, message_id: str) -> InteractionRecord | None:
    """The interaction recorded for a message id, through the batch lookup."""
    return repository.interactions_by_messages({message_id}).get(message_id)


def latest_interaction(repository: Repository, conversation_id: str) -> InteractionRecord | None:
    """The conversation's most recent interaction, through the batch lookup."""
    return repository.latest_interactions({conversation_id}).get(conversation_id)


def delete_interactions(repository: Repository, ids: Collection[int]) -> list[InteractionRecord]:
    """Delete interactions by id, their rollups with them; feedback on them stays, unlinked."""
    return _delete(repository, INTERACTIONS, ids)


def delete_feedback(repository: Repository, ids: Collection[int]) -> list[FeedbackRecord]:
    """Delete feedback entries by id, their rollups with them; unknown ids are ignored."""
    return _delete(repository, FEEDBACK, ids)


def delete_events(repository: Repository, ids: Collection[int]) -> list[EventRecord]:
    """Delete analytics events by id, their rollups with them; unknown ids are ignored."""
    return _delete(repository, EVENTS, ids)


def _delete(
    repository: Repository, kind: RowKind[RowRecord], ids: Collection[int]
) -> list[RowRecord]:
    """Rows go and their contributions leave the rollups, in the unit's transaction: what an
    operator's manual removal followed by the rollups' own bookkeeping would leave."""
    table = kind.table
    session = repository.session
    found = session.execute(select(table).where(table.c.id.in_(list(ids))))
    records = [kind.from_row(dict(row._mapping)) for row in found]
    if records:
        session.execute(table.delete().where(table.c.id.in_([record.id for record in records])))
        assert kind.rollup_kind is not None
        changes = RollupChanges()
        changes.add(kind.rollup_kind, records, -1)
        connection = session.connection()
        dialect: Dialect = "sqlite" if connection.dialect.name == "sqlite" else "postgresql"
        changes.apply(SqlTarget(executors.on_connection(connection), dialect))
    return records


def stored_events(database_url: str) -> list[EventRecord]:
    """Every stored event, read past the Repository (which has no event reader) via the models."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with Session(engine) as session:
            return [
                EventRecord(
                    id=row.id,
                    user_id=row.user_id,
                    event_type=row.event_type,
                    details=row.details,
                    event_time=row.event_time,
                    receive_time=row.receive_time,
                    event_id=row.event_id,
                    request_id=row.request_id,
                    request_digest=row.request_digest,
                    redactions=row.redactions,
                )
                for row in session.scalars(select(EventRow).order_by(EventRow.id))
            ]
    finally:
        engine.dispose()


def feedback_entry(record: FeedbackRecord) -> FeedbackEntry:
    """The entry a list should read back for a stored feedback record."""
    rating = record.rating
    return FeedbackEntry(
        id=record.id,
        conversation_id=record.conversation_id,
        message_id=record.message_id,
        user_id=record.user_id,
        interaction_id=record.interaction_id,
        model=record.model,
        rating_kind=_RATING_KINDS[type(rating)],
        score=rating.value if isinstance(rating, Score) else None,
        thumb_up=rating.up if isinstance(rating, Thumb) else None,
        label=rating.name if isinstance(rating, Label) else None,
        text=record.text,
        latency_ms=record.latency_ms,
        tokens_used=record.tokens_used,
        input_hash=record.input_hash,
        output_hash=record.output_hash,
        metadata=record.metadata,
        create_time=record.create_time,
        replaces_id=record.replaces_id,
        input_hash_kind=record.input_hash_kind,
        output_hash_kind=record.output_hash_kind,
        redactions=record.redactions,
    )


_RATING_KINDS: dict[type, RatingKind] = {Score: "score", Thumb: "thumb", Label: "label"}


def interaction_entry(record: InteractionRecord) -> InteractionEntry:
    """The entry a list should read back for a stored interaction."""
    return InteractionEntry(**{name: getattr(record, name) for name in InteractionEntry._fields})


def event_entry(record: EventRecord) -> EventEntry:
    """The entry a list should read back for a stored event."""
    return EventEntry(**{name: getattr(record, name) for name in EventEntry._fields})
