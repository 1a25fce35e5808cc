"""The one place that converts between protobuf messages and the service's plain Python values."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from llmfeedback._proto.feedback.v1 import (
    event_pb2,
    feedback_pb2,
    feedback_service_pb2,
    interaction_pb2,
    stats_pb2,
)
from server.service import (
    EventInput,
    FeedbackInput,
    InteractionInput,
    ListFeedbackInput,
    Stats,
    StatsInput,
)
from storage.records import (
    EventRecord,
    EventStats,
    FeedbackRecord,
    FeedbackStats,
    InteractionRecord,
    InteractionStats,
    Label,
    Percentiles,
    Score,
    Thumb,
)
from storage.stats_records import StatsBucket

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BEFORE_ANY_VALID_TIME = datetime.min.replace(tzinfo=UTC)
_MAX_EXACT_FLOAT_INT = 2**53


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
    )


def event_input(request: feedback_service_pb2.LogEventRequest) -> EventInput:
    """Read a LogEventRequest."""
    return EventInput(
        user_id=request.user_id,
        event_type=request.event_type,
        details=struct_to_dict(request.details),
        details_bytes=request.details.ByteSize(),
        event_time=_time_or_none(request, "event_time"),
    )


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


def list_feedback_input(request: feedback_service_pb2.ListFeedbackRequest) -> ListFeedbackInput:
    """Read a ListFeedbackRequest."""
    return ListFeedbackInput(
        conversation_id=request.conversation_id,
        message_id=request.message_id,
        user_id=request.user_id,
        min_score=request.min_score if request.HasField("min_score") else None,
        max_score=request.max_score if request.HasField("max_score") else None,
        page_size=request.page_size,
        page_token=request.page_token,
    )


# ---- records -> protobuf ----


def interaction_message(record: InteractionRecord) -> interaction_pb2.Interaction:
    """Write a stored interaction."""
    return interaction_pb2.Interaction(
        id=record.id,
        conversation_id=record.conversation_id,
        message_id=record.message_id or "",
        user_id=record.user_id or "",
        model=record.model or "",
        input_hash=record.input_hash or "",
        output_hash=record.output_hash or "",
        latency_ms=record.latency_ms,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        total_tokens=record.total_tokens,
        metadata=dict_to_struct(record.metadata) if record.metadata else None,
        occur_time=timestamp(record.occur_time),
        create_time=timestamp(record.create_time),
    )


def feedback_message(record: FeedbackRecord) -> feedback_pb2.Feedback:
    """Write a stored feedback entry."""
    message = feedback_pb2.Feedback(
        id=record.id,
        conversation_id=record.conversation_id or "",
        message_id=record.message_id or "",
        user_id=record.user_id or "",
        interaction_id=record.interaction_id or 0,
        model=record.model or "",
        text=record.text or "",
        latency_ms=record.latency_ms,
        tokens_used=record.tokens_used,
        input_hash=record.input_hash or "",
        output_hash=record.output_hash or "",
        metadata=dict_to_struct(record.metadata) if record.metadata else None,
        create_time=timestamp(record.create_time),
    )
    match record.rating:
        case Score(value):
            message.score = value
        case Thumb(up):
            message.thumb = feedback_pb2.THUMB_UP if up else feedback_pb2.THUMB_DOWN
        case Label(name):
            message.label = name
    return message


def event_message(record: EventRecord) -> event_pb2.Event:
    """Write a stored analytics event."""
    return event_pb2.Event(
        id=record.id,
        user_id=record.user_id,
        event_type=record.event_type,
        details=dict_to_struct(record.details) if record.details else None,
        event_time=timestamp(record.event_time),
        receive_time=timestamp(record.receive_time),
    )


def stats_response(stats: Stats) -> feedback_service_pb2.GetStatsResponse:
    """Write the aggregates of a stats request."""
    response = feedback_service_pb2.GetStatsResponse()
    _write_kinds(response, stats.feedback, stats.interactions, stats.events)
    if stats.buckets:
        # Parsing the buckets' wire form at once is far cheaper than building 365 of them.
        response.MergeFromString(
            b"".join(_BUCKET_TAG + _framed(bucket) for bucket in stats.buckets)
        )
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

_MAX_CACHED_BUCKETS = 20_000
_bucket_bytes: OrderedDict[tuple[Any, ...], tuple[StatsBucket, bytes]] = OrderedDict()
_bucket_lock = threading.Lock()


def _framed(bucket: StatsBucket) -> bytes:
    """A bucket's length prefix and serialized StatsBucket, cached by what it was made of.

    The storage layer hands out the same immutable stats objects for a cell while it is unchanged
    (an aligned bucket is one cell), so their identities name the bucket's contents; the cache
    holds the bucket, so those identities cannot be reused while cached.
    """
    kinds = bucket.stats
    key = (
        bucket.start_time,
        bucket.end_time,
        id(kinds.feedback),
        id(kinds.interactions),
        id(kinds.events),
    )
    with _bucket_lock:
        cached = _bucket_bytes.get(key)
        if cached is not None and _same_objects(cached[0].stats, kinds):
            _bucket_bytes.move_to_end(key)
            return cached[1]
    message = stats_pb2.StatsBucket(
        start_time=timestamp(bucket.start_time), end_time=timestamp(bucket.end_time)
    )
    _write_kinds(message, kinds.feedback, kinds.interactions, kinds.events)
    body = message.SerializeToString()
    framed = _varint(len(body)) + body
    with _bucket_lock:
        _bucket_bytes[key] = (bucket, framed)
        if len(_bucket_bytes) > _MAX_CACHED_BUCKETS:
            _bucket_bytes.popitem(last=False)
    return framed


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
        struct.update(value)
    return struct


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


def _time_or_none(message: Any, field: str) -> datetime | None:
    """A Timestamp field as an aware datetime; invalid values map to a time every rule rejects."""
    if not message.HasField(field):
        return None
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
