"""Plain SQL over the raw tables: what the server is compared with, and the truth it is checked by.

The timed references are what the seed systems ran for every stats request: COUNT/SUM CASE over
the feedback table in one full scan (NOT INDEXED makes a per-conversation or per-user query scan
as theirs did; the daily one groups the scan by day). The same figures with indexes, interactions
and events included, check GetStats' answers exactly. OFFSET pages are the naive way to read deep
into a table, SELECT * the limit of reading it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from bench.read.aggregates import Aggregate
from bench.read.dataset import FEEDBACK_COLUMNS, LABELS, TABLES

T = TypeVar("T")
FETCH_ROWS = 1000


@dataclass(frozen=True, slots=True)
class Selection:
    """A stats filter as SQL sees it; times are stored text ("YYYY-MM-DD HH:MM:SS.ffffff")."""

    conversation_id: str | None = None
    user_id: str | None = None
    start: str | None = None
    end: str | None = None


@dataclass(frozen=True, slots=True)
class Timed(Generic[T]):
    """A result and the seconds the query took (the median of the runs when repeated)."""

    value: T
    seconds: float


@contextmanager
def connected(database: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection, as a script over the database file would open it."""
    with closing(sqlite3.connect(database, timeout=30)) as connection:
        yield connection


def aggregate(
    connection: sqlite3.Connection,
    selection: Selection,
    *,
    tables: Sequence[str] = TABLES,
    indexed: bool,
) -> Aggregate:
    """The figures GetStats reports for `selection`, from the given tables.

    Events have no conversation, so a conversation filter leaves them out (as GetStats does).
    """
    parts = [
        _FIGURES[table](connection, selection, indexed=indexed, by_day=False).get("", _NOTHING)
        for table in tables
        if not (table == "events" and selection.conversation_id is not None)
    ]
    return _merged(parts)


def daily_feedback(connection: sqlite3.Connection, start: str, end: str) -> dict[str, Aggregate]:
    """Feedback figures per UTC day ("YYYY-MM-DD") of [start, end): a full scan grouped by day."""
    selection = Selection(start=start, end=end)
    figures = _feedback_figures(connection, selection, indexed=False, by_day=True)
    return {day: _merged([part]) for day, part in sorted(figures.items())}


