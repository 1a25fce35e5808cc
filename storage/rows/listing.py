"""Keyset pages of feedback, interactions and events, read as fast as exports need.

Every page is an indexed query: `id < cursor ORDER BY id DESC` (newest first) or
`id > cursor ORDER BY id ASC`, with the filters as equality or range conditions; a time range
also bounds the ids scanned to the blocks whose times overlap it (storage.rows.id_blocks). So
its cost depends on the page, never on how deep into the table it starts nor on how its times
fall.

SQLAlchemy builds and binds the statements; the rows are decoded here (see _page).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    Select,
    and_,
    literal_column,
    or_,
    select,
)

from storage.records import (
    EventEntry,
    EventFilter,
    FeedbackEntry,
    FeedbackFilter,
    InteractionEntry,
    InteractionFilter,
    Keyset,
)
from storage.rows import id_blocks
from storage.rows.row_codec import CODECS, Dialect
from storage.schema.models import (
    EventRow,
    FeedbackRow,
    InteractionRow,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

_EMPTY: ColumnElement[str] = literal_column("''")

_FEEDBACK = FeedbackRow.__table__
_INTERACTIONS = InteractionRow.__table__
_EVENTS = EventRow.__table__
_CHAT_SCOPE = ("conversation_id", "message_id", "user_id", "model")
"""The filters feedback and interactions share, each on the column of its name."""


def feedback_entries(
    session: Session, selection: FeedbackFilter, keyset: Keyset
) -> list[FeedbackEntry]:
    """One keyset page of feedback; a score bound restricts it to score-rated feedback."""
    table = _FEEDBACK
    conditions = _equal(table, selection, *_CHAT_SCOPE, "rating_kind", "label")
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
    conditions = _equal(table, selection, *_CHAT_SCOPE)
    window = _Window(table.c.occur_time, selection.start_time, selection.end_time)
    return _interactions(*_page(session, table, conditions, window, keyset, InteractionEntry))


def event_entries(session: Session, selection: EventFilter, keyset: Keyset) -> list[EventEntry]:
    """One keyset page of events; the time range applies to event_time."""
    table = _EVENTS
    conditions = _equal(table, selection, "user_id", "event_type")
    window = _Window(table.c.event_time, selection.start_time, selection.end_time)
    return _events(*_page(session, table, conditions, window, keyset, EventEntry))


_BY_IDS_GAP = 256
"""Ids further apart than this are read by separate range queries, so rows between them that
are not asked for are never scanned in bulk."""


def entries_by_ids(session: Session, kind: str, ids: Sequence[int]) -> list[Any]:
    """The rows of `kind` ("feedback", "interactions" or "events") among ascending `ids` that
    are still stored, as list entries in id order.

    Read as ranges of nearby ids (a write transaction's ids are mostly consecutive), keeping
    only the ids asked for: a range also holds rows of transactions that committed later.
    """
    table, entry_type, decode = _BY_KIND[kind]
    wanted = set(ids)
    connection = session.connection()
    decoder = _SQLITE if connection.dialect.name == "sqlite" else _POSTGRES
    columns = [table.c[name] for name in entry_type._fields]
    rows: list[Any] = []
    for low, high in _ranges(ids):
        statement = select(*columns).where(table.c.id.between(low, high)).order_by(table.c.id)
        rows.extend(row for row in _fetch(connection, statement) if row[0] in wanted)
    return decode(rows, decoder)


def _ranges(ids: Sequence[int]) -> list[tuple[int, int]]:
    """Ascending ids as (low, high) ranges, split where ids are more than _BY_IDS_GAP apart."""
    ranges: list[tuple[int, int]] = []
    low = previous = ids[0] if ids else 0
    for row_id in ids[1:]:
        if row_id - previous > _BY_IDS_GAP:
            ranges.append((low, previous))
            low = row_id
        previous = row_id
    if ids:
        ranges.append((low, previous))
    return ranges


def _equal(table: FromClause, selection: object, *names: str) -> list[ColumnElement[bool]]:
    """Equality conditions on the columns named like the filter's fields `names`, for the
    values given (None means "any")."""
    values = [(name, getattr(selection, name)) for name in names]
    return [table.c[name] == value for name, value in values if value is not None]


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
    """How one database's driver returns the columns SQLAlchemy would otherwise convert
    (storage.rows.row_codec), unpacked for the per-row loops below; NULL stays None."""

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

    A page with a time range (`window`) scans only the id ranges whose blocks' time bounds
    overlap it (storage.rows.id_blocks), one range after the other from the cursor until the
    page is full: when times follow ids the range is a run of blocks wherever it lies, and when
    they do not, the time filter passes a fixed share of the rows scanned. The rows come
    straight off the DBAPI cursor: SQLAlchemy's Row objects and generic result processors cost
    about 6 us per row on SQLite, a third of an export's per-row budget.
    """
    if keyset.limit < 1:
        raise ValueError(f"limit must be at least 1, not {keyset.limit}")
    id_column = table.c.id
    connection = session.connection()
    decoder = _SQLITE if connection.dialect.name == "sqlite" else _POSTGRES
    ordered = id_column.desc() if keyset.newest_first else id_column.asc()
    columns = [table.c[name] for name in entry_type._fields]
    where = [*conditions, *window.conditions(), *_past_cursor(id_column, keyset)]
    if window.start is None and window.end is None:
        statement = select(*columns).where(*where).order_by(ordered).limit(keyset.limit)
        return _fetch(connection, statement), decoder
    rows: list[Any] = []
    runs = id_blocks.id_runs(
        connection,
        table.name,  # type: ignore[attr-defined]
        window.start,
        window.end,
        keyset.cursor,
        newest_first=keyset.newest_first,
    )
    for low, high in runs:
        statement = (
            select(*columns)
            .where(*where, id_column.between(low, high))
            .order_by(ordered)
            .limit(keyset.limit - len(rows))
        )
        rows.extend(_fetch(connection, statement))
        if len(rows) >= keyset.limit:
            break
    return rows, decoder


def _fetch(connection: Connection, statement: Select[Any]) -> Sequence[Any]:
    result = connection.execute(statement)
    try:
        return result.cursor.fetchall()
    finally:
        result.close()


def _past_cursor(key: ColumnElement[int], keyset: Keyset) -> list[ColumnElement[bool]]:
    """The keyset condition: only rows after the cursor in the page's order."""
    if keyset.cursor is None:
        return []
    return [key < keyset.cursor if keyset.newest_first else key > keyset.cursor]


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
                replaces_id,
                input_hash_kind,
                output_hash_kind,
                json_value(redactions),
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
            replaces_id,
            input_hash_kind,
            output_hash_kind,
            redactions,
        ) in rows
    ]


