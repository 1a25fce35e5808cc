"""Keyset pages of feedback, interactions and events, read as fast as exports need.

Every page is one indexed query: `id < cursor ORDER BY id DESC` (newest first) or
`id > cursor ORDER BY id ASC`, with the filters as equality or range conditions, so its cost
depends on the page, never on how deep into the table it starts.

SQLAlchemy builds and binds the statements; the rows are decoded here (see _page).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cache
from itertools import chain
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    Select,
    Table,
    and_,
    func,
    literal_column,
    or_,
    select,
)

from storage.aggregates.rollups import (
    ALL,
    DAY,
    DAY_SECONDS,
    HOUR,
    HOUR_SECONDS,
    MONTH,
    ceil_to,
    epoch_microseconds,
    month_start,
    next_month_start,
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
from storage.rows.row_codec import CODECS, Dialect
from storage.schema.models import (
    EventRollupRow,
    EventRow,
    FeedbackRollupRow,
    FeedbackRow,
    InteractionRollupRow,
    InteractionRow,
    RollupKeySpanRow,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

_EMPTY: ColumnElement[str] = literal_column("''")

_FEEDBACK = FeedbackRow.__table__
_INTERACTIONS = InteractionRow.__table__
_EVENTS = EventRow.__table__
_ROLLUPS: dict[FromClause, Table] = {
    _FEEDBACK: FeedbackRollupRow.__table__,  # type: ignore[dict-item]
    _INTERACTIONS: InteractionRollupRow.__table__,  # type: ignore[dict-item]
    _EVENTS: EventRollupRow.__table__,  # type: ignore[dict-item]
}
"""The counter rollups whose "all" cells bound the ids of each table's records in time."""
_SPANS = RollupKeySpanRow.__table__
_ALL_SPAN = select(_SPANS.c.first_day, _SPANS.c.last_day).where(
    _SPANS.c.dimension == ALL, _SPANS.c.dimension_key == ""
)
"""First and last day holding records of any kind: where open-ended ranges stop."""


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
    decoder = _SQLITE if sqlite else _POSTGRES
    ordered = id_column.desc() if keyset.newest_first else id_column.asc()
    columns = [table.c[name] for name in entry_type._fields]
    range_ids = _range_ids(connection, _ROLLUPS[table], window)
    if range_ids is not None:
        walk = range_ids.past_cursor(keyset)
        if walk is None:
            return [], decoder  # no record of the range lies past the cursor
        if walk <= _WALK_PER_RANGE_ROW * range_ids.records:
            # Walking the ids from the cursor reads the range's rows first when times follow ids
            # (all but a few rows), and never more than the ids the range spans.
            where = [
                *conditions,
                *window.conditions(),
                *_past_cursor(id_column, keyset),
                id_column.between(range_ids.low, range_ids.high),
            ]
            statement = select(*columns).where(*where).order_by(ordered).limit(keyset.limit)
            return _fetch(connection, statement), decoder
        through_time_index = True  # scattered times: the bounds span far more ids than rows
    else:
        through_time_index = sqlite and _through_time_index(connection, table, window, keyset)
    if through_time_index:
        # "id + 0" keeps the database from walking the primary key in page order (PostgreSQL
        # would, to skip the sort), so it searches the time range through its index and sorts
        # the ids found.
        key = id_column + 0
        where = [*conditions, *window.conditions(), *_past_cursor(key, keyset)]
        ids = (
            select(id_column)
            .where(*where)
            .order_by(key.desc() if keyset.newest_first else key.asc())
            .limit(keyset.limit)
        )
        statement = select(*columns).where(id_column.in_(ids.scalar_subquery())).order_by(ordered)
    else:
        where = [*conditions, *window.conditions(), *_past_cursor(id_column, keyset)]
        statement = select(*columns).where(*where).order_by(ordered).limit(keyset.limit)
    return _fetch(connection, statement), decoder


def _fetch(connection: Connection, statement: Select[Any]) -> Sequence[Any]:
    result = connection.execute(statement)
    try:
        return result.cursor.fetchall()
    finally:
        result.close()


_WALK_PER_RANGE_ROW = 8
"""Ids walked per row of the range before its time index becomes the cheaper plan.

Through the time index a page costs every row of the range plus a sort; walking ids costs at
most the ids between the cursor and the far bound, and only the page's rows when times follow
ids. Scattered rows (imports, client clocks) widen the bounds far beyond the range's rows.
"""


class _RangeIds(NamedTuple):
    """Ids bounding every record of a time range, from the rollups' "all" cells covering it."""

    low: int
    high: int
    records: int
    """Records of the cells read: the range's, and at most two hours more at its edges."""

    def past_cursor(self, keyset: Keyset) -> int | None:
        """How many ids a walk from the cursor to the far bound passes; None if none are left."""
        cursor = keyset.cursor
        if keyset.newest_first:
            top = self.high if cursor is None else min(self.high, cursor - 1)
            walk = top - self.low + 1
        else:
            bottom = self.low if cursor is None else max(self.low, cursor + 1)
            walk = self.high - bottom + 1
        return walk if walk > 0 else None


