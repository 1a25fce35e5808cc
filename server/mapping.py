"""The one place that converts between protobuf messages and the service's plain Python values."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.message import Message

from llmfeedback.proto.feedback.v1 import (
    access_pb2,
    event_pb2,
    feedback_pb2,
    feedback_service_pb2,
    interaction_pb2,
    privacy_pb2,
    stats_pb2,
)
from server.service import (
    EventInput,
    EventSelection,
    ExportRequest,
    FeedbackInput,
    FeedbackSelection,
    FieldViolation,
    HistoricInput,
    InteractionInput,
    InteractionSelection,
    InvalidArgument,
    PageRequest,
    Stats,
    StatsInput,
)
from server.service.api_keys import Scope
from server.service.list_inputs import SelectionT
from server.service.listing import Chunk, Page
from server.service.pii.redaction import HMAC_SHA256, SHA256
from server.service.subjects import CONVERSATION, USER
from server.service.watch import WatchMessage, WatchRequest
from storage.records import (
    OPT_IN,
    OPT_OUT,
    ApiKeyEventRecord,
    ApiKeyRecord,
    ErasureRecord,
    EventRecord,
    EventStats,
    FeedbackRecord,
    FeedbackStats,
    InteractionRecord,
    InteractionStats,
    Label,
    OptOutEventRecord,
    OptOutRecord,
    Percentiles,
    Rating,
    Score,
    StatsBucket,
    Thumb,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BEFORE_ANY_VALID_TIME = datetime.min.replace(tzinfo=UTC)
_MAX_EXACT_FLOAT_INT = 2**53
MessageT = TypeVar("MessageT", bound=Message)


class _PageResponse(Protocol):
    next_page_token: str


class _ChunkResponse(Protocol):
    resume_token: str


PageResponseT = TypeVar("PageResponseT", bound=_PageResponse)
ChunkResponseT = TypeVar("ChunkResponseT", bound=_ChunkResponse)


# ---- protobuf -> service inputs ----


def interaction_input(request: feedback_service_pb2.RecordInteractionRequest) -> InteractionInput:
    """Read a RecordInteractionRequest."""
    return InteractionInput(
        conversation_id=request.conversation_id,
        message_id=request.message_id,
        user_id=request.user_id,
        model=request.model,
        input_text=_oneof_value(request, "input", "input_text"),
        input_hash=_oneof_value(request, "input", "input_hash"),
        output_text=_oneof_value(request, "output", "output_text"),
        output_hash=_oneof_value(request, "output", "output_hash"),
        latency_ms=request.latency_ms if request.HasField("latency_ms") else None,
        prompt_tokens=request.prompt_tokens if request.HasField("prompt_tokens") else None,
        completion_tokens=(
            request.completion_tokens if request.HasField("completion_tokens") else None
        ),
        total_tokens=request.total_tokens if request.HasField("total_tokens") else None,
        metadata=struct_to_dict(request.metadata),
        metadata_bytes=request.metadata.ByteSize(),
        occur_time=_time_or_none(request, "occur_time"),
        request_id=request.request_id,
        request_digest=request_digest(request),
        sent_time=_time_or_none(request, "sent_time"),
    )


def feedback_input(request: feedback_service_pb2.SubmitFeedbackRequest) -> FeedbackInput:
    """Read a SubmitFeedbackRequest."""
    rating = request.WhichOneof("rating")
    return FeedbackInput(
        conversation_id=request.conversation_id,
        message_id=request.message_id,
        user_id=request.user_id,
        model=request.model,
        score=request.score if rating == "score" else None,
        thumb=_thumb_name(request.thumb) if rating == "thumb" else None,
        label=request.label if rating == "label" else None,
        text=request.text,
        latency_ms=request.latency_ms if request.HasField("latency_ms") else None,
        tokens_used=request.tokens_used if request.HasField("tokens_used") else None,
        input_hash=request.input_hash,
        output_hash=request.output_hash,
        metadata=struct_to_dict(request.metadata),
        metadata_bytes=request.metadata.ByteSize(),
        request_id=request.request_id,
        request_digest=request_digest(request),
    )


def event_input(request: feedback_service_pb2.LogEventRequest) -> EventInput:
    """Read a LogEventRequest."""
    return EventInput(
        user_id=request.user_id,
        event_type=request.event_type,
        details=struct_to_dict(request.details),
        details_bytes=request.details.ByteSize(),
        event_time=_time_or_none(request, "event_time"),
        event_id=request.event_id,
        request_id=request.request_id,
        request_digest=request_digest(request),
        sent_time=_time_or_none(request, "sent_time"),
    )


def request_digest(request: Message) -> str | None:
    """A fingerprint of a write's content, to tell a retry from another request reusing its id.

    Deterministic serialization orders map keys (Struct fields), so equal content gives equal
    bytes. The request id itself (any spelling of the UUID) and sent_time (a retry may carry a
    fresh one) are left out. None without a request_id.
    """
    if not getattr(request, "request_id", ""):
        return None
    content = type(request)()
    content.CopyFrom(request)
    content.ClearField("request_id")
    if "sent_time" in request.DESCRIPTOR.fields_by_name:
        content.ClearField("sent_time")
    return hashlib.sha256(content.SerializeToString(deterministic=True)).hexdigest()[:32]


def stats_input(request: feedback_service_pb2.GetStatsRequest) -> StatsInput:
    """Read a GetStatsRequest."""
    return StatsInput(
        conversation_id=request.conversation_id,
        user_id=request.user_id,
        message_id=request.message_id,
        start_time=_time_or_none(request, "start_time"),
        end_time=_time_or_none(request, "end_time"),
        model=request.model,
        event_type=request.event_type,
        bucket=_enum_name(_TIME_BUCKETS, request.bucket),
        group_by=_enum_name(_GROUP_KEYS, request.group_by),
        top_n=request.top_n,
        compare_previous=request.compare_previous,
    )


_TIME_BUCKETS: dict[int, str] = {
    stats_pb2.TIME_BUCKET_HOUR: "hour",
    stats_pb2.TIME_BUCKET_DAY: "day",
    stats_pb2.TIME_BUCKET_WEEK: "week",
    stats_pb2.TIME_BUCKET_MONTH: "month",
}
_GROUP_KEYS: dict[int, str] = {
    stats_pb2.STATS_GROUP_BY_MODEL: "model",
    stats_pb2.STATS_GROUP_BY_EVENT_TYPE: "event_type",
    stats_pb2.STATS_GROUP_BY_CONVERSATION: "conversation",
    stats_pb2.STATS_GROUP_BY_USER: "user",
}


def _enum_name(names: dict[int, str], value: int) -> str:
    """The service's name of an enum value; "" when unspecified, a rejected name when unknown."""
    if value == 0:
        return ""
    return names.get(value, f"unknown value {value}")


