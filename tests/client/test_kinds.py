"""Each record kind is declared once: every way to write it takes exactly the item's fields."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from llmfeedback import EventBatcher, FeedbackClient
from llmfeedback._items import EVENTS, FEEDBACK, INTERACTIONS
from llmfeedback._kinds import Kind
from llmfeedback.proto.feedback.v1 import feedback_pb2
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from tests.client.fake_service import RecordingServicer

if TYPE_CHECKING:
    from google.protobuf.message import Message

WRITERS: list[tuple[Callable[..., Any], Kind[Any, Any]]] = [
    (FeedbackClient.record_interaction, INTERACTIONS),
    (FeedbackClient.submit_feedback, FEEDBACK),
    (FeedbackClient.log_event, EVENTS),
    (EventBatcher.log, EVENTS),
]


@pytest.mark.parametrize(("method", "kind"), WRITERS, ids=lambda value: getattr(value, "name", ""))
def test_a_write_method_takes_the_fields_of_its_item_in_order(
    method: Callable[..., Any], kind: Kind[Any, Any]
) -> None:
    """Same names, order, kinds of parameter, defaults and annotations as the item's fields."""
    parameters = [
        parameter
        for parameter in inspect.signature(method).parameters.values()
        if parameter.name not in ("self", "timeout")
    ]
    fields = kind.fields

    assert [parameter.name for parameter in parameters] == [field.name for field in fields]
    for parameter, field in zip(parameters, fields, strict=True):
        positional = parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert positional == (not field.kw_only), field.name
        default = (
            dataclasses.MISSING
            if parameter.default is inspect.Parameter.empty
            else (parameter.default)
        )
        assert default == field.default, field.name
        assert parameter.annotation == field.type, field.name


def test_the_required_fields_are_those_without_a_default() -> None:
    assert INTERACTIONS.required == ("conversation_id",)
    assert FEEDBACK.required == ()
    assert EVENTS.required == ("user_id", "event_type")


WHEN = datetime(2026, 1, 2, tzinfo=UTC)
REQUEST_ID = "0190b5a8-0000-7000-8000-000000000001"


def _expected_interaction() -> pb.RecordInteractionRequest:
    request = pb.RecordInteractionRequest(
        conversation_id="c", input_text="hi", output_hash="a" * 64, prompt_tokens=0
    )
    request.metadata.update({"a": 1})
    request.occur_time.FromDatetime(WHEN)
    return request


def _expected_event() -> pb.LogEventRequest:
    request = pb.LogEventRequest(user_id="u", event_type="view", event_id="e")
    request.event_time.FromDatetime(WHEN)
    return request


WRITES: list[tuple[str, str, Kind[Any, Any], dict[str, Any], Message]] = [
    (
        "record_interaction",
        "record_interactions",
        INTERACTIONS,
        {
            "conversation_id": "c",
            "input_text": "hi",
            "output_hash": "a" * 64,
            "prompt_tokens": 0,
            "metadata": {"a": 1},
            "occur_time": WHEN,
        },
        _expected_interaction(),
    ),
    (
        "submit_feedback",
        "submit_feedback_batch",
        FEEDBACK,
        {"message_id": "m", "thumb": False, "latency_ms": 0.0, "text": "ok"},
        pb.SubmitFeedbackRequest(
            message_id="m", thumb=feedback_pb2.THUMB_DOWN, latency_ms=0.0, text="ok"
        ),
    ),
    (
        "log_event",
        "log_events",
        EVENTS,
        {"user_id": "u", "event_type": "view", "event_time": WHEN, "event_id": "e"},
        _expected_event(),
    ),
]


@pytest.mark.parametrize(
    ("single", "batch", "kind", "given", "expected"), WRITES, ids=[write[0] for write in WRITES]
)
def test_every_write_path_sends_the_request_the_arguments_describe(
    client: FeedbackClient,
    servicer: RecordingServicer,
    single: str,
    batch: str,
    kind: Kind[Any, Any],
    given: dict[str, Any],
    expected: Message,
) -> None:
    """The single-item method, the batch method and ingest all build from the one declaration."""
    arguments = given | {"request_id": REQUEST_ID}
    getattr(client, single)(**arguments)
    getattr(client, batch)([arguments])
    client.ingest([kind.item_type(**arguments)])

    sent = [
        *servicer.requests(kind.request_type.DESCRIPTOR.name.removesuffix("Request")),
        *servicer.received_items(kind.batch_method),
        *(getattr(item, kind.name) for item in servicer.ingested),
    ]
    expected.request_id = REQUEST_ID  # type: ignore[attr-defined]
    assert len(sent) == 3
    for request in sent:
        if kind.happened is not None:
            assert request.HasField("sent_time")
            request.ClearField("sent_time")
        assert request == expected
