"""Records to protobuf: one path per kind for writes, pages and exports, and the fast Struct
conversion of lists and exports builds what Struct.update builds."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf import struct_pb2
from hypothesis import given

from llmfeedback.proto.feedback.v1 import feedback_pb2, feedback_service_pb2
from server.mapping import (
    EVENT_MESSAGE,
    FEEDBACK_MESSAGE,
    FEEDBACK_RESPONSES,
    INTERACTION_MESSAGE,
    RecordMessage,
    dict_to_struct,
    event_message,
    feedback_message,
    interaction_message,
    struct_to_dict,
)
from server.service.listing import Chunk, Page
from storage.records import (
    EventRecord,
    FeedbackRecord,
    InteractionRecord,
    Label,
    Rating,
    Score,
    Thumb,
)
from tests.storage.factories import event_entry, feedback_entry, interaction_entry
from tests.storage.test_properties import json_objects


@given(value=json_objects)
def test_dict_to_struct_equals_struct_update(value: dict[str, Any]) -> None:
    expected = struct_pb2.Struct()
    expected.update(value)

    assert dict_to_struct(value) == expected
    assert struct_to_dict(dict_to_struct(value)) == struct_to_dict(expected)


def test_a_value_json_cannot_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="not a JSON value"):
        dict_to_struct({"when": object()})


# ---- one record-to-protobuf path per kind ----

NOW = datetime(2026, 12, 2, 12, 0, 0, 123456, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
KINDS: dict[str, RecordMessage[Any]] = {
    "feedback": FEEDBACK_MESSAGE,
    "interaction": INTERACTION_MESSAGE,
    "event": EVENT_MESSAGE,
}


def _feedback_record(rating: Rating, **changes: Any) -> FeedbackRecord:
    return FeedbackRecord(
        id=7,
        conversation_id="conv",
        message_id="m1",
        user_id="u1",
        interaction_id=3,
        model="gpt",
        rating=rating,
        text="nice",
        latency_ms=12.5,
        tokens_used=40,
        input_hash="ih",
        output_hash="oh",
        metadata={"source": "web", "n": [1, {"x": None}]},
        create_time=NOW,
        replaces_id=2,
        **changes,
    )


@pytest.mark.parametrize(
    ("rating", "field", "value"),
    [
        (Score(4), "score", 4),
        (Thumb(True), "thumb", feedback_pb2.THUMB_UP),
        (Thumb(False), "thumb", feedback_pb2.THUMB_DOWN),
        (Label("good"), "label", "good"),
    ],
)
def test_a_written_record_and_a_listed_entry_make_the_same_feedback(
    rating: Rating, field: str, value: object
) -> None:
    record = _feedback_record(rating)
    listed = feedback_service_pb2.ListFeedbackResponse()
    FEEDBACK_MESSAGE.add_all(listed.feedback, [feedback_entry(record)])

    written = feedback_message(record)

    assert written == listed.feedback[0]
    assert written.WhichOneof("rating") == field
    assert getattr(written, field) == value
    assert written.create_time.ToDatetime(tzinfo=UTC) == NOW
    assert struct_to_dict(written.metadata) == {"source": "web", "n": [1, {"x": None}]}


def test_a_replaced_vote_carries_its_replacement() -> None:
    replaced = feedback_message(_feedback_record(Score(2), replace_time=LATER, replaced_by_id=9))
    current = feedback_message(_feedback_record(Score(2)))

    assert (replaced.replaced_by_id, replaced.replace_time.ToDatetime(tzinfo=UTC)) == (9, LATER)
    assert not current.HasField("replace_time")
    assert current.replaced_by_id == 0


def test_unset_values_leave_fields_unset() -> None:
    record = _feedback_record(Score(3))
    bare = dataclasses.replace(
        record, conversation_id=None, latency_ms=None, tokens_used=None, metadata={}
    )

    message = feedback_message(bare)

    assert message.conversation_id == ""
    assert not message.HasField("latency_ms")
    assert not message.HasField("tokens_used")
    assert not message.HasField("metadata")


def test_interactions_and_events_map_the_same_from_records_and_entries() -> None:
    interaction = InteractionRecord(
        id=5,
        conversation_id="conv",
        message_id="m",
        user_id="u",
        model="gpt",
        input_hash="i",
        output_hash="o",
        latency_ms=1.5,
        prompt_tokens=1,
        completion_tokens=2,
        total_tokens=3,
        metadata={"k": "v"},
        occur_time=NOW,
        create_time=LATER,
    )
    event = EventRecord(
        id=6,
        user_id="u",
        event_type="click",
        details={"page": "/"},
        event_time=NOW,
        receive_time=LATER,
        event_id="e-1",
    )
    exported = feedback_service_pb2.ExportInteractionsResponse()
    INTERACTION_MESSAGE.add_all(exported.interactions, [interaction_entry(interaction)])
    events = feedback_service_pb2.ExportEventsResponse()
    EVENT_MESSAGE.add_all(events.events, [event_entry(event)])

    assert interaction_message(interaction) == exported.interactions[0]
    assert event_message(event) == events.events[0]
    assert exported.interactions[0].occur_time.ToDatetime(tzinfo=UTC) == NOW
    assert events.events[0].receive_time.ToDatetime(tzinfo=UTC) == LATER


HASH_KINDS = {"input_hash_kind", "output_hash_kind"}


@pytest.mark.parametrize(
    ("kind", "times", "json_field", "computed"),
    [
        ("feedback", ("create_time", "replace_time"), "metadata", {"thumb", *HASH_KINDS}),
        ("interaction", ("occur_time", "create_time"), "metadata", HASH_KINDS),
        ("event", ("event_time", "receive_time"), "details", set()),
    ],
)
def test_the_message_schema_gives_every_field_one_part(
    kind: str, times: tuple[str, ...], json_field: str, computed: set[str]
) -> None:
    declaration = KINDS[kind]
    parts = [*declaration.copied, *declaration.times, declaration.json_field]
    parts += [part.field for part in declaration.converted]

    assert (declaration.times, declaration.json_field) == (times, json_field)
    assert {part.field for part in declaration.converted} == computed
    assert sorted(parts) == sorted(declaration.message.DESCRIPTOR.fields_by_name)


def test_pages_and_chunks_hold_every_entry_in_order() -> None:
    entries = [feedback_entry(_feedback_record(Score(score))) for score in (1, 2, 3)]

    page = FEEDBACK_RESPONSES.page_response(Page(items=entries, next_page_token="next"))
    chunk = FEEDBACK_RESPONSES.chunk_response(Chunk(items=entries, resume_token="resume"))
    empty = FEEDBACK_RESPONSES.chunk_response(Chunk(items=[], resume_token=""))

    assert [item.score for item in page.feedback] == [1, 2, 3]
    assert page.next_page_token == "next"
    assert list(chunk.feedback) == list(page.feedback)
    assert chunk.resume_token == "resume"
    assert len(empty.feedback) == 0