# ---- records -> protobuf ----


@dataclass(frozen=True, slots=True)
class Converted:
    """A message field set from a record attribute of another name, through a function."""

    field: str
    attribute: str
    convert: Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Expanded:
    """Message fields set from what a function makes of one record attribute (keyword → value)."""

    attribute: str
    fields_of: Callable[[Any], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class RecordMessage(Generic[MessageT]):
    """How one record kind becomes its protobuf message, declared once and built by one piece
    of code for a write's answer, a history, a page and an export chunk.

    The message's own schema says the rest: every field is set from the record's attribute of
    the same name (None leaves it unset), a Timestamp from an aware datetime, the Struct from a
    JSON object (unset when empty). A record type that lacks an attribute (a list entry has no
    replace time; a write's record holds its rating as a Rating, a list entry in columns)
    leaves that part out. Each record type gets a writer compiled on first use, as dataclasses
    and namedtuple compile theirs: lists and exports build up to 1000 messages per response at
    tens of thousands of rows a second, and a loop over the fields costs a third more per row
    than the straight-line code.
    """

    message: type[MessageT]
    converted: tuple[Converted, ...] = ()
    """Fields set from an attribute of another name."""
    expanded: tuple[Expanded, ...] = ()
    """Attributes that set several fields."""
    copied: tuple[str, ...] = field(init=False)
    """Fields set from the record's attribute of the same name."""
    times: tuple[str, ...] = field(init=False)
    """Timestamp fields."""
    json_field: str = field(init=False)
    """The Struct field."""
    _writers: dict[type, _Writers] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        fields = self.message.DESCRIPTOR.fields
        by_type = {
            name: [found.name for found in fields if _message_type(found) == name]
            for name in (_TIMESTAMP, _STRUCT)
        }
        (json_field,) = by_type[_STRUCT]
        converted = {part.field for part in self.converted}
        special = {*converted, *by_type[_TIMESTAMP], json_field}
        copied = tuple(found.name for found in fields if found.name not in special)
        object.__setattr__(self, "copied", copied)
        object.__setattr__(self, "times", tuple(by_type[_TIMESTAMP]))
        object.__setattr__(self, "json_field", json_field)

    def build(self, record: Any) -> MessageT:
        """The message of one record."""
        message: MessageT = self._writers_of(type(record)).one(self.message, record)
        return message

    def add_all(
        self, target: RepeatedCompositeFieldContainer[MessageT], records: Iterable[Any]
    ) -> None:
        """Append the messages of `records`, all of one record type, to a repeated field."""
        remaining = iter(records)
        first = next(remaining, None)
        if first is not None:
            self._writers_of(type(first)).all(target.add, itertools.chain((first,), remaining))

    def _writers_of(self, record_type: type) -> _Writers:
        writers = self._writers.get(record_type)
        if writers is None:
            writers = self._writers[record_type] = self._compile(_attributes(record_type))
        return writers

    def _compile(self, held: frozenset[str]) -> _Writers:
        """The straight-line writers of a record type holding the attributes `held`."""
        names = [*self.copied, *self.times, self.json_field]
        names += [part.field for part in self.converted]
        names += [part.attribute for part in self.converted]
        names += [whole.attribute for whole in self.expanded]
        if not all(name.isidentifier() for name in names):
            raise ValueError(f"not an attribute name among {names}")
        namespace: dict[str, Any] = {"fill_struct": fill_struct, "set_time": _set_time}
        arguments = [f"{name}=record.{name}" for name in self.copied if name in held]
        for number, part in enumerate(self.converted):
            if part.attribute in held:
                namespace[f"convert_{number}"] = part.convert
                arguments.append(f"{part.field}=convert_{number}(record.{part.attribute})")
        for number, whole in enumerate(self.expanded):
            if whole.attribute in held:
                namespace[f"expand_{number}"] = whole.fields_of
                arguments.append(f"**expand_{number}(record.{whole.attribute})")
        body = [f"message = make({', '.join(arguments)})"]
        if self.json_field in held:
            json_value = f"record.{self.json_field}"
            body.append(f"if {json_value}: fill_struct(message.{self.json_field}, {json_value})")
        for name in self.times:
            if name in held:
                body.append(
                    f"if record.{name} is not None: set_time(message.{name}, record.{name})"
                )
        one = "\n    ".join([*body, "return message"])
        each = "\n        ".join(body)
        source = (
            f"def write(make, record):\n    {one}\n\n"
            f"def write_all(make, records):\n    for record in records:\n        {each}\n"
        )
        exec(source, namespace)  # from the declaration's identifiers only
        return _Writers(namespace["write"], namespace["write_all"])


class _Writers(NamedTuple):
    """A record type's compiled writers: of one message, and of many into a repeated field."""

    one: Callable[[Callable[..., Any], Any], Any]
    all: Callable[[Callable[..., Any], Iterable[Any]], None]


_TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name
_STRUCT = struct_pb2.Struct.DESCRIPTOR.full_name


def _message_type(found: Any) -> str | None:
    """The full name of a field's message type; None for a scalar field."""
    return None if found.message_type is None else str(found.message_type.full_name)


def _attributes(record_type: type) -> frozenset[str]:
    """The attribute names a record type declares (a dataclass's fields, a NamedTuple's)."""
    if dataclasses.is_dataclass(record_type):
        return frozenset(found.name for found in dataclasses.fields(record_type))
    return frozenset(getattr(record_type, "_fields", ()))


def _rating_fields(rating: Rating) -> dict[str, Any]:
    """The score, thumb or label field of a write's Rating."""
    match rating:
        case Score(value):
            return {"score": value}
        case Thumb(up):
            return {"thumb": _THUMBS[up]}
        case Label(name):
            return {"label": name}
    raise ValueError(f"not a rating: {rating!r}")


_THUMBS = {True: feedback_pb2.THUMB_UP, False: feedback_pb2.THUMB_DOWN}

_HASH_KINDS = {SHA256: privacy_pb2.HASH_KIND_SHA256, HMAC_SHA256: privacy_pb2.HASH_KIND_HMAC_SHA256}
_HASH_KIND_FIELDS = tuple(
    Converted(name, name, _HASH_KINDS.get) for name in ("input_hash_kind", "output_hash_kind")
)

FEEDBACK_MESSAGE = RecordMessage(
    feedback_pb2.Feedback,
    # thumb_up is a list entry's column
    converted=(Converted("thumb", "thumb_up", _THUMBS.get), *_HASH_KIND_FIELDS),
    expanded=(Expanded("rating", _rating_fields),),  # a write's record
)
INTERACTION_MESSAGE = RecordMessage(interaction_pb2.Interaction, converted=_HASH_KIND_FIELDS)
EVENT_MESSAGE = RecordMessage(event_pb2.Event)


@dataclass(frozen=True, slots=True)
class ListedResponses(Generic[PageResponseT, ChunkResponseT]):
    """How one listed kind's pages and export chunks become responses, declared once per kind:
    its records go into one repeated field, beside the next page's token or the resume token."""

    records: RecordMessage[Any]
    field: str
    """The repeated field of both responses that holds the records."""
    page: type[PageResponseT]
    chunk: type[ChunkResponseT]

    def page_response(self, page: Page[Any]) -> PageResponseT:
        """Write a page of the kind."""
        response = self.page()
        response.next_page_token = page.next_page_token
        self.records.add_all(getattr(response, self.field), page.items)
        return response

    def chunk_response(self, chunk: Chunk[Any]) -> ChunkResponseT:
        """Write a chunk of the kind's export."""
        response = self.chunk()
        response.resume_token = chunk.resume_token
        self.records.add_all(getattr(response, self.field), chunk.items)
        return response


FEEDBACK_RESPONSES = ListedResponses(
    FEEDBACK_MESSAGE,
    "feedback",
    feedback_service_pb2.ListFeedbackResponse,
    feedback_service_pb2.ExportFeedbackResponse,
)
INTERACTION_RESPONSES = ListedResponses(
    INTERACTION_MESSAGE,
    "interactions",
    feedback_service_pb2.ListInteractionsResponse,
    feedback_service_pb2.ExportInteractionsResponse,
)
EVENT_RESPONSES = ListedResponses(
    EVENT_MESSAGE,
    "events",
    feedback_service_pb2.ListEventsResponse,
    feedback_service_pb2.ExportEventsResponse,
)


@dataclass(frozen=True, slots=True)
class WatchedRecords:
    """How one kind's records go into watch responses, declared once per kind.

    A watch response is built from bytes: each record is written once, as the repeated
    field's element with its position, and shared by every watcher that takes it (the live
    tail hands one record to thousands of streams); a response is those elements and its own
    position, which is exactly how protobuf would serialize the whole message.
    """

    records: RecordMessage[Any]
    watched: type[Any]
    """The element type (WatchedFeedback...), whose field 1 is the record, 2 its position."""
    record_field: str

    def element(self, position: str, entry: Any) -> bytes:
        """One record with its position, as a length-delimited field 1 of the response: the
        element's field 1 (the record) and 2 (the position) framed by hand, which spares
        building and copying an element message per record."""
        record: bytes = self.records.build(entry).SerializeToString()
        token = position.encode()
        body = b"".join(
            (_RECORDS_TAG, _varint(len(record)), record, _POSITION_TAG, _varint(len(token)), token)
        )
        return _RECORDS_TAG + _varint(len(body)) + body


_RECORDS_TAG = bytes([(1 << 3) | 2])
_POSITION_TAG = bytes([(2 << 3) | 2])

WATCHED_RECORDS: dict[str, WatchedRecords] = {
    "feedback": WatchedRecords(FEEDBACK_MESSAGE, feedback_service_pb2.WatchedFeedback, "feedback"),
    "interactions": WatchedRecords(
        INTERACTION_MESSAGE, feedback_service_pb2.WatchedInteraction, "interaction"
    ),
    "events": WatchedRecords(EVENT_MESSAGE, feedback_service_pb2.WatchedEvent, "event"),
}
"""Per kind (server.service.watch_positions.KINDS), how its records are watched."""


def watched_record(kind: str, position: str, entry: Any) -> bytes:
    """A record of `kind` as watch responses carry it (server.service.tail.Encode)."""
    return WATCHED_RECORDS[kind].element(position, entry)


def watch_response(message: WatchMessage) -> bytes:
    """The serialized Watch*Response of a watch message: its records, then its position."""
    position = message.position.encode()
    return b"".join(message.records) + _POSITION_TAG + _varint(len(position)) + position


def watch_request(request: WatchRequestMessage, selection: SelectionT) -> WatchRequest[SelectionT]:
    """Read the start fields of any Watch request, around its selection."""
    duration = request.progress_interval
    interval = (
        duration.seconds + duration.nanos / 1e9 if request.HasField("progress_interval") else None
    )
    return WatchRequest(
        selection=selection,
        start_position=request.start_position,
        start_page_token=request.start_page_token,
        progress_seconds=interval,
    )


def interaction_message(record: InteractionRecord) -> interaction_pb2.Interaction:
    """Write a stored interaction."""
    return INTERACTION_MESSAGE.build(record)


def feedback_message(record: FeedbackRecord) -> feedback_pb2.Feedback:
    """Write a stored feedback entry."""
    return FEEDBACK_MESSAGE.build(record)


def event_message(record: EventRecord) -> event_pb2.Event:
    """Write a stored analytics event."""
    return EVENT_MESSAGE.build(record)


class StatsResponses:
    """GetStats responses, and the wire form of their buckets, reused while their stats are.

    The storage layer hands out the same immutable answer objects while the cells they were read
    from are unchanged (storage.aggregates.cache), so the identities of those objects name their
    contents: a response with buckets is built once per set of answer objects and shared by the
    calls that get the same objects again (gRPC only reads it, and callers must not change it
    either); a bucket is serialized once per set of stats objects. Every entry holds the objects
    its key names, so no identity is reused while it is cached. Shared by the server's threads.
    """

    def __init__(self, max_response_buckets: int = 10_000, max_buckets: int = 20_000) -> None:
        """Keep responses holding up to `max_response_buckets` buckets in all (about 700 bytes
        each on the wire for three kinds), and up to `max_buckets` serialized buckets."""
        self._responses: OrderedDict[
            tuple[Any, ...], tuple[tuple[Any, ...], feedback_service_pb2.GetStatsResponse]
        ] = OrderedDict()
        self._response_buckets = 0
        self._max_response_buckets = max_response_buckets
        self._buckets: OrderedDict[tuple[Any, ...], tuple[StatsBucket, bytes]] = OrderedDict()
        self._max_buckets = max_buckets
        self._lock = threading.Lock()

    def response(self, stats: Stats) -> feedback_service_pb2.GetStatsResponse:
        """Write the aggregates of a stats request."""
        if not stats.buckets:
            return _new_stats_response(stats, self._framed)
        parts = (
            stats.feedback,
            stats.interactions,
            stats.events,
            stats.buckets,
            stats.groups,
            stats.previous,
        )
        key = (*map(id, parts), stats.change)
        with self._lock:
            cached = self._responses.get(key)
        if cached is not None and all(a is b for a, b in zip(cached[0], parts, strict=True)):
            return cached[1]
        response = _new_stats_response(stats, self._framed)
        with self._lock:
            previous = self._responses.pop(key, None)
            if previous is not None:
                self._response_buckets -= len(previous[0][3])
            self._responses[key] = (parts, response)
            self._response_buckets += len(stats.buckets)
            while self._response_buckets > self._max_response_buckets and self._responses:
                _, (evicted, _) = self._responses.popitem(last=False)
                self._response_buckets -= len(evicted[3])
        return response

    def _framed(self, bucket: StatsBucket) -> bytes:
        """A bucket's length prefix and serialized StatsBucket, made once per stats objects."""
        kinds = bucket.stats
        key = (
            bucket.start_time,
            bucket.end_time,
            id(kinds.feedback),
            id(kinds.interactions),
            id(kinds.events),
        )
        with self._lock:
            cached = self._buckets.get(key)
            if cached is not None and _same_objects(cached[0].stats, kinds):
                self._buckets.move_to_end(key)
                return cached[1]
        message = stats_pb2.StatsBucket(
            start_time=timestamp(bucket.start_time), end_time=timestamp(bucket.end_time)
        )
        _write_kinds(message, kinds.feedback, kinds.interactions, kinds.events)
        body = message.SerializeToString()
        framed = _varint(len(body)) + body
        with self._lock:
            self._buckets[key] = (bucket, framed)
            if len(self._buckets) > self._max_buckets:
                self._buckets.popitem(last=False)
        return framed


def _new_stats_response(
    stats: Stats, framed: Callable[[StatsBucket], bytes]
) -> feedback_service_pb2.GetStatsResponse:
    response = feedback_service_pb2.GetStatsResponse()
    _write_kinds(response, stats.feedback, stats.interactions, stats.events)
    if stats.buckets:
        # Parsing the buckets' wire form at once is far cheaper than building 365 of them.
        response.MergeFromString(b"".join(_BUCKET_TAG + framed(bucket) for bucket in stats.buckets))
    for group in stats.groups:
        added = response.groups.add(key=group.key)
        _write_kinds(added, group.stats.feedback, group.stats.interactions, group.stats.events)
    if stats.previous is not None:
        previous = stats.previous
        response.previous.start_time.CopyFrom(timestamp(previous.start_time))
        response.previous.end_time.CopyFrom(timestamp(previous.end_time))
        _write_kinds(
            response.previous,
            previous.stats.feedback,
            previous.stats.interactions,
            previous.stats.events,
        )
    if stats.change is not None:
        change = stats.change
        response.change.CopyFrom(
            stats_pb2.StatsChange(
                feedback_count_ratio=change.feedback_count_ratio,
                avg_score_delta=change.avg_score_delta,
                thumbs_up_ratio_delta=change.thumbs_up_ratio_delta,
                interaction_count_ratio=change.interaction_count_ratio,
                avg_latency_ms_delta=change.avg_latency_ms_delta,
                event_count_ratio=change.event_count_ratio,
            )
        )
    return response


_BUCKET_TAG = bytes([(feedback_service_pb2.GetStatsResponse.BUCKETS_FIELD_NUMBER << 3) | 2])
"""Tag of a length-delimited GetStatsResponse.buckets element."""


def _same_objects(cached: Any, current: Any) -> bool:
    return (
        cached.feedback is current.feedback
        and cached.interactions is current.interactions
        and cached.events is current.events
    )


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _write_kinds(
    message: Any,
    feedback: FeedbackStats | None,
    interactions: InteractionStats | None,
    events: EventStats | None,
) -> None:
    """Set the feedback, interactions and events fields of a response, bucket, group or period."""
    if feedback is not None:
        message.feedback.CopyFrom(_feedback_stats(feedback))
    if interactions is not None:
        message.interactions.CopyFrom(_interaction_stats(interactions))
    if events is not None:
        message.events.CopyFrom(_event_stats(events))


def _feedback_stats(stats: FeedbackStats) -> stats_pb2.FeedbackStats:
    counts = stats.score_counts
    return stats_pb2.FeedbackStats(
        total_count=stats.total_count,
        scored_count=stats.scored_count,
        avg_score=stats.avg_score,
        score1_count=counts.get(1, 0),
        score2_count=counts.get(2, 0),
        score3_count=counts.get(3, 0),
        score4_count=counts.get(4, 0),
        score5_count=counts.get(5, 0),
        thumbs_up_count=stats.thumbs_up_count,
        thumbs_down_count=stats.thumbs_down_count,
        label_counts=stats.label_counts,
        avg_latency_ms=stats.avg_latency_ms,
        avg_tokens=stats.avg_tokens,
        with_text_count=stats.with_text_count,
        thumbs_up_ratio=stats.thumbs_up_ratio,
        latency_ms_percentiles=_percentiles(stats.latency_ms_percentiles),
        tokens_percentiles=_percentiles(stats.tokens_percentiles),
    )


def _interaction_stats(stats: InteractionStats) -> stats_pb2.InteractionStats:
    return stats_pb2.InteractionStats(
        total_count=stats.total_count,
        avg_latency_ms=stats.avg_latency_ms,
        avg_total_tokens=stats.avg_total_tokens,
        latency_ms_percentiles=_percentiles(stats.latency_ms_percentiles),
        total_tokens_percentiles=_percentiles(stats.total_tokens_percentiles),
    )


def _percentiles(percentiles: Percentiles) -> stats_pb2.Percentiles | None:
    """Unset when no record carries the measurement (all four are then unset)."""
    if percentiles.p50 is None:
        return None
    return stats_pb2.Percentiles(
        p50=percentiles.p50, p90=percentiles.p90, p95=percentiles.p95, p99=percentiles.p99
    )


def _event_stats(stats: EventStats) -> stats_pb2.EventStats:
    return stats_pb2.EventStats(total_count=stats.total_count, type_counts=stats.type_counts)


# ---- well-known types ----


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """An aware datetime as a Timestamp (microsecond precision).

    Arithmetic on the timedelta is several times faster than Timestamp.FromDatetime, and this
    runs for every record returned.
    """
    since_epoch = value - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=since_epoch.days * 86_400 + since_epoch.seconds,
        nanos=since_epoch.microseconds * 1000,
    )


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON values; whole numbers come back as int so JSON stays natural."""
    return {key: _value_to_python(value) for key, value in struct.fields.items()}


def dict_to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    """Plain JSON values as a Struct."""
    struct = struct_pb2.Struct()
    if value:
        fill_struct(struct, value)
    return struct


def fill_struct(struct: struct_pb2.Struct, value: dict[str, Any]) -> None:
    """Set plain JSON values into a Struct in place.

    Three times faster than Struct.update, which checks and dispatches in Python per value:
    exports convert a metadata or details object on most rows.
    """
    fields = struct.fields
    for key, item in value.items():
        _set_value(fields[key], item)


def _set_value(target: struct_pb2.Value, item: Any) -> None:
    kind = item.__class__
    if kind is str:
        target.string_value = item
    elif kind is bool:
        target.bool_value = item
    elif kind is int or kind is float:
        target.number_value = item
    elif item is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif kind is dict:
        target.struct_value.SetInParent()  # an empty object is still an object
        fill_struct(target.struct_value, item)
    elif kind is list:
        target.list_value.SetInParent()
        add = target.list_value.values.add
        for element in item:
            _set_value(add(), element)
    else:
        raise ValueError(f"not a JSON value: {item!r}")


def _value_to_python(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_value_to_python(item) for item in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        if math.isfinite(number) and number.is_integer() and abs(number) <= _MAX_EXACT_FLOAT_INT:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def historic_input(
    item: feedback_service_pb2.ImportItem, written: InteractionInput | FeedbackInput | EventInput
) -> HistoricInput:
    """An imported item's input: the item itself and when its source stored it."""
    return HistoricInput(written, _time_or_none(item, "create_time"))