_NO_RECORDS = _RangeIds(1, 0, 0)


def _range_ids(connection: Connection, rollups: Table, window: _Window) -> _RangeIds | None:
    """The ids of the range's records, bounded by the "all" cells that cover it; None when
    there is no range or a cell has no bounds.

    The range is cut into whole hours at its edges, whole days next to them and whole months in
    between, each cell one primary key lookup. The bounds are a superset (removals never narrow
    them), so filtering the rows in them by time stays exact, however times and ids relate. The
    read unit's snapshot (storage.database) keeps them in step with the page's own query.
    """
    if window.start is None and window.end is None:
        return None
    # The range stops at the first and last day holding any records: open ends get an end, and
    # the cells read stay few (and their dates valid) whatever the request's times.
    span = connection.execute(_ALL_SPAN).first()
    if span is None:
        return _NO_RECORDS
    start, end = span.first_day, span.last_day + DAY_SECONDS
    if window.start is not None:
        start = max(start, _hour_start(window.start))
    if window.end is not None:
        end = min(end, _hour_start(window.end, ceil=True))
    if start >= end:
        return _NO_RECORDS
    buckets = _covering_buckets(start, end)
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    sql = _bounds_sql(rollups.name, mark, tuple(len(starts) for starts in buckets.values()))
    result = connection.exec_driver_sql(sql, tuple(chain.from_iterable(buckets.values())))
    try:
        row = result.cursor.fetchone()
    finally:
        result.close()
    assert row is not None  # an aggregate: always one row
    low, high, records, unbounded = row
    if unbounded:
        return None
    if low is None:
        return _NO_RECORDS
    return _RangeIds(low, high, records)


@cache
def _bounds_sql(table: str, mark: str, counts: tuple[int, ...]) -> str:
    """The statement reading the bounds and counts of `counts` hour, day and month cells.

    Driver-level SQL: building the statement with SQLAlchemy cost more than running it.
    """
    lookups = [
        f"SELECT min_id, max_id, total_count FROM {table} WHERE level = {level}"
        f" AND bucket_start IN ({', '.join([mark] * count)})"
        f" AND dimension = {ALL} AND dimension_key = ''"
        for level, count in zip((HOUR, DAY, MONTH), counts, strict=True)
        if count
    ]
    return (
        "SELECT min(min_id), max(max_id), coalesce(sum(total_count), 0),"
        f" count(*) - count(min_id) FROM ({' UNION ALL '.join(lookups)}) AS cells"
    )


def _hour_start(moment: datetime, *, ceil: bool = False) -> int:
    """Epoch seconds of the start of the hour holding `moment`, or with `ceil` of the first
    hour starting at or after it."""
    hour_microseconds = HOUR_SECONDS * 1_000_000
    hours, rest = divmod(epoch_microseconds(moment), hour_microseconds)
    return (hours + (1 if ceil and rest else 0)) * HOUR_SECONDS


def _covering_buckets(start: int, end: int) -> dict[int, list[int]]:
    """Bucket starts per level that tile [start, end), both whole hours: hours, days and
    calendar months, the coarsest that fit."""
    buckets: dict[int, list[int]] = {HOUR: [], DAY: [], MONTH: []}
    first_day, last_day = ceil_to(DAY, start), end - end % DAY_SECONDS
    if first_day >= last_day:
        buckets[HOUR] = list(range(start, end, HOUR_SECONDS))
        return buckets
    buckets[HOUR] = [*range(start, first_day, HOUR_SECONDS), *range(last_day, end, HOUR_SECONDS)]
    first_month, last_month = ceil_to(MONTH, first_day), month_start(last_day)
    if first_month >= last_month:
        buckets[DAY] = list(range(first_day, last_day, DAY_SECONDS))
        return buckets
    buckets[DAY] = [
        *range(first_day, first_month, DAY_SECONDS),
        *range(last_month, last_day, DAY_SECONDS),
    ]
    month = first_month
    while month < last_month:
        buckets[MONTH].append(month)
        month = next_month_start(month)
    return buckets


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
                replaces_id,
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
            (
                row_id,
                user_id,
                event_type,
                json_value(details),
                time_value(event),
                time_value(at),
                event_id,
            ),
        )
        for (row_id, user_id, event_type, details, event, at, event_id) in rows
    ]


def _decoder(dialect: Dialect) -> _Decoder:
    codec = CODECS[dialect]
    return _Decoder(codec.decode_json, codec.decode_time, codec.decode_flag)


_SQLITE = _decoder("sqlite")
_POSTGRES = _decoder("postgresql")
