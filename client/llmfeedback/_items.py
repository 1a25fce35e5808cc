"""Typed items for the batch and bulk-load methods, checked when they are created.

An item holds the same fields as the single-item method it stands for and runs the same local checks
through the same request-building code, so a mistake raises ValueError or TypeError where the item
is made, not in the middle of a batch. Values are captured at creation: changing a `metadata` dict
afterwards does not change what is sent.

An item is one record. It gets its idempotency key (`request_id`) when it is made, so however
often it is sent (client retries, re-sent batch items, or the same item passed to a later call
after a failure) the service stores it at most once; a repeat comes back as a duplicate. Make a
new item for a new record, and pass `request_id=None` to `dataclasses.replace` for the same reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ._hashing import compute_hash
from ._requests import event_request, feedback_request, interaction_request

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from datetime import datetime

    from google.protobuf.message import Message

    from ._proto.feedback.v1 import feedback_service_pb2

__all__ = [
    "MAX_ITEM_BYTES",
    "EventItem",
    "FeedbackItem",
    "InteractionItem",
    "coerce_items",
    "encoded_size",
]

MAX_ITEM_BYTES = 64 * 1024
"""Largest serialized item the service takes in a batch call or on the ingest stream."""

_ItemT = TypeVar("_ItemT", "InteractionItem", "FeedbackItem", "EventItem")


@dataclass(frozen=True)
class InteractionItem:
    """One chat turn for `record_interactions` or `ingest`; the arguments of `record_interaction`.

    The server stores only the hashes of `input_text` and `output_text`. When the texts would make
    the item larger than a batch item may be (64 KiB), they are hashed here instead, which stores
    the same record.
    """

    conversation_id: str
    """Conversation the turn belongs to."""
    _: KW_ONLY
    message_id: str | None = None
    """Identifier of the assistant message, unique across the service."""
    user_id: str | None = None
    """End user of the conversation."""
    model: str | None = None
    """Name of the model that answered."""
    input_text: str | None = None
    """The user input as text; excludes `input_hash`."""
    input_hash: str | None = None
    """SHA-256 of the user input, from `compute_hash`; excludes `input_text`."""
    output_text: str | None = None
    """The model answer as text; excludes `output_hash`."""
    output_hash: str | None = None
    """SHA-256 of the model answer, from `compute_hash`; excludes `output_text`."""
    latency_ms: float | None = None
    """Answer latency in milliseconds."""
    prompt_tokens: int | None = None
    """Tokens of the prompt."""
    completion_tokens: int | None = None
    """Tokens of the answer."""
    total_tokens: int | None = None
    """Tokens in all; computed by the server from the other two when left out."""
    metadata: Mapping[str, Any] | None = None
    """Any JSON-like mapping."""
    occur_time: datetime | None = None
    """When the turn happened (timezone-aware); the receive time when left out."""
    request_id: str | None = None
    """Idempotency key, a UUID string; a random one is set when the item is made without one."""
    _request: feedback_service_pb2.RecordInteractionRequest = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        request = interaction_request(
            self.conversation_id,
            message_id=self.message_id,
            user_id=self.user_id,
            model=self.model,
            input_text=self.input_text,
            input_hash=self.input_hash,
            output_text=self.output_text,
            output_hash=self.output_hash,
            latency_ms=self.latency_ms,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.total_tokens,
            metadata=self.metadata,
            occur_time=self.occur_time,
            request_id=self.request_id,
        )
        object.__setattr__(self, "request_id", request.request_id)
        if encoded_size(request) > MAX_ITEM_BYTES:
            # Assigning the hash member of a oneof clears its text member.
            if request.WhichOneof("input") == "input_text":
                request.input_hash = compute_hash(request.input_text)
            if request.WhichOneof("output") == "output_text":
                request.output_hash = compute_hash(request.output_text)
        _check_size(request, "interaction")
        object.__setattr__(self, "_request", request)


@dataclass(frozen=True)
class FeedbackItem:
    """One rating for `submit_feedback_batch` or `ingest`; the arguments of `submit_feedback`.

    Rate with exactly one of `score` (1-5), `thumb` (True up, False down) or `label`; name the
    answer by `conversation_id`, `message_id`, or both.
    """

    conversation_id: str | None = None
    """Conversation being rated; optional when `message_id` is given."""
    _: KW_ONLY
    message_id: str | None = None
    """Message being rated."""
    user_id: str | None = None
    """End user giving the feedback."""
    score: int | None = None
    """Score from 1 (poor) to 5 (excellent)."""
    thumb: bool | None = None
    """True for thumbs up, False for thumbs down."""
    label: str | None = None
    """Categorical rating such as "good"."""
    text: str | None = None
    """Free-text comment."""
    latency_ms: float | None = None
    """Latency of the rated answer in milliseconds."""
    tokens_used: int | None = None
    """Tokens used by the rated answer."""
    input_hash: str | None = None
    """SHA-256 of the user input."""
    output_hash: str | None = None
    """SHA-256 of the rated answer."""
    metadata: Mapping[str, Any] | None = None
    """Any JSON-like mapping."""
    model: str | None = None
    """Model that produced the rated answer; taken from the rated interaction when omitted."""
    request_id: str | None = None
    """Idempotency key, a UUID string; a random one is set when the item is made without one."""
    _request: feedback_service_pb2.SubmitFeedbackRequest = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        request = feedback_request(
            self.conversation_id,
            message_id=self.message_id,
            user_id=self.user_id,
            score=self.score,
            thumb=self.thumb,
            label=self.label,
            text=self.text,
            latency_ms=self.latency_ms,
            tokens_used=self.tokens_used,
            input_hash=self.input_hash,
            output_hash=self.output_hash,
            metadata=self.metadata,
            model=self.model,
            request_id=self.request_id,
        )
        object.__setattr__(self, "request_id", request.request_id)
        _check_size(request, "feedback")
        object.__setattr__(self, "_request", request)


@dataclass(frozen=True)
class EventItem:
    """One analytics event for `log_events`, `ingest` or an `EventBatcher`; see `log_event`."""

    user_id: str
    """User who triggered the event."""
    event_type: str
    """Kind of event, such as "page_view"."""
    _: KW_ONLY
    details: Mapping[str, Any] | None = None
    """Any JSON-like mapping."""
    event_time: datetime | None = None
    """When the event happened (timezone-aware); the receive time when left out."""
    event_id: str | None = None
    """Your own identifier of the event (like Segment's messageId), unique across the service: an
    event whose event_id is already stored is not stored again, whatever its request_id."""
    request_id: str | None = None
    """Idempotency key, a UUID string; a random one is set when the item is made without one."""
    _request: feedback_service_pb2.LogEventRequest = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        request = event_request(
            self.user_id,
            self.event_type,
            details=self.details,
            event_time=self.event_time,
            event_id=self.event_id,
            request_id=self.request_id,
        )
        object.__setattr__(self, "request_id", request.request_id)
        _check_size(request, "event")
        object.__setattr__(self, "_request", request)


def coerce_items(
    values: Iterable[_ItemT | Mapping[str, Any]],
    item_type: type[_ItemT],
) -> list[_ItemT]:
    """Take items as given and build the others from mappings of their fields.

    Raises ValueError or TypeError naming the position of the first item that cannot be built.
    """
    factory: Callable[..., _ItemT] = item_type
    items: list[_ItemT] = []
    for index, value in enumerate(values):
        if isinstance(value, item_type):
            items.append(value)
        elif isinstance(value, Mapping):
            try:
                items.append(factory(**value))
            except TypeError as error:
                raise TypeError(f"item {index}: {error}") from error
            except ValueError as error:
                raise ValueError(f"item {index}: {error}") from error
        else:
            raise TypeError(
                f"item {index} must be a {item_type.__name__} or a mapping of its fields, "
                f"not {type(value).__name__}"
            )
    return items


def encoded_size(message: Message) -> int:
    """Bytes the message takes as an element of a batch request or an ingest message."""
    size = message.ByteSize()
    # Field tag (one byte for the small field numbers used) plus the varint length prefix.
    return 1 + _varint_length(size) + size


def _varint_length(value: int) -> int:
    length = 1
    while value >= 0x80:
        value >>= 7
        length += 1
    return length


def _check_size(request: Message, kind: str) -> None:
    """Refuse an item the service would refuse for its size, naming the field that weighs most."""
    size = encoded_size(request)
    if size <= MAX_ITEM_BYTES:
        return
    weights = {
        descriptor.name: len(value.SerializeToString())
        if descriptor.message_type is not None
        else len(str(value).encode("utf-8"))
        for descriptor, value in request.ListFields()
    }
    heaviest = max(weights, key=weights.__getitem__)
    raise ValueError(
        f"the {kind} takes {size} bytes serialized, more than the {MAX_ITEM_BYTES} a batch item "
        f"may take; {heaviest} alone takes {weights[heaviest]}"
    )
