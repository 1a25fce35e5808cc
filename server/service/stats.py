"""GetStats rules: what a valid stats request is and how a period compares with the one before."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import get_args

from server.service.inputs import StatsInput
from server.service.validation import CONVERSATION_ID, IDENTIFIER, MIN_TIME, Violations
from server.service.write_rules import CONVERSATION_RULE, IDENTIFIER_RULE
from storage.calendar import bucket_bounds
from storage.records import GroupBy, StatsQuery, StatsSet, TimeBucket

MAX_BUCKETS = 1000
DEFAULT_TOP_N = 10
MAX_TOP_N = 1000
MAX_MODEL_CHARS = 128
MAX_EVENT_TYPE_CHARS = 64
_EARLIEST = datetime.min.replace(tzinfo=UTC)
BUCKETS: tuple[str, ...] = get_args(TimeBucket)
GROUP_KEYS: tuple[str, ...] = get_args(GroupBy)


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsChange:
    """This period against the previous one: ratios of counts, differences of means."""

    feedback_count_ratio: float | None = None
    avg_score_delta: float | None = None
    thumbs_up_ratio_delta: float | None = None
    interaction_count_ratio: float | None = None
    avg_latency_ms_delta: float | None = None
    event_count_ratio: float | None = None


def valid_stats_query(request: StatsInput) -> StatsQuery:
    """The query to run, or InvalidArgument naming every field that breaks its rule."""
    check = Violations()
    conversation_id = check.optional_match(
        "conversation_id", request.conversation_id, CONVERSATION_ID, CONVERSATION_RULE
    )
    user_id = check.optional_match("user_id", request.user_id, IDENTIFIER, IDENTIFIER_RULE)
    message_id = check.optional_match("message_id", request.message_id, IDENTIFIER, IDENTIFIER_RULE)
    model = _name(check, "model", request.model, MAX_MODEL_CHARS)
    event_type = _name(check, "event_type", request.event_type, MAX_EVENT_TYPE_CHARS)
    start, end = check.time_range(request.start_time, request.end_time)
    both_times = start is not None and end is not None and MIN_TIME <= start <= end

    bucket: TimeBucket | None = None
    if request.bucket:
        if request.bucket not in BUCKETS:
            check.add("bucket", f"must be one of {', '.join(BUCKETS)}")
        elif not both_times:
            check.add("bucket", "needs both start_time and end_time")
        else:
            bucket = request.bucket  # type: ignore[assignment]
            assert bucket is not None
            assert start is not None
            assert end is not None
            try:
                bounds = bucket_bounds(bucket, start, end, MAX_BUCKETS)
            except (OverflowError, ValueError):  # the last bucket would end after year 9999
                check.add("bucket", "would end after the year 9999")
            else:
                if bounds is None:
                    check.add(
                        "bucket", f"would split the range into more than {MAX_BUCKETS} buckets"
                    )
    group_by: GroupBy | None = None
    if request.group_by:
        if request.group_by in GROUP_KEYS:
            group_by = request.group_by  # type: ignore[assignment]
        else:
            check.add("group_by", f"must be one of {', '.join(GROUP_KEYS)}")
    if request.top_n < 0:
        check.add("top_n", "must not be negative")
    if request.compare_previous:
        if not both_times:
            check.add("compare_previous", "needs both start_time and end_time")
        else:
            assert start is not None
            assert end is not None
            if (start - _EARLIEST) < (end - start):
                check.add("compare_previous", "the previous period would start before year 1")
    check.raise_if_any()
    return StatsQuery(
        conversation_id=conversation_id,
        user_id=user_id,
        message_id=message_id,
        model=model,
        event_type=event_type,
        start_time=start,
        end_time=end,
        bucket=bucket,
        group_by=group_by,
        top_n=min(request.top_n or DEFAULT_TOP_N, MAX_TOP_N),
        compare_previous=request.compare_previous,
    )


def _name(check: Violations, field_name: str, value: str, max_chars: int) -> str | None:
    """A model or event type to filter by: any text up to `max_chars`; None when empty."""
    if not value:
        return None
    if len(value) > max_chars:
        check.add(field_name, f"must be at most {max_chars} characters, got {len(value)}")
    if "\x00" in value:
        check.add(field_name, "must not contain NUL characters")
    return value


def compare(current: StatsSet, previous: StatsSet) -> StatsChange:
    """Ratios unset when the previous value is zero or unset; deltas unset when either is."""

    def ratio(kind: str, name: str) -> float | None:
        now, before = _value(current, kind, name), _value(previous, kind, name)
        return None if now is None or not before else now / before

    def delta(kind: str, name: str) -> float | None:
        now, before = _value(current, kind, name), _value(previous, kind, name)
        return None if now is None or before is None else now - before

    return StatsChange(
        feedback_count_ratio=ratio("feedback", "total_count"),
        avg_score_delta=delta("feedback", "avg_score"),
        thumbs_up_ratio_delta=delta("feedback", "thumbs_up_ratio"),
        interaction_count_ratio=ratio("interactions", "total_count"),
        avg_latency_ms_delta=delta("interactions", "avg_latency_ms"),
        event_count_ratio=ratio("events", "total_count"),
    )


def _value(stats: StatsSet, kind: str, name: str) -> float | None:
    """One figure of one kind; None when the kind does not apply or the figure is unset."""
    aggregate = getattr(stats, kind)
    value: float | None = None if aggregate is None else getattr(aggregate, name)
    return value