def _time_or_none(message: Any, field: str) -> datetime | None:
    """A Timestamp field as an aware datetime; invalid values map to a time every rule rejects."""
    if field not in message.DESCRIPTOR.fields_by_name or not message.HasField(field):
        return None  # a Watch request has no time range
    ts: timestamp_pb2.Timestamp = getattr(message, field)
    try:
        if not 0 <= ts.nanos <= 999_999_999:
            return _BEFORE_ANY_VALID_TIME
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return _BEFORE_ANY_VALID_TIME


def _oneof_value(message: Any, group: str, field: str) -> str | None:
    return getattr(message, field) if message.WhichOneof(group) == field else None


def _thumb_name(value: int) -> str:
    if value == feedback_pb2.THUMB_UP:
        return "up"
    if value == feedback_pb2.THUMB_DOWN:
        return "down"
    return "unspecified"


# ---- lists and exports ----

_RATING_KIND_NAMES = {
    feedback_pb2.RATING_KIND_UNSPECIFIED: "",
    feedback_pb2.RATING_KIND_SCORE: "score",
    feedback_pb2.RATING_KIND_THUMB: "thumb",
    feedback_pb2.RATING_KIND_LABEL: "label",
}

_FeedbackFilters = (
    feedback_service_pb2.ListFeedbackRequest
    | feedback_service_pb2.ExportFeedbackRequest
    | feedback_service_pb2.WatchFeedbackRequest
)
_InteractionFilters = (
    feedback_service_pb2.ListInteractionsRequest
    | feedback_service_pb2.ExportInteractionsRequest
    | feedback_service_pb2.WatchInteractionsRequest
)
_EventFilters = (
    feedback_service_pb2.ListEventsRequest
    | feedback_service_pb2.ExportEventsRequest
    | feedback_service_pb2.WatchEventsRequest
)
WatchRequestMessage = (
    feedback_service_pb2.WatchFeedbackRequest
    | feedback_service_pb2.WatchInteractionsRequest
    | feedback_service_pb2.WatchEventsRequest
)
ListRequestMessage = (
    feedback_service_pb2.ListFeedbackRequest
    | feedback_service_pb2.ListInteractionsRequest
    | feedback_service_pb2.ListEventsRequest
)
ExportRequestMessage = (
    feedback_service_pb2.ExportFeedbackRequest
    | feedback_service_pb2.ExportInteractionsRequest
    | feedback_service_pb2.ExportEventsRequest
)


