"""Plain records of list and export reads: which rows, where a page starts, and the rows found.

Entries are NamedTuples rather than the write side's frozen dataclasses: an export builds tens
of thousands per second, and a frozen dataclass of fourteen fields costs about 10 us to build
on the reference machine against about 1 us for a tuple. Ratings stay in their columns
(rating_kind, score, thumb_up, label) for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

RatingKind = Literal["score", "thumb", "label"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedbackFilter:
    """Which feedback a list covers; None means "any". Times are a half-open [start, end)."""

    conversation_id: str | None = None
    message_id: str | None = None
    user_id: str | None = None
    model: str | None = None
    min_score: int | None = None
    """Inclusive; when set (or max_score is), only score-rated feedback matches."""
    max_score: int | None = None
    """Inclusive."""
    rating_kind: RatingKind | None = None
    label: str | None = None
    has_text: bool | None = None
    """True: only feedback with non-empty text; False: only feedback without."""
    start_time: datetime | None = None
    """By create_time."""
    end_time: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InteractionFilter:
    """Which interactions a list covers; times select by occur_time, half-open."""

    conversation_id: str | None = None
    message_id: str | None = None
    user_id: str | None = None
    model: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilter:
    """Which events a list covers; times select by event_time, half-open."""

    user_id: str | None = None
    event_type: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Keyset:
    """Where a page starts, which way it runs and how long it is.

    Ids grow in storage order, so "newest first" is id descending. The cursor is the id of the
    last row already seen: a page holds only rows past it, which stays exact while rows arrive.
    """

    cursor: int | None = None
    newest_first: bool = True
    limit: int = 50


class FeedbackEntry(NamedTuple):
    """A stored feedback entry as a list or export reads it; times are aware UTC."""

    id: int
    conversation_id: str | None
    message_id: str | None
    user_id: str | None
    interaction_id: int | None
    model: str | None
    rating_kind: RatingKind
    score: int | None
    thumb_up: bool | None
    label: str | None
    text: str | None
    latency_ms: float | None
    tokens_used: int | None
    input_hash: str | None
    output_hash: str | None
    metadata: dict[str, Any]
    create_time: datetime
    replaces_id: int | None


class InteractionEntry(NamedTuple):
    """A stored chat turn as a list or export reads it."""

    id: int
    conversation_id: str
    message_id: str | None
    user_id: str | None
    model: str | None
    input_hash: str | None
    output_hash: str | None
    latency_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    metadata: dict[str, Any]
    occur_time: datetime
    create_time: datetime


class EventEntry(NamedTuple):
    """A stored analytics event as a list or export reads it."""

    id: int
    user_id: str
    event_type: str
    details: dict[str, Any]
    event_time: datetime
    receive_time: datetime
    event_id: str | None
