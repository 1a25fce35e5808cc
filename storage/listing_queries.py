"""Keyset pages of feedback, interactions and events, read as fast as exports need.

Every page is one indexed query: `id < cursor ORDER BY id DESC` (newest first) or
`id > cursor ORDER BY id ASC`, with the filters as equality or range conditions, so its cost
depends on the page, never on how deep into the table it starts.

SQLAlchemy builds and binds the statements; the rows are decoded here (see _page).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    and_,
    func,
    literal_column,
    or_,
    select,
)

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

_EMPTY: ColumnElement[str] = literal_column("''")

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
    # The literal '' (not a bound parameter) lets SQLite match the partial index on texts.
    if selection.has_text is True:
        conditions.append(and_(table.c.text.is_not(None), table.c.text != _EMPTY))
    elif selection.has_text is False:
        conditions.append(or_(table.c.text.is_(None), table.c.text == _EMPTY))
    window = _Window(table.c.create_time, selection.start_time, selection.end_time)
    return _feedback(*_page(session, table, conditions, window, keyset, FeedbackEntry))


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
    window = _Window(table.c.occur_time, selection.start_time, selection.end_time)
    return _interactions(*_page(session, table, conditions, window, keyset, InteractionEntry))


def event_entries(session: Session, selection: EventFilter, keyset: Keyset) -> list[EventEntry]:
    """One keyset page of events; the time range applies to event_time."""
    table = _EVENTS
    conditions = _equal(
        (table.c.user_id, selection.user_id), (table.c.event_type, selection.event_type)
    )
    window = _Window(table.c.event_time, selection.start_time, selection.end_time)
    return _events(*_page(session, table, conditions, window, keyset, EventEntry))


def _equal(*pairs: tuple[ColumnElement[Any], object]) -> list[ColumnElement[bool]]:
    """Equality conditions for the values given (None means "any")."""
    return [column == value for column, value in pairs if value is not None]


class _Window(NamedTuple):
    """A half-open time range [start, end) on one time column; either end may be open."""

    column: ColumnElement[datetime]
    start: datetime | None
    end: datetime | None

    def conditions(self) -> list[ColumnElement[bool]]:
        """The WHERE conditions of the range."""
        conditions = []
        if self.start is not None:
            conditions.append(self.column >= self.start)
        if self.end is not None:
            conditions.append(self.column < self.end)
        return conditions


class _Decoder(NamedTuple):
    """How one database's driver returns the columns SQLAlchemy would otherwise convert."""

    json: Callable[[Any], dict[str, Any]]
    time: Callable[[Any], datetime]
    flag: Callable[[Any], bool | None]


def _page(
    session: Session,
    table: FromClause,
    conditions: list[ColumnElement[bool]],
    window: _Window,
    keyset: Keyset,
    entry_type: type[NamedTuple],
) -> tuple[Sequence[Any], _Decoder]:
    """The rows of one page, as the driver returns them, and how to decode them.

    The time range (`window`) is apart because SQLite may be better off reading it through
    its time index (see _through_time_index). The rows come straight off the DBAPI cursor:
    SQLAlchemy's Row objects and generic result processors cost about 6 us per row on SQLite,
    a third of an export's per-row budget.
    """
    if keyset.limit < 1:
        raise ValueError(f"limit must be at least 1, not {keyset.limit}")
    id_column = table.c.id
    connection = session.connection()
    sqlite = connection.dialect.name == "sqlite"
    ordered = id_column.desc() if keyset.newest_first else id_column.asc()
    columns = [table.c[name] for name in entry_type._fields]
    if sqlite and _through_time_index(connection, table, window, keyset):
        # "id + 0" keeps SQLite from reading the cursor's range through the primary key, so
        # it searches the time range through its index and sorts the few ids found.
        where = [*conditions, *window.conditions(), *_past_cursor(id_column + 0, keyset)]
        ids = select(id_column).where(*where).order_by(ordered).limit(keyset.limit)
        statement = select(*columns).where(id_column.in_(ids.scalar_subquery())).order_by(ordered)
    else:
        where = [*conditions, *window.conditions(), *_past_cursor(id_column, keyset)]
        statement = select(*columns).where(*where).order_by(ordered).limit(keyset.limit)
    result = connection.execute(statement)
    try:
        rows = result.cursor.fetchall()
    finally:
        result.close()
    return rows, _SQLITE if sqlite else _POSTGRES