def feedback_selection(request: _FeedbackFilters) -> FeedbackSelection:
    """Read the filters of a ListFeedbackRequest or an ExportFeedbackRequest."""
    return FeedbackSelection(
        conversation_id=request.conversation_id,
        message_id=request.message_id,
        user_id=request.user_id,
        model=request.model,
        min_score=request.min_score if request.HasField("min_score") else None,
        max_score=request.max_score if request.HasField("max_score") else None,
        # An enum value this server does not know reaches the rules as its number.
        rating_kind=_RATING_KIND_NAMES.get(request.rating_kind, str(request.rating_kind)),
        label=request.label,
        has_text=request.has_text if request.HasField("has_text") else None,
        start_time=_time_or_none(request, "start_time"),
        end_time=_time_or_none(request, "end_time"),
    )


def interaction_selection(request: _InteractionFilters) -> InteractionSelection:
    """Read the filters of a ListInteractionsRequest or an ExportInteractionsRequest."""
    return InteractionSelection(
        conversation_id=request.conversation_id,
        message_id=request.message_id,
        user_id=request.user_id,
        model=request.model,
        start_time=_time_or_none(request, "start_time"),
        end_time=_time_or_none(request, "end_time"),
    )


def event_selection(request: _EventFilters) -> EventSelection:
    """Read the filters of a ListEventsRequest or an ExportEventsRequest."""
    return EventSelection(
        user_id=request.user_id,
        event_type=request.event_type,
        start_time=_time_or_none(request, "start_time"),
        end_time=_time_or_none(request, "end_time"),
    )


