"""Records of a GetStats read: the validated query going in and the aggregates coming out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from storage.records import EventStats, FeedbackStats, InteractionStats

TimeBucket = Literal["hour", "day", "week", "month"]
"""UTC buckets: hours, days, ISO weeks (from Monday) and calendar months."""

GroupBy = Literal["model", "event_type", "conversation", "user"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsQuery:
    """A validated stats selection; None means "any". Times are a half-open [start, end)."""

    conversation_id: str | None = None
    user_id: str | None = None
    message_id: str | None = None
    model: str | None = None
    event_type: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    bucket: TimeBucket | None = None
    """Needs both times."""
    group_by: GroupBy | None = None
    top_n: int = 10
    compare_previous: bool = False
    """Needs both times."""

    @property
    def feedback_applies(self) -> bool:
        """Feedback and interactions have no event type: a type filter excludes them."""
        return self.event_type is None

    @property
    def events_apply(self) -> bool:
        """Events have no conversation, message or model: filtering by one excludes them."""
        return self.conversation_id is None and self.message_id is None and self.model is None


@dataclass(frozen=True, slots=True)
class StatsSet:
    """Aggregates of each kind; None where the query's filters exclude the kind."""

    feedback: FeedbackStats | None
    interactions: InteractionStats | None
    events: EventStats | None


@dataclass(frozen=True, slots=True)
class StatsBucket:
    """The aggregates of one time bucket [start_time, end_time)."""

    start_time: datetime
    end_time: datetime
    stats: StatsSet


@dataclass(frozen=True, slots=True)
class StatsGroup:
    """The aggregates of one group; key "" holds the records without a value."""

    key: str
    stats: StatsSet


@dataclass(frozen=True, slots=True)
class StatsPeriod:
    """The aggregates of a whole period [start_time, end_time)."""

    start_time: datetime
    end_time: datetime
    stats: StatsSet


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsAnswer:
    """Everything a StatsQuery asked for."""

    overall: StatsSet
    buckets: list[StatsBucket] = field(default_factory=list)
    groups: list[StatsGroup] = field(default_factory=list)
    previous: StatsPeriod | None = None
