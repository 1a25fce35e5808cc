"""Keyset pages of feedback, interactions and events, read as fast as exports need.

Every page is one indexed query: `id < cursor ORDER BY id DESC` (newest first) or
`id > cursor ORDER BY id ASC`, with the filters as equality or range conditions, so its cost
depends on the page, never on how deep into the table it starts.

The JSON and time columns are selected without SQLAlchemy's result processing and decoded here:
its generic processors cost about 6 us per row on SQLite, a third of an export's budget.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from sqlalchemy import ColumnElement, FromClause, String, and_, or_, select, type_coerce

from storage.listing_records import (
    EventEntry,
    EventFilter,
    FeedbackEntry,
    FeedbackFilter,
    InteractionEntry,
    InteractionFilter,
    Keyset,
)
from storage.models import EventRow, FeedbackRow, InteractionRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

EntryT = TypeVar("EntryT", bound=NamedTuple)

_FEEDBACK = FeedbackRow.__table__
_INTERACTIONS = InteractionRow.__table__
_EVENTS = EventRow.__table__


def feedback_entries(
    session: Session, selection: FeedbackFilter, keyset: Keyset
) -> list[FeedbackEntry]:
    """One keyset page of feedback; a score bound restricts it to score-rated feedback."""
    table = _FEEDBACK
    conditions = _equal(
        (table.c.conversation_id, selection.conversation_id),
        (table.c.message_id, selection.message_id),
        (table.c.user_id, selection.user_id),
        (table.c.model, selection.model),
        (table.c.rating_kind, selection.rating_kind),
        (table.c.label, selection.label),
    )
    if selection.min_score is not None or selection.max_score is not None:
        conditions.append(table.c.rating_kind == "score")
    if selection.min_score is not None:
        conditions.append(table.c.score >= selection.min_score)
    if selection.max_score is not None:
        conditions.append(table.c.score <= selection.max_score)
    # Empty text is no text: FilAgent's rows may hold '' where new rows hold NULL.
    if selection.has_text is True:
        conditions.append(and_(table.c.text.is_not(None), table.c.text != ""))
    elif selection.has_text is False:
        conditions.append(or_(table.c.text.is_(None), table.c.text == ""))
    conditions += _time_range(table.c.create_time, selection.start_time, selection.end_time)
    return _FEEDBACK_LAYOUT.page(session, conditions, keyset)


def interaction_entries(
    session: Session, selection: InteractionFilter, keyset: Keyset
) -> list[InteractionEntry]:
    """One keyset page of interactions; the time range applies to occur_time."""
    table = _INTERACTIONS
    conditions = _equal(
        (table.c.conversation_id, selection.conversation_id),
        (table.c.message_id, selection.message_id),
        (table.c.user_id, selection.user_id),
        (table.c.model, selection.model),
    )
    conditions += _time_range(table.c.occur_time, selection.start_time, selection.end_time)
    return _INTERACTION_LAYOUT.page(session, conditions, keyset)


def event_entries(session: Session, selection: EventFilter, keyset: Keyset) -> list[EventEntry]:
    """One keyset page of events; the time range applies to event_time."""
    table = _EVENTS
    conditions = _equal(
        (table.c.user_id, selection.user_id), (table.c.event_type, selection.event_type)
    )
    conditions += _time_range(table.c.event_time, selection.start_time, selection.end_time)
    return _EVENT_LAYOUT.page(session, conditions, keyset)


def _equal(*pairs: tuple[ColumnElement[Any], object]) -> list[ColumnElement[bool]]:
    """Equality conditions for the values given (None means "any")."""
    return [column == value for column, value in pairs if value is not None]


def _time_range(
    column: ColumnElement[datetime], start: datetime | None, end: datetime | None
) -> list[ColumnElement[bool]]:
    """Half-open [start, end) on a time column."""
    conditions = []
    if start is not None:
        conditions.append(column >= start)
    if end is not None:
        conditions.append(column < end)
    return conditions


class _Layout(Generic[EntryT]):
    """How one table's rows become entries: its columns in entry order, the last ones decoded.

    Entries end with one JSON column and then time columns; those are selected as the driver
    returns them (text on SQLite; dict and datetime on PostgreSQL) and decoded per dialect.
    """

    def __init__(self, table: FromClause, entry_type: type[EntryT], time_columns: int) -> None:
        fields: Sequence[str] = entry_type._fields
        self._table = table
        self._entry_type = entry_type
        self._plain = len(fields) - 1 - time_columns
        self._columns = [
            type_coerce(table.c[name], String) if index >= self._plain else table.c[name]
            for index, name in enumerate(fields)
        ]
        self._time_columns = time_columns

    def page(
        self, session: Session, conditions: list[ColumnElement[bool]], keyset: Keyset
    ) -> list[EntryT]:
        """Run the page query and decode its rows."""
        if keyset.limit < 1:
            raise ValueError(f"limit must be at least 1, not {keyset.limit}")
        id_column = self._table.c.id
        if keyset.cursor is not None:
            conditions = [
                *conditions,
                id_column < keyset.cursor if keyset.newest_first else id_column > keyset.cursor,
            ]
        statement = (
            select(*self._columns)
            .where(*conditions)
            .order_by(id_column.desc() if keyset.newest_first else id_column.asc())
            .limit(keyset.limit)
        )
        connection = session.connection()
        rows = connection.execute(statement)
        if connection.dialect.name == "sqlite":
            return self._decoded(rows, _sqlite_json, _sqlite_time)
        return self._decoded(rows, _postgres_json, _postgres_time)

    def _decoded(
        self,
        rows: Any,
        json_value: Callable[[Any], dict[str, Any]],
        time_value: Callable[[Any], datetime],
    ) -> list[EntryT]:
        # tuple.__new__ skips the NamedTuple's Python-level __new__; the row already has the
        # entry's field order, so only the decoded tail is rebuilt.
        new, entry_type, plain = tuple.__new__, self._entry_type, self._plain
        if self._time_columns == 1:
            return [
                new(entry_type, (*row[:plain], json_value(row[plain]), time_value(row[-1])))
                for row in rows
            ]
        return [
            new(
                entry_type,
                (*row[:plain], json_value(row[plain]), time_value(row[-2]), time_value(row[-1])),
            )
            for row in rows
        ]


def _sqlite_json(text: str) -> dict[str, Any]:
    # Most rows carry no metadata; json.loads costs about 2 us even for "{}".
    if text == "{}":
        return {}
    value: dict[str, Any] = json.loads(text)
    return value


def _sqlite_time(text: str) -> datetime:
    # SQLite holds UTC as "YYYY-MM-DD HH:MM:SS.ffffff" (storage.column_types); appending the
    # offset is several times cheaper than datetime.replace(tzinfo=UTC).
    return datetime.fromisoformat(text + "+00:00")


def _postgres_json(value: dict[str, Any]) -> dict[str, Any]:
    return value  # psycopg decodes jsonb itself


def _postgres_time(value: datetime) -> datetime:
    return value.astimezone(UTC)


_FEEDBACK_LAYOUT = _Layout(_FEEDBACK, FeedbackEntry, time_columns=1)
_INTERACTION_LAYOUT = _Layout(_INTERACTIONS, InteractionEntry, time_columns=2)
_EVENT_LAYOUT = _Layout(_EVENTS, EventEntry, time_columns=2)
