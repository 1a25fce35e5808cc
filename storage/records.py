"""Plain records that cross the storage boundary: what the service hands in and gets back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

JsonObject = dict[str, Any]
"""A JSON object as Python values (str keys; str, float, bool, None, list, dict values)."""


@dataclass(frozen=True, slots=True)
class Score:
    """A numeric 1-5 rating (FilAgent)."""

    value: int


@dataclass(frozen=True, slots=True)
class Thumb:
    """A binary thumbs-up (True) or thumbs-down (False) rating."""

    up: bool


@dataclass(frozen=True, slots=True)
class Label:
    """A categorical rating such as "good" or "positive" (UP2D8), stored lower case."""

    name: str


Rating = Score | Thumb | Label
"""Exactly one kind of rating, as Langfuse's numeric / boolean / categorical scores."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NewInteraction:
    """A validated chat turn ready to insert; all times are timezone-aware UTC."""

    conversation_id: str
    message_id: str | None = None
    user_id: str | None = None
    model: str | None = None
    input_hash: str | None = None
    output_hash: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    metadata: JsonObject = field(default_factory=dict)
    occur_time: datetime
    create_time: datetime
    request_id: str | None = None
    """The client's AIP-155 request id, unique among interactions."""
    request_digest: str | None = None
    """Fingerprint of the request's content, to tell a retry from a reuse of its id."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InteractionRecord(NewInteraction):
    """A stored chat turn."""

    id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NewFeedback:
    """A validated, linked feedback entry ready to insert."""

    conversation_id: str | None
    message_id: str | None = None
    user_id: str | None = None
    interaction_id: int | None = None
    model: str | None = None
    rating: Rating
    text: str | None = None
    latency_ms: float | None = None
    tokens_used: int | None = None
    input_hash: str | None = None
    output_hash: str | None = None
    metadata: JsonObject = field(default_factory=dict)
    create_time: datetime
    request_id: str | None = None
    request_digest: str | None = None
    replaces_id: int | None = None
    """The vote of the same user on the same message that this one replaced."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedbackRecord(NewFeedback):
    """A stored feedback entry: a current vote, or a replaced one from the history."""

    id: int
    replace_time: datetime | None = None
    """When a newer vote replaced this one; None while it is current."""
    replaced_by_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """A validated analytics event ready to insert."""

    user_id: str
    event_type: str
    details: JsonObject = field(default_factory=dict)
    event_time: datetime
    receive_time: datetime
    event_id: str | None = None
    """The client's own id of the event, unique among events."""
    request_id: str | None = None
    request_digest: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord(NewEvent):
    """A stored analytics event."""

    id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsFilter:
    """Which rows an aggregate covers; None means "any". Times are a half-open [start, end)."""

    conversation_id: str | None = None
    user_id: str | None = None
    message_id: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Percentiles:
    """Nearest-rank percentiles of a measurement; None when no record carries it."""

    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None


NO_PERCENTILES = Percentiles()


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedbackStats:
    """Aggregates over feedback; averages are None (never NaN) when nothing carries the value."""

    total_count: int = 0
    scored_count: int = 0
    avg_score: float | None = None
    score_counts: dict[int, int] = field(default_factory=lambda: dict.fromkeys(range(1, 6), 0))
    thumbs_up_count: int = 0
    thumbs_down_count: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    avg_latency_ms: float | None = None
    avg_tokens: float | None = None
    with_text_count: int = 0
    latency_ms_percentiles: Percentiles = NO_PERCENTILES
    """Filled by the rollup reader (GetStats); the full-scan Repository.feedback_stats leaves it."""
    tokens_percentiles: Percentiles = NO_PERCENTILES

    @property
    def thumbs_up_ratio(self) -> float | None:
        """Share of thumbs-up among thumb ratings; None when there are none."""
        thumbs = self.thumbs_up_count + self.thumbs_down_count
        return self.thumbs_up_count / thumbs if thumbs else None


@dataclass(frozen=True, slots=True, kw_only=True)
class InteractionStats:
    """Aggregates over interactions."""

    total_count: int = 0
    avg_latency_ms: float | None = None
    avg_total_tokens: float | None = None
    latency_ms_percentiles: Percentiles = NO_PERCENTILES
    total_tokens_percentiles: Percentiles = NO_PERCENTILES


@dataclass(frozen=True, slots=True, kw_only=True)
class EventStats:
    """Aggregates over analytics events."""

    total_count: int = 0
    type_counts: dict[str, int] = field(default_factory=dict)