def page_request(request: ListRequestMessage, selection: SelectionT) -> PageRequest[SelectionT]:
    """Read the paging fields of any List request, around its selection."""
    return PageRequest(
        selection=selection,
        page_size=request.page_size,
        page_token=request.page_token,
        order_by=request.order_by,
    )


def export_request(
    request: ExportRequestMessage, selection: SelectionT
) -> ExportRequest[SelectionT]:
    """Read the order and resume token of any Export request, around its selection."""
    return ExportRequest(
        selection=selection, order_by=request.order_by, resume_token=request.resume_token
    )


def _set_time(target: timestamp_pb2.Timestamp, value: datetime) -> None:
    since_epoch = value - _EPOCH
    target.seconds = since_epoch.days * 86_400 + since_epoch.seconds
    target.nanos = since_epoch.microseconds * 1000


# ---- API keys ----

_SCOPE_ENUMS = {
    Scope.INGEST: access_pb2.SCOPE_INGEST,
    Scope.READ: access_pb2.SCOPE_READ,
    Scope.ADMIN: access_pb2.SCOPE_ADMIN,
}
_SCOPES_BY_ENUM: dict[int, Scope] = {int(value): scope for scope, value in _SCOPE_ENUMS.items()}
_KEY_ACTIONS = {
    "create": access_pb2.API_KEY_EVENT_ACTION_CREATE,
    "revoke": access_pb2.API_KEY_EVENT_ACTION_REVOKE,
}


