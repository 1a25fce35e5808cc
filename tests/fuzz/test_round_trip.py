"""SQL fragments and Unicode edge cases come back exactly as stored, on both databases.

Redaction is off here: this is about storing any text verbatim; what redaction replaces has its
own tests (tests/e2e/test_redaction.py)."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import given
from hypothesis import strategies as st

from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from server.config import Settings
from server.service.validation import IDENTIFIER
from tests.fuzz.harness import fuzz_settings
from tests.fuzz.strategies import FREE_TEXT, SQL_INJECTIONS, UNICODE_EDGES, json_objects, struct_of

_texts = st.one_of(
    st.sampled_from([s for s in SQL_INJECTIONS + UNICODE_EDGES if "\x00" not in s]),
    FREE_TEXT,
    st.sampled_from(["😀" * 2000, "'" * 2000, " leading and trailing "]),
)
_objects = json_objects(finite=True, no_nul=True).map(
    lambda value: {**value, "quote": "'; DROP TABLE feedback; --", "%s": "?", "\\": "\u202e"}
)
_identifiers = st.from_regex(IDENTIFIER, fullmatch=True)
_unique = itertools.count()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The fuzz server's settings with redaction off."""
    return dataclasses.replace(settings, redact="off")


def _unique_id(drawn: str) -> str:
    """A drawn identifier made unique in this database, still within the identifier rule."""
    return f"{next(_unique)}-{drawn}"[:128]


def _as_python(message: Any) -> dict[str, Any]:
    return MessageToDict(message) if message.fields else {}


@fuzz_settings(default_examples=100)
@given(text=_texts, metadata=_objects, message_id=_identifiers, user_id=_identifiers)
def test_feedback_text_metadata_and_ids_read_back_verbatim(
    channel: grpc.Channel, text: str, metadata: dict[str, Any], message_id: str, user_id: str
) -> None:
    stub = FeedbackServiceStub(channel)
    message_id, user_id = _unique_id(message_id), _unique_id(user_id)
    conversation = f"rt-{next(_unique)}"
    stub.RecordInteraction(
        pb.RecordInteractionRequest(
            conversation_id=conversation,
            message_id=message_id,
            user_id=user_id,
            metadata=struct_of(metadata),
        ),
        timeout=30,
    )
    stub.SubmitFeedback(
        pb.SubmitFeedbackRequest(
            message_id=message_id, score=5, text=text, metadata=struct_of(metadata)
        ),
        timeout=30,
    )

    (feedback,) = stub.ListFeedback(
        pb.ListFeedbackRequest(message_id=message_id), timeout=30
    ).feedback
    (interaction,) = stub.ListInteractions(
        pb.ListInteractionsRequest(user_id=user_id), timeout=30
    ).interactions

    assert feedback.text == text
    assert (feedback.conversation_id, feedback.user_id) == (conversation, user_id)
    assert _as_python(feedback.metadata) == metadata
    assert interaction.message_id == message_id
    assert _as_python(interaction.metadata) == metadata


@fuzz_settings(default_examples=100)
@given(details=_objects, user_id=_identifiers, event_type=st.sampled_from(["a--b", "x:y.z", "q"]))
def test_event_details_read_back_verbatim_from_lists_and_exports(
    channel: grpc.Channel, details: dict[str, Any], user_id: str, event_type: str
) -> None:
    stub = FeedbackServiceStub(channel)
    user_id = _unique_id(user_id)
    stub.LogEvent(
        pb.LogEventRequest(user_id=user_id, event_type=event_type, details=struct_of(details)),
        timeout=30,
    )

    (listed,) = stub.ListEvents(pb.ListEventsRequest(user_id=user_id), timeout=30).events
    (chunk,) = stub.ExportEvents(pb.ExportEventsRequest(user_id=user_id), timeout=30)

    assert (listed.user_id, listed.event_type) == (user_id, event_type)
    assert _as_python(listed.details) == details
    assert list(chunk.events) == [listed]
