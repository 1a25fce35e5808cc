"""The stats contract computed the slow, obvious way: a full scan of the raw tables.

The oracle the rollups are checked against (GetStats answers from rollups only). It lived in
production code that only tests called; here it reads through the unit's session.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, case, func, select

from storage.records import EventStats, FeedbackStats, InteractionStats, StatsFilter
from storage.schema.models import EventRow, FeedbackRow, InteractionRow

if TYPE_CHECKING:
    from sqlalchemy.orm import InstrumentedAttribute

    from storage import Repository

SCORE_VALUES = range(1, 6)


def interaction_stats(repository: Repository, stats_filter: StatsFilter) -> InteractionStats:
    """Count and averages of interactions, by occur_time, in one query."""
    conditions = _scope(
        stats_filter,
        conversation_id=InteractionRow.conversation_id,
        user_id=InteractionRow.user_id,
        message_id=InteractionRow.message_id,
        time=InteractionRow.occur_time,
    )
    total, latency_count, latency_sum, tokens_count, tokens_sum = repository.session.execute(
        select(
            func.count(),
            func.count(InteractionRow.latency_ms),
            func.sum(InteractionRow.latency_ms),
            func.count(InteractionRow.total_tokens),
            func.sum(InteractionRow.total_tokens),
        ).where(*conditions)
    ).one()
    return InteractionStats(
        total_count=total,
        avg_latency_ms=_average(latency_sum, latency_count),
        avg_total_tokens=_average(tokens_sum, tokens_count),
    )


def feedback_stats(repository: Repository, stats_filter: StatsFilter) -> FeedbackStats:
    """Counts per rating and averages of feedback, by create_time.

    One grouped query, so every figure comes from one snapshot even under PostgreSQL's
    READ COMMITTED; the groups are few (kinds x scores, thumbs, distinct labels).
    """
    conditions = _scope(
        stats_filter,
        conversation_id=FeedbackRow.conversation_id,
        user_id=FeedbackRow.user_id,
        message_id=FeedbackRow.message_id,
        time=FeedbackRow.create_time,
    )
    groups = repository.session.execute(
        select(
            FeedbackRow.rating_kind,
            FeedbackRow.score,
            FeedbackRow.thumb_up,
            FeedbackRow.label,
            func.count(),
            func.count(FeedbackRow.latency_ms),
            func.sum(FeedbackRow.latency_ms),
            func.count(FeedbackRow.tokens_used),
            func.sum(FeedbackRow.tokens_used),
            # Empty text carries no feedback; CASE yields NULL, which count() skips.
            func.count(case((FeedbackRow.text != "", 1))),
        )
        .where(*conditions)
        .group_by(
            FeedbackRow.rating_kind,
            FeedbackRow.score,
            FeedbackRow.thumb_up,
            FeedbackRow.label,
        )
    ).all()
    score_counts: dict[int, int] = dict.fromkeys(SCORE_VALUES, 0)
    label_counts: Counter[str] = Counter()
    thumbs = {True: 0, False: 0}
    latency_sums: list[float] = []
    total = latency_count = tokens_count = tokens_sum = with_text = 0
    for (
        kind,
        score,
        thumb_up,
        label,
        count,
        group_latency_count,
        group_latency_sum,
        group_tokens_count,
        group_tokens_sum,
        group_with_text,
    ) in groups:
        total += count
        latency_count += group_latency_count
        latency_sums.append(group_latency_sum or 0.0)
        tokens_count += group_tokens_count
        tokens_sum += group_tokens_sum or 0
        with_text += group_with_text
        # The CHECK constraint guarantees the kind's own column is set.
        if kind == "score" and score is not None:
            score_counts[score] += count
        elif kind == "thumb" and thumb_up is not None:
            thumbs[thumb_up] += count
        elif kind == "label" and label is not None:
            label_counts[label] += count
    scored = sum(score_counts.values())
    return FeedbackStats(
        total_count=total,
        scored_count=scored,
        # Computed from the exact integer counts rather than SQL avg(), whose type and
        # rounding differ between databases.
        avg_score=_average(sum(value * count for value, count in score_counts.items()), scored),
        score_counts=score_counts,
        thumbs_up_count=thumbs[True],
        thumbs_down_count=thumbs[False],
        label_counts=dict(label_counts),
        avg_latency_ms=_average(math.fsum(latency_sums), latency_count),
        avg_tokens=_average(tokens_sum, tokens_count),
        with_text_count=with_text,
    )


def event_stats(repository: Repository, stats_filter: StatsFilter) -> EventStats:
    """Event counts per type, by event_time, in one query.

    Events carry neither conversation nor message, so a filter on either is a caller bug
    (ValueError) rather than a silently ignored condition.
    """
    if stats_filter.conversation_id is not None or stats_filter.message_id is not None:
        raise ValueError("events can only be filtered by user_id and time")
    conditions = _scope(
        stats_filter,
        conversation_id=None,
        user_id=EventRow.user_id,
        message_id=None,
        time=EventRow.event_time,
    )
    type_counts = {
        event_type: count
        for event_type, count in repository.session.execute(
            select(EventRow.event_type, func.count())
            .where(*conditions)
            .group_by(EventRow.event_type)
        )
    }
    return EventStats(total_count=sum(type_counts.values()), type_counts=type_counts)


def _scope(
    stats_filter: StatsFilter,
    *,
    conversation_id: InstrumentedAttribute[str] | InstrumentedAttribute[str | None] | None,
    user_id: InstrumentedAttribute[str] | InstrumentedAttribute[str | None],
    message_id: InstrumentedAttribute[str | None] | None,
    time: InstrumentedAttribute[datetime],
) -> list[ColumnElement[bool]]:
    """WHERE conditions for a stats filter: equality on ids, half-open [start, end) on time."""
    conditions: list[ColumnElement[bool]] = []
    if conversation_id is not None and stats_filter.conversation_id is not None:
        conditions.append(conversation_id == stats_filter.conversation_id)
    if stats_filter.user_id is not None:
        conditions.append(user_id == stats_filter.user_id)
    if message_id is not None and stats_filter.message_id is not None:
        conditions.append(message_id == stats_filter.message_id)
    if stats_filter.start_time is not None:
        conditions.append(time >= stats_filter.start_time)
    if stats_filter.end_time is not None:
        conditions.append(time < stats_filter.end_time)
    return conditions


def _average(total: float | None, count: int) -> float | None:
    """total / count, or None when no row carried the value (never NaN)."""
    if count == 0 or total is None:
        return None
    return float(total) / count
