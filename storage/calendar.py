"""The UTC calendar of stats: rollup levels, their buckets, and the buckets of a GetStats answer.

Shared by the service (which limits how many buckets an answer may have) and the aggregates
(which store and read the same buckets), so both cut time in exactly one way. Times are epoch
seconds for bucket starts and epoch microseconds for the ends of a range.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from storage.records import TimeBucket

HOUR, DAY, MONTH, TOTAL = 0, 1, 2, 3
"""Rollup levels, finest first. TOTAL has one bucket, bucket_start 0."""

HOUR_SECONDS = 3600
DAY_SECONDS = 86_400
WEEK_SECONDS = 7 * DAY_SECONDS
SECOND = 1_000_000
"""Microseconds per second: ranges are in epoch microseconds, bucket starts in epoch seconds."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)


def epoch_microseconds(moment: datetime) -> int:
    """Microseconds since 1970-01-01 UTC (negative before), for an aware datetime."""
    return (moment - _EPOCH) // _ONE_MICROSECOND


def from_epoch_microseconds(microseconds: int) -> datetime:
    """The aware UTC datetime of an epoch_microseconds() value."""
    return _EPOCH + timedelta(microseconds=microseconds)


def epoch_seconds(moment: datetime) -> int:
    """Whole seconds since 1970-01-01 UTC, rounded down, for an aware datetime."""
    delta = moment - _EPOCH
    return delta.days * DAY_SECONDS + delta.seconds


@lru_cache(maxsize=4096)
def month_start(seconds: int) -> int:
    """Start (epoch seconds) of the UTC calendar month holding `seconds`."""
    day = (_EPOCH + timedelta(seconds=seconds)).date()
    return (day.replace(day=1) - _EPOCH.date()).days * DAY_SECONDS


@lru_cache(maxsize=4096)
def next_month_start(seconds: int) -> int:
    """Start of the calendar month after the one holding `seconds`."""
    day = (_EPOCH + timedelta(seconds=month_start(seconds))).date()
    following = (
        day.replace(year=day.year + 1, month=1)
        if day.month == 12
        else day.replace(month=day.month + 1)
    )
    return (following - _EPOCH.date()).days * DAY_SECONDS


def bucket_start(level: int, seconds: int) -> int:
    """Start of the bucket of `level` holding the instant `seconds` (epoch seconds)."""
    if level == HOUR:
        return seconds - seconds % HOUR_SECONDS
    if level == DAY:
        return seconds - seconds % DAY_SECONDS
    if level == MONTH:
        return month_start(seconds - seconds % DAY_SECONDS)
    return 0


def next_bucket_start(level: int, start: int) -> int:
    """Start of the bucket of `level` after the one starting at `start`."""
    if level == HOUR:
        return start + HOUR_SECONDS
    if level == DAY:
        return start + DAY_SECONDS
    if level == MONTH:
        return next_month_start(start)
    raise ValueError("the total level has a single bucket")


def ceil_to(level: int, seconds: int) -> int:
    """The first bucket start of `level` at or after `seconds`."""
    start = bucket_start(level, seconds)
    return start if start == seconds else next_bucket_start(level, start)


# ---- the buckets of an answer ----

BUCKET_LEVELS: dict[TimeBucket, int] = {"hour": HOUR, "day": DAY, "month": MONTH}
"""The rollup level whose cells are exactly an answer's buckets (weeks have none)."""

_BUCKET_SECONDS = {"hour": HOUR_SECONDS, "day": DAY_SECONDS, "week": WEEK_SECONDS}


def bucket_bounds(
    bucket: TimeBucket, start: datetime, end: datetime, limit: int
) -> list[datetime] | None:
    """Boundaries of the buckets covering [start, end), the first at start rounded down.

    n buckets have n + 1 boundaries; a bucket exists for every boundary before `end`. Returns None
    when there would be more than `limit` buckets.
    """
    bounds = _bucket_bounds(bucket, start, end, limit)
    return None if bounds is None else list(bounds)


@functools.lru_cache(maxsize=64)
def _bucket_bounds(
    bucket: TimeBucket, start: datetime, end: datetime, limit: int
) -> tuple[datetime, ...] | None:
    # Both the rules and the reader ask for a year of daily bounds on every call.
    low, high = epoch_microseconds(start), epoch_microseconds(end)
    first = _floor_bucket(bucket, low // SECOND)
    if bucket == "month":
        months = _month_index(high // SECOND) - _month_index(first)
        if month_start(high // SECOND - (high // SECOND) % DAY_SECONDS) * SECOND < high:
            months += 1
        count = max(0, months)
    else:
        size = _BUCKET_SECONDS[bucket] * SECOND
        count = max(0, -(-(high - first * SECOND) // size))
    if count > limit:
        return None
    bounds = [first]
    for _ in range(count):
        bounds.append(_next_bucket(bucket, bounds[-1]))
    return tuple(from_epoch_microseconds(seconds * SECOND) for seconds in bounds)


def _floor_bucket(bucket: TimeBucket, seconds: int) -> int:
    if bucket == "hour":
        return bucket_start(HOUR, seconds)
    day = bucket_start(DAY, seconds)
    if bucket == "day":
        return day
    if bucket == "week":
        # 1970-01-01 was a Thursday, three days after an ISO week's Monday.
        return day - ((day // DAY_SECONDS + 3) % 7) * DAY_SECONDS
    return month_start(day)


def _next_bucket(bucket: TimeBucket, seconds: int) -> int:
    if bucket == "month":
        return next_month_start(seconds)
    return seconds + _BUCKET_SECONDS[bucket]


def _month_index(seconds: int) -> int:
    moment = from_epoch_microseconds(seconds * SECOND)
    return moment.year * 12 + moment.month - 1
