"""Records for tests: valid defaults, so each test spells out only what it is about."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

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
from storage.schema.models import EventRow

if TYPE_CHECKING:
    from collections.abc import Callable

    from _typeshed import DataclassInstance

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
"""A fixed instant with microseconds, so precision loss shows."""

StoredRecord = TypeVar("StoredRecord")


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
    )


_RATING_KINDS: dict[type, RatingKind] = {Score: "score", Thumb: "thumb", Label: "label"}


def interaction_entry(record: InteractionRecord) -> InteractionEntry:
    """The entry a list should read back for a stored interaction."""
    return InteractionEntry(**{name: getattr(record, name) for name in InteractionEntry._fields})


def event_entry(record: EventRecord) -> EventEntry:
    """The entry a list should read back for a stored event."""
    return EventEntry(**{name: getattr(record, name) for name in EventEntry._fields})
