"""Untrusted request values, as the servicer read them from protobuf, before any validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class InteractionInput:
    """A chat turn to record; empty strings mean "not given"."""

    conversation_id: str = ""
    message_id: str = ""
    user_id: str = ""
    model: str = ""
    input_text: str | None = None
    input_hash: str | None = None
    output_text: str | None = None
    output_hash: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    metadata_bytes: int = 0
    """Size of the metadata as received (serialized protobuf), for the size limit."""
    occur_time: datetime | None = None
    request_id: str = ""
    request_digest: str | None = None
    """Fingerprint of the request's content (see server.mapping.request_digest)."""
    sent_time: datetime | None = None
    """When the client sent the request, by its clock; corrects occur_time for clock skew."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedbackInput:
    """A rating to store; at most one of score / thumb / label is set by the wire format."""

    conversation_id: str = ""
    message_id: str = ""
    user_id: str = ""
    model: str = ""
    score: int | None = None
    thumb: str | None = None
    """"up", "down", or any other string for a value that is neither."""
    label: str | None = None
    text: str = ""
    latency_ms: float | None = None
    tokens_used: int | None = None
    input_hash: str = ""
    output_hash: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    metadata_bytes: int = 0
    """Size of the metadata as received (serialized protobuf), for the size limit."""
    request_id: str = ""
    request_digest: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventInput:
    """An analytics event to store."""

    user_id: str = ""
    event_type: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    details_bytes: int = 0
    """Size of the details as received (serialized protobuf), for the size limit."""
    event_time: datetime | None = None
    event_id: str = ""
    request_id: str = ""
    request_digest: str | None = None
    sent_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class HistoricInput:
    """A write imported from another system's history, with the time that system stored it."""

    item: InteractionInput | FeedbackInput | EventInput
    create_time: datetime | None
    """When the source stored the item; None when the request gave none (rejected)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsInput:
    """The selection of a stats request; empty strings and None mean "any"."""

    conversation_id: str = ""
    user_id: str = ""
    message_id: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    model: str = ""
    event_type: str = ""
    bucket: str = ""
    """"hour", "day", "week" or "month"; "" for none, anything else is invalid."""
    group_by: str = ""
    """"model", "event_type", "conversation" or "user"; "" for none."""
    top_n: int = 0
    compare_previous: bool = False
