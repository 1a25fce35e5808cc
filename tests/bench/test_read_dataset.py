"""The bulk loader stores exactly what the storage layer would; the server reads it back as such."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bench.read.dataset import (
    EVENT_COLUMNS,
    FEEDBACK_COLUMNS,
    INTERACTION_COLUMNS,
    Plan,
    Row,
    Shape,
    Year,
    generate_step,
)
from bench.read.phases import stored_form
from server.mapping import feedback_message
from storage.records import (
    FeedbackRecord,
    Label,
    NewEvent,
    NewFeedback,
    NewInteraction,
    Rating,
    Score,
    Thumb,
)
from storage.rows.bulk_insert import insert_returning_ids
from storage.rows.repository import EVENTS, FEEDBACK, INTERACTIONS, RowKind
from storage.schema.models import EventRow, FeedbackRow, InteractionRow

YEAR = Year.ending_today(datetime(2026, 11, 22, 15, 30, tzinfo=UTC))


@pytest.fixture(scope="module")
def rows() -> tuple[list[Row], list[Row], list[Row]]:
    """The second of four steps of a 2000-row load appended after existing rows."""
    plan = Plan.of(
        Shape(2000),
        YEAR,
        seed=7,
        first_ids=(11, 21, 31),
        missing=(1000, 2000, 2000),
        rows_per_step=500,
    )
    return generate_step(plan, 1)


def _stored(kind: RowKind[Any], new: object) -> tuple[object, ...]:
    """The parameters the storage layer binds when it inserts one row."""
    bound: list[tuple[Any, ...]] = []

    def execute(sql: str, parameters: tuple[Any, ...]) -> list[tuple[int]]:
        bound.append(parameters)
        return [(1,)]

    insert_returning_ids(execute, "sqlite", kind.table, kind.getters, [new])
    # The loader leaves the trailing columns (request and event ids, hash kinds) NULL, and the
    # redaction counts to their server default, the empty object.
    columns = {
        InteractionRow: INTERACTION_COLUMNS,
        FeedbackRow: FEEDBACK_COLUMNS,
        EventRow: EVENT_COLUMNS,
    }[kind.model]
    assert all(value in (None, "{}") for value in bound[0][len(columns) - 1 :])
    return bound[0][: len(columns) - 1]


def _time(text: object) -> datetime:
    return datetime.fromisoformat(str(text)).replace(tzinfo=UTC)


def _rating(kind: object, score: object, thumb: object, label: object) -> Rating:
    if kind == "score":
        return Score(int(str(score)))
    if kind == "thumb":
        return Thumb(bool(thumb))
    return Label(str(label))


def _new_feedback(row: Row) -> NewFeedback:
    values = dict(zip(FEEDBACK_COLUMNS, row, strict=True))
    return NewFeedback(
        conversation_id=values["conversation_id"],  # type: ignore[arg-type]
        message_id=values["message_id"],  # type: ignore[arg-type]
        user_id=values["user_id"],  # type: ignore[arg-type]
        interaction_id=values["interaction_id"],  # type: ignore[arg-type]
        model=values["model"],  # type: ignore[arg-type]
        rating=_rating(values["rating_kind"], values["score"], values["thumb_up"], values["label"]),
        text=values["text"],  # type: ignore[arg-type]
        latency_ms=values["latency_ms"],  # type: ignore[arg-type]
        tokens_used=values["tokens_used"],  # type: ignore[arg-type]
        input_hash=values["input_hash"],  # type: ignore[arg-type]
        output_hash=values["output_hash"],  # type: ignore[arg-type]
        metadata=json.loads(str(values["metadata"])),
        create_time=_time(values["create_time"]),
    )


def test_columns_are_the_tables_in_storage_order() -> None:
    """The loaded columns lead each table; the ones after them (request ids) may stay NULL or
    take their server default."""
    for model, columns in (
        (InteractionRow, INTERACTION_COLUMNS),
        (FeedbackRow, FEEDBACK_COLUMNS),
        (EventRow, EVENT_COLUMNS),
    ):
        table_columns = list(model.__table__.columns)
        assert tuple(column.name for column in table_columns[: len(columns)]) == columns
        assert all(
            column.nullable or column.server_default is not None
            for column in table_columns[len(columns) :]
        )


def test_feedback_is_encoded_as_the_storage_layer_encodes_it(
    rows: tuple[list[Row], list[Row], list[Row]],
) -> None:
    _, feedback, _ = rows
    kinds = {row[6] for row in feedback}
    assert kinds == {"score", "thumb", "label"}
    for row in feedback:
        assert _stored(FEEDBACK, _new_feedback(row)) == row[1:]


def test_interactions_and_events_are_encoded_as_the_storage_layer_encodes_them(
    rows: tuple[list[Row], list[Row], list[Row]],
) -> None:
    interactions, _, events = rows
    for row in interactions:
        values = dict(zip(INTERACTION_COLUMNS, row, strict=True))
        new = NewInteraction(
            conversation_id=str(values["conversation_id"]),
            message_id=values["message_id"],  # type: ignore[arg-type]
            user_id=values["user_id"],  # type: ignore[arg-type]
            model=values["model"],  # type: ignore[arg-type]
            input_hash=values["input_hash"],  # type: ignore[arg-type]
            output_hash=values["output_hash"],  # type: ignore[arg-type]
            latency_ms=values["latency_ms"],  # type: ignore[arg-type]
            prompt_tokens=values["prompt_tokens"],  # type: ignore[arg-type]
            completion_tokens=values["completion_tokens"],  # type: ignore[arg-type]
            total_tokens=values["total_tokens"],  # type: ignore[arg-type]
            metadata=json.loads(str(values["metadata"])),
            occur_time=_time(values["occur_time"]),
            create_time=_time(values["create_time"]),
        )
        assert _stored(INTERACTIONS, new) == row[1:]
    for row in events:
        event = NewEvent(
            user_id=str(row[1]),
            event_type=str(row[2]),
            details=json.loads(str(row[3])),
            event_time=_time(row[4]),
            receive_time=_time(row[5]),
        )
        assert _stored(EVENTS, event) == row[1:]


def test_ids_follow_on_and_times_rise_within_the_step(
    rows: tuple[list[Row], list[Row], list[Row]],
) -> None:
    interactions, feedback, events = rows
    assert [row[0] for row in interactions] == list(range(11 + 250, 11 + 500))
    assert [row[0] for row in feedback] == list(range(21 + 500, 21 + 1000))
    assert [row[0] for row in events] == list(range(31 + 500, 31 + 1000))
    times = [_time(row[-1]) for row in feedback]
    assert times == sorted(times)
    quarter = (YEAR.end - YEAR.start) / 4
    assert YEAR.start + quarter <= times[0] <= times[-1] < YEAR.start + 2 * quarter + timedelta(1)


def test_linked_feedback_inherits_from_its_interaction(
    rows: tuple[list[Row], list[Row], list[Row]],
) -> None:
    interactions, feedback, _ = rows
    by_id = {row[0]: row for row in interactions}
    linked = [row for row in feedback if row[4] is not None]
    assert linked
    for row in linked:
        rated = by_id[row[4]]
        assert (row[1], row[2], row[3], row[5]) == rated[1:5]
        assert (row[11], row[12], row[13], row[14]) == (rated[7], rated[10], rated[5], rated[6])


def test_stored_form_inverts_the_servers_mapping(
    rows: tuple[list[Row], list[Row], list[Row]],
) -> None:
    _, feedback, _ = rows
    for row in feedback:
        new = _new_feedback(row)
        record = FeedbackRecord(
            id=int(str(row[0])), **{name: getattr(new, name) for name in new.__dataclass_fields__}
        )
        assert stored_form(feedback_message(record)) == row