def scope_of(value: int) -> Scope | None:
    """The scope an enum value names (None for SCOPE_UNSPECIFIED or an unknown value)."""
    return _SCOPES_BY_ENUM.get(value)


def scopes_input(values: Iterable[int]) -> list[Scope] | InvalidArgument:
    """The scopes of a CreateApiKeyRequest, or the violation naming the bad ones."""
    scopes = [scope_of(value) for value in values]
    if None in scopes:
        return InvalidArgument(
            [FieldViolation("scopes", "must name SCOPE_INGEST, SCOPE_READ or SCOPE_ADMIN only")]
        )
    return [scope for scope in scopes if scope is not None]


def api_key_message(key: ApiKeyRecord) -> access_pb2.ApiKey:
    """An ApiKey message (never with the secret, which storage does not have)."""
    message = access_pb2.ApiKey(
        prefix=key.prefix,
        name=key.name,
        scopes=[_SCOPE_ENUMS[Scope(scope)] for scope in key.scopes],
        create_time=timestamp(key.create_time),
        created_by=key.created_by,
        revoked_by=key.revoked_by or "",
        client_identity=key.client_identity or "",
    )
    if key.last_use_time is not None:
        message.last_use_time.CopyFrom(timestamp(key.last_use_time))
    if key.revoke_time is not None:
        message.revoke_time.CopyFrom(timestamp(key.revoke_time))
    return message