def _past_cursor(key: ColumnElement[int], keyset: Keyset) -> list[ColumnElement[bool]]:
    """The keyset condition: only rows after the cursor in the page's order."""
    if keyset.cursor is None:
        return []
    return [key < keyset.cursor if keyset.newest_first else key > keyset.cursor]


def _through_time_index(
    connection: Connection, table: FromClause, window: _Window, keyset: Keyset
) -> bool:
    """Whether a page with a time range costs less read through the range's time index.

    SQLite has no statistics unless ANALYZE runs, so it walks the primary key in page order
    from the cursor and skips rows outside the range: a few rows when the range holds the rows
    next to the cursor, the rows up to the range when it lies further on, the rest of the table
    when it lies behind. Through the time index, a page costs the rows of the range instead.
    Ids and times grow together in practice, so the ids of the range's first and last rows by
    time (two index lookups) place the range among the ids well enough to choose; both plans
    return exactly the same rows.
    """
    if window.start is None and window.end is None:
        return False
    in_range = select(table.c.id).where(*window.conditions())
    first = connection.execute(in_range.order_by(window.column.asc()).limit(1)).scalar()
    last = connection.execute(in_range.order_by(window.column.desc()).limit(1)).scalar()
    if first is None or last is None:
        return True  # nothing in range: the index says so at once
    low, high = min(first, last), max(first, last)
    range_rows = high - low + 1
    if keyset.newest_first:
        cursor = keyset.cursor
        if cursor is None:
            cursor = (connection.execute(select(func.max(table.c.id))).scalar() or 0) + 1
        walked = cursor if cursor <= low else cursor - high
    else:
        cursor = keyset.cursor or 0
        if cursor >= high:
            walked = (connection.execute(select(func.max(table.c.id))).scalar() or 0) - cursor
        else:
            walked = low - cursor
    return bool(walked > range_rows)


# The decoders below unpack each row and build the entry with tuple.__new__, skipping the
# NamedTuple's Python-level __new__: about 2 us per row in all.


def _feedback(rows: Sequence[Any], decoder: _Decoder) -> list[FeedbackEntry]:
    json_value, time_value, flag = decoder
    new = tuple.__new__
    return [
        new(
            FeedbackEntry,
            (
                *head,
                flag(thumb_up),
                label,
                text,
                latency_ms,
                tokens_used,
                input_hash,
                output_hash,
                json_value(metadata),
                time_value(create_time),
            ),
        )
        for (
            *head,
            thumb_up,
            label,
            text,
            latency_ms,
            tokens_used,
            input_hash,
            output_hash,
            metadata,
            create_time,
        ) in rows
    ]


def _interactions(rows: Sequence[Any], decoder: _Decoder) -> list[InteractionEntry]:
    json_value, time_value, _ = decoder
    new = tuple.__new__
    return [
        new(
            InteractionEntry,
            (*head, json_value(metadata), time_value(occur_time), time_value(create_time)),
        )
        for (*head, metadata, occur_time, create_time) in rows
    ]


def _events(rows: Sequence[Any], decoder: _Decoder) -> list[EventEntry]:
    json_value, time_value, _ = decoder
    new = tuple.__new__
    return [
        new(
            EventEntry,
            (row_id, user_id, event_type, json_value(details), time_value(event), time_value(at)),
        )
        for (row_id, user_id, event_type, details, event, at) in rows
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


def _sqlite_flag(value: int | None) -> bool | None:
    return None if value is None else value == 1


def _as_is(value: Any) -> Any:
    return value  # psycopg decodes jsonb and booleans itself


def _postgres_time(value: datetime) -> datetime:
    return value.astimezone(UTC)


_SQLITE = _Decoder(_sqlite_json, _sqlite_time, _sqlite_flag)
_POSTGRES = _Decoder(_as_is, _postgres_time, _as_is)
