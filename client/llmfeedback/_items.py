"""The record kinds a client writes, declared once: typed items, and the kinds built on them.

Each item dataclass is the one list of its kind's fields (types, defaults, how a field goes into
the request); the kind beside it (INTERACTIONS, FEEDBACK, EVENTS) adds what fields cannot say. The
single-item methods take the same fields and build their request through the same kind, so an
item runs the same local checks: a mistake raises ValueError or TypeError where the item is made,
not in the middle of a batch. Values are captured at creation: changing a `metadata` dict
afterwards does not change what is sent.

An item is one record. It gets its idempotency key (`request_id`) when it is made, so however
often it is sent (client retries, re-sent batch items, or the same item passed to a later call
after a failure) the service stores it at most once; a repeat comes back as a duplicate. Make a
new item for a new record, and pass `request_id=None` to `dataclasses.replace` for the same reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ._hashing import compute_hash
from ._kinds import REQUEST_ID, SCORE, STRUCT, THUMB, TIME, Kind, converted
from .proto.feedback.v1 import feedback_service_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from google.protobuf.message import Message

__all__ = [
    "EVENTS",
    "FEEDBACK",
    "INTERACTIONS",
    "KINDS",
    "MAX_ITEM_BYTES",
    "EventItem",
    "FeedbackItem",
    "HistoricItem",
    "IngestItem",
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
    metadata: Mapping[str, Any] | None = field(default=None, metadata=converted(STRUCT))
    """Any JSON-like mapping."""
    occur_time: datetime | None = field(default=None, metadata=converted(TIME))
    """When the turn happened (timezone-aware); the receive time when left out."""
    request_id: str | None = field(default=None, metadata=converted(REQUEST_ID))
    """Idempotency key, a UUID string; a random one is set when the item is made without one."""
    _request: feedback_service_pb2.RecordInteractionRequest = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        _made(self)


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
    score: int | None = field(default=None, metadata=converted(SCORE))
    """Score from 1 (poor) to 5 (excellent)."""
    thumb: bool | None = field(default=None, metadata=converted(THUMB))
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
    metadata: Mapping[str, Any] | None = field(default=None, metadata=converted(STRUCT))
    """Any JSON-like mapping."""
    model: str | None = None
    """Model that produced the rated answer; taken from the rated interaction when omitted."""
    request_id: str | None = field(default=None, metadata=converted(REQUEST_ID))
    """Idempotency key, a UUID string; a random one is set when the item is made without one."""
    _request: feedback_service_pb2.SubmitFeedbackRequest = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        _made(self)


@dataclass(frozen=True)
class EventItem:
    """One analytics event for `log_events`, `ingest` or an `EventBatcher`; see `log_event`."""

    user_id: str
    """User who triggered the event."""
    event_type: str
    """Kind of event, such as "page_view"."""
    _: KW_ONLY
    details: Mapping[str, Any] | None = field(default=None, metadata=converted(STRUCT))
    """Any JSON-like mapping."""
    event_time: datetime | None = field(default=None, metadata=converted(TIME))
    """When the event happened (timezone-aware); the receive time when left out."""
    event_id: str | None = None
    """Your own identifier of the event (like Segment's messageId), unique across the service: an
    event whose event_id is already stored is not stored again, whatever its request_id."""
    request_id: str | None = field(default=None, metadata=converted(REQUEST_ID))
    """Idempotency key, a UUID string; a random one is set when the item is made without one."""
    _request: feedback_service_pb2.LogEventRequest = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _made(self)


IngestItem = InteractionItem | FeedbackItem | EventItem
"""Any item `ingest` takes."""


@dataclass(frozen=True, slots=True)
class HistoricItem:
    """An item of another system's history for `import_history`, with the time it was stored."""

    item: IngestItem
    create_time: datetime
    """When the source stored it (aware): the rating's time, the turn's or event's record time."""


def _hash_texts(request: feedback_service_pb2.RecordInteractionRequest) -> None:
    """Send the texts' hashes instead: the server stores only those, so the record is the same."""
    # Assigning the hash member of a oneof clears its text member.
    if request.WhichOneof("input") == "input_text":
        request.input_hash = compute_hash(request.input_text)
    if request.WhichOneof("output") == "output_text":
        request.output_hash = compute_hash(request.output_text)


INTERACTIONS = Kind(
    "interaction",
    InteractionItem,
    feedback_service_pb2.RecordInteractionRequest,
    batch_method="RecordInteractions",
    batch_type=feedback_service_pb2.RecordInteractionsRequest,
    batch_field="interactions",
    at_most_one=(("input_text", "input_hash"), ("output_text", "output_hash")),
    happened="occur_time",
    shrink=_hash_texts,
)
"""Chat turns: texts and hashes of one side exclude each other."""
FEEDBACK = Kind(
    "feedback",
    FeedbackItem,
    feedback_service_pb2.SubmitFeedbackRequest,
    batch_method="SubmitFeedbackBatch",
    batch_type=feedback_service_pb2.SubmitFeedbackBatchRequest,
    batch_field="feedback",
    exactly_one=("score", "thumb", "label"),
)
"""Ratings, carrying exactly one of score, thumb or label."""
EVENTS = Kind(
    "event",
    EventItem,
    feedback_service_pb2.LogEventRequest,
    batch_method="LogEvents",
    batch_type=feedback_service_pb2.LogEventsRequest,
    batch_field="events",
    happened="event_time",
)
"""Analytics events; `event_id` is the caller's own key, checked by the server."""
KINDS: dict[str, Kind[Any, Any]] = {kind.name: kind for kind in (INTERACTIONS, FEEDBACK, EVENTS)}
"""Every kind by its name (the IngestItem member and the "kind" of an ingest line)."""


def kind_of(item: object) -> Kind[Any, Any]:
    """The kind of an item; TypeError for anything that is not one."""
    for kind in KINDS.values():
        if isinstance(item, kind.item_type):
            return kind
    raise TypeError(
        f"ingest takes InteractionItem, FeedbackItem and EventItem objects, "
        f"not {type(item).__name__}"
    )


def _made(item: IngestItem) -> None:
    """Build and check an item's request when the item is made; it keeps the request."""
    kind = kind_of(item)
    request = kind.request(vars(item))
    object.__setattr__(item, "request_id", request.request_id)
    if kind.shrink is not None and encoded_size(request) > MAX_ITEM_BYTES:
        kind.shrink(request)
    _check_size(request, kind.name)
    object.__setattr__(item, "_request", request)


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