def api_key_event_message(event: ApiKeyEventRecord) -> access_pb2.ApiKeyEvent:
    """An ApiKeyEvent message."""
    return access_pb2.ApiKeyEvent(
        event_time=timestamp(event.event_time),
        action=_KEY_ACTIONS.get(event.action, access_pb2.API_KEY_EVENT_ACTION_UNSPECIFIED),
        key_prefix=event.key_prefix,
        actor=event.actor,
        scopes=[_SCOPE_ENUMS[Scope(scope)] for scope in event.scopes],
    )


# ---- erasures and a user's data ----

_SUBJECT_KINDS = {
    USER: privacy_pb2.SUBJECT_KIND_USER,
    CONVERSATION: privacy_pb2.SUBJECT_KIND_CONVERSATION,
}


def erasure_message(erasure: ErasureRecord) -> privacy_pb2.Erasure:
    """An Erasure message: the log entry, the subject as its hash."""
    erased = erasure.erased
    message = privacy_pb2.Erasure(
        id=erasure.id,
        subject_kind=_SUBJECT_KINDS[erasure.subject.kind],
        subject_hash=erasure.subject.hash,
        subject_hash_kind=_HASH_KINDS[erasure.subject.hash_kind],
        requested_by=erasure.requested_by,
        start_time=timestamp(erasure.start_time),
        erased=privacy_pb2.ErasedCounts(
            interactions=erased.interactions,
            feedback=erased.feedback,
            replaced_votes=erased.history,
            events=erased.events,
        ),
        batches=erasure.batches,
    )
    if erasure.finish_time is not None:
        message.finish_time.CopyFrom(timestamp(erasure.finish_time))
    return message