def _interactions(rows: Sequence[Any], decoder: _Decoder) -> list[InteractionEntry]:
    json_value, time_value, _ = decoder
    new = tuple.__new__
    return [
        new(
            InteractionEntry,
            (
                *head,
                json_value(metadata),
                time_value(occur_time),
                time_value(create_time),
                input_hash_kind,
                output_hash_kind,
                json_value(redactions),
            ),
        )
        for (
            *head,
            metadata,
            occur_time,
            create_time,
            input_hash_kind,
            output_hash_kind,
            redactions,
        ) in rows
    ]


def _events(rows: Sequence[Any], decoder: _Decoder) -> list[EventEntry]:
    json_value, time_value, _ = decoder
    new = tuple.__new__
    return [
        new(
            EventEntry,
            (
                row_id,
                user_id,
                event_type,
                json_value(details),
                time_value(event),
                time_value(at),
                event_id,
                json_value(redactions),
            ),
        )
        for (row_id, user_id, event_type, details, event, at, event_id, redactions) in rows
    ]


def _decoder(dialect: Dialect) -> _Decoder:
    codec = CODECS[dialect]
    return _Decoder(codec.decode_json, codec.decode_time, codec.decode_flag)


_SQLITE = _decoder("sqlite")
_POSTGRES = _decoder("postgresql")

_BY_KIND: dict[
    str, tuple[FromClause, type[NamedTuple], Callable[[Sequence[Any], _Decoder], list[Any]]]
] = {
    "feedback": (_FEEDBACK, FeedbackEntry, _feedback),
    "interactions": (_INTERACTIONS, InteractionEntry, _interactions),
    "events": (_EVENTS, EventEntry, _events),
}
"""Each listed kind's table, entry and decoder."""