def timed(work: Callable[[], T], runs: int, budget_seconds: float) -> Timed[T]:
    """Run `work` up to `runs` times (fewer once `budget_seconds` are spent); the median time."""
    seconds: list[float] = []
    result: T | None = None
    while not seconds or (len(seconds) < runs and sum(seconds) < budget_seconds):
        started = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - started)
    assert result is not None
    return Timed(result, sorted(seconds)[len(seconds) // 2])


def offset_page(connection: sqlite3.Connection, depth: int, page_size: int) -> list[int]:
    """The ids of a newest-first page `depth` rows deep, read the naive way (OFFSET)."""
    columns = ", ".join(FEEDBACK_COLUMNS)
    rows = connection.execute(
        f"SELECT {columns} FROM feedback ORDER BY id DESC LIMIT ? OFFSET ?", (page_size, depth)
    ).fetchall()
    return [int(row[0]) for row in rows]


def page_ids(
    connection: sqlite3.Connection,
    *,
    offset: int,
    limit: int,
    before: str | None = None,
    descending: bool = True,
) -> list[int]:
    """The ids ListFeedback must return for a page: by id, optionally created before a time."""
    where = "" if before is None else " WHERE create_time < ?"
    parameters: tuple[object, ...] = () if before is None else (before,)
    order = "DESC" if descending else "ASC"
    rows = connection.execute(
        f"SELECT id FROM feedback{where} ORDER BY id {order} LIMIT ? OFFSET ?",
        (*parameters, limit, offset),
    ).fetchall()
    return [int(row[0]) for row in rows]


def rows_after(connection: sqlite3.Connection, feedback_id: int) -> int:
    """How many feedback rows a newest-first listing shows before `feedback_id`: its depth."""
    return int(
        connection.execute("SELECT count(*) FROM feedback WHERE id > ?", (feedback_id,)).fetchone()[
            0
        ]
    )


def select_all(connection: sqlite3.Connection, limit: int) -> tuple[int, int]:
    """Read the first `limit` feedback rows, oldest first; returns their count and the last id."""
    columns = ", ".join(FEEDBACK_COLUMNS)
    cursor = connection.execute(f"SELECT {columns} FROM feedback ORDER BY id LIMIT ?", (limit,))
    count = last_id = 0
    while rows := cursor.fetchmany(FETCH_ROWS):
        count += len(rows)
        last_id = int(rows[-1][0])
    return count, last_id


Part = tuple[dict[str, int], dict[str, float | None]]
"""Counts and averages of one table."""
Figures = dict[str, Part]
"""A table's part per day ("" when not grouped by day)."""
_NOTHING: Part = ({}, {})


def _feedback_figures(
    connection: sqlite3.Connection, selection: Selection, *, indexed: bool, by_day: bool
) -> Figures:
    label_counts = ", ".join("count(CASE WHEN label = ? THEN 1 END)" for _ in LABELS)
    columns = (
        "count(*), count(CASE WHEN rating_kind = 'score' THEN 1 END),"
        " sum(CASE WHEN rating_kind = 'score' THEN score END),"
        " count(CASE WHEN score = 1 THEN 1 END), count(CASE WHEN score = 2 THEN 1 END),"
        " count(CASE WHEN score = 3 THEN 1 END), count(CASE WHEN score = 4 THEN 1 END),"
        " count(CASE WHEN score = 5 THEN 1 END),"
        " count(CASE WHEN thumb_up = 1 THEN 1 END), count(CASE WHEN thumb_up = 0 THEN 1 END),"
        " count(CASE WHEN text != '' THEN 1 END),"
        " count(latency_ms), sum(latency_ms), count(tokens_used), sum(tokens_used),"
        f" count(label), {label_counts}"
    )
    result: Figures = {}
    for day, row in _grouped(
        connection, "feedback", "create_time", columns, LABELS, selection, indexed, by_day
    ):
        (total, scored, score_sum, s1, s2, s3, s4, s5, up, down, text) = row[:11]
        (latency_count, latency_sum, tokens_count, tokens_sum, labelled) = row[11:16]
        counts = {
            "feedback.total": total,
            "feedback.scored": scored,
            "feedback.score1": s1,
            "feedback.score2": s2,
            "feedback.score3": s3,
            "feedback.score4": s4,
            "feedback.score5": s5,
            "feedback.thumbs_up": up,
            "feedback.thumbs_down": down,
            "feedback.with_text": text,
            "feedback.labelled": labelled,
        }
        counts.update(
            {
                f"feedback.label.{label}": count
                for label, count in zip(LABELS, row[16:], strict=True)
            }
        )
        result[day] = (
            counts,
            {
                "feedback.avg_score": _average(score_sum, scored),
                "feedback.avg_latency_ms": _average(latency_sum, latency_count),
                "feedback.avg_tokens": _average(tokens_sum, tokens_count),
            },
        )
    return result


def _interaction_figures(
    connection: sqlite3.Connection, selection: Selection, *, indexed: bool, by_day: bool
) -> Figures:
    columns = "count(*), count(latency_ms), sum(latency_ms), count(total_tokens), sum(total_tokens)"
    result: Figures = {}
    for day, row in _grouped(
        connection, "interactions", "occur_time", columns, (), selection, indexed, by_day
    ):
        total, latency_count, latency_sum, tokens_count, tokens_sum = row
        result[day] = (
            {"interactions.total": total},
            {
                "interactions.avg_latency_ms": _average(latency_sum, latency_count),
                "interactions.avg_total_tokens": _average(tokens_sum, tokens_count),
            },
        )
    return result


def _event_figures(
    connection: sqlite3.Connection, selection: Selection, *, indexed: bool, by_day: bool
) -> Figures:
    """Event counts per type (GROUP BY: the types are whatever the table holds)."""
    result: Figures = {}
    source = "events" if indexed else "events NOT INDEXED"
    where, parameters = _where(selection, "event_time")
    day = "substr(event_time, 1, 10)" if by_day else "''"
    sql = f"SELECT {day} AS day, event_type, count(*) FROM {source}{where} GROUP BY day, event_type"
    for day_value, event_type, count in connection.execute(sql, parameters):
        counts, _ = result.setdefault(str(day_value), ({"events.total": 0}, {}))
        counts["events.total"] += count
        counts[f"events.type.{event_type}"] = count
    return result


def _grouped(
    connection: sqlite3.Connection,
    table: str,
    time_column: str,
    columns: str,
    column_parameters: Sequence[object],
    selection: Selection,
    indexed: bool,
    by_day: bool,
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """Rows of one aggregate query, each with its day ("" for the whole selection)."""
    where, filter_parameters = _where(selection, time_column)
    parameters = [*column_parameters, *filter_parameters]
    source = table if indexed else f"{table} NOT INDEXED"
    if by_day:
        sql = (
            f"SELECT substr({time_column}, 1, 10) AS day, {columns} FROM {source}{where} "
            "GROUP BY day"
        )
        for day, *values in connection.execute(sql, parameters):
            yield str(day), tuple(values)
    else:
        row = connection.execute(f"SELECT {columns} FROM {source}{where}", parameters).fetchone()
        yield "", tuple(row)


def _where(selection: Selection, time_column: str) -> tuple[str, list[object]]:
    """The WHERE clause of a selection and its parameters."""
    conditions: list[str] = []
    parameters: list[object] = []
    if selection.conversation_id is not None:
        conditions.append("conversation_id = ?")
        parameters.append(selection.conversation_id)
    if selection.user_id is not None:
        conditions.append("user_id = ?")
        parameters.append(selection.user_id)
    if selection.start is not None:
        conditions.append(f"{time_column} >= ?")
        parameters.append(selection.start)
    if selection.end is not None:
        conditions.append(f"{time_column} < ?")
        parameters.append(selection.end)
    return (f" WHERE {' AND '.join(conditions)}" if conditions else ""), parameters


_FIGURES: dict[str, Callable[..., Figures]] = {
    "feedback": _feedback_figures,
    "interactions": _interaction_figures,
    "events": _event_figures,
}


def _merged(parts: Sequence[Part]) -> Aggregate:
    counts: dict[str, int] = {}
    averages: dict[str, float | None] = {}
    for part_counts, part_averages in parts:
        counts.update(part_counts)
        averages.update(part_averages)
    return Aggregate.of(counts, averages)


def _average(total: float | None, count: int) -> float | None:
    return None if not count or total is None else float(total) / count