def opt_out_message(opt_out: OptOutRecord) -> privacy_pb2.OptOut:
    """An OptOut message: the user as the hash of their id."""
    return privacy_pb2.OptOut(
        user_hash=opt_out.user.hash,
        user_hash_kind=_HASH_KINDS[opt_out.user.hash_kind],
        opt_out_time=timestamp(opt_out.opt_out_time),
        requested_by=opt_out.requested_by,
    )


_OPT_OUT_ACTIONS = {
    OPT_OUT: privacy_pb2.OPT_OUT_ACTION_OPT_OUT,
    OPT_IN: privacy_pb2.OPT_OUT_ACTION_OPT_IN,
}


def opt_out_choice_message(choice: OptOutEventRecord) -> privacy_pb2.OptOutChoice:
    """One recorded choice of a user."""
    return privacy_pb2.OptOutChoice(
        action=_OPT_OUT_ACTIONS.get(choice.action, privacy_pb2.OPT_OUT_ACTION_UNSPECIFIED),
        event_time=timestamp(choice.event_time),
        requested_by=choice.requested_by,
        erase_requested=choice.erase_requested,
    )


def user_data_response(
    table: str, records: Sequence[Any]
) -> feedback_service_pb2.ExportUserDataResponse:
    """One chunk of a user's data export: the records of one table in the field of its kind."""
    response = feedback_service_pb2.ExportUserDataResponse()
    if table == "interactions":
        response.interactions.extend(interaction_message(record) for record in records)
    elif table == "events":
        response.events.extend(event_message(record) for record in records)
    else:
        votes = response.feedback if table == "feedback" else response.replaced_votes
        votes.extend(feedback_message(record) for record in records)
    return response
