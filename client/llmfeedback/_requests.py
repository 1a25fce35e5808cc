"""Request building shared by the single-item methods and the batch items: one place for the checks.

Each function turns plain Python arguments into the generated request message, raising ValueError or
TypeError for arguments that cannot form a valid request, so no call is made for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._conversions import to_struct, to_timestamp
from ._proto.feedback.v1 import feedback_pb2, feedback_service_pb2

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

__all__ = ["event_request", "feedback_request", "interaction_request"]


def interaction_request(
    conversation_id: str,
    *,
    message_id: str | None = None,
    user_id: str | None = None,
    model: str | None = None,
    input_text: str | None = None,
    input_hash: str | None = None,
    output_text: str | None = None,
    output_hash: str | None = None,
    latency_ms: float | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    total_tokens: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    occur_time: datetime | None = None,
) -> feedback_service_pb2.RecordInteractionRequest:
    """Build a RecordInteractionRequest; texts and hashes of one side exclude each other."""
    _at_most_one(input_text=input_text, input_hash=input_hash)
    _at_most_one(output_text=output_text, output_hash=output_hash)
    request = feedback_service_pb2.RecordInteractionRequest(
        conversation_id=conversation_id,
        message_id=message_id or "",
        user_id=user_id or "",
        model=model or "",
        latency_ms=latency_ms,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=total_tokens,
    )
    # Oneof members are assigned only when given: assigning "" would select the member.
    if input_text is not None:
        request.input_text = input_text
    if input_hash is not None:
        request.input_hash = input_hash
    if output_text is not None:
        request.output_text = output_text
    if output_hash is not None:
        request.output_hash = output_hash
    if metadata is not None:
        request.metadata.CopyFrom(to_struct(metadata, name="metadata"))
    if occur_time is not None:
        request.occur_time.CopyFrom(to_timestamp(occur_time, name="occur_time"))
    return request


def feedback_request(
    conversation_id: str | None = None,
    *,
    message_id: str | None = None,
    user_id: str | None = None,
    score: int | None = None,
    thumb: bool | None = None,
    label: str | None = None,
    text: str | None = None,
    latency_ms: float | None = None,
    tokens_used: int | None = None,
    input_hash: str | None = None,
    output_hash: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    model: str | None = None,
) -> feedback_service_pb2.SubmitFeedbackRequest:
    """Build a SubmitFeedbackRequest carrying exactly one of score, thumb or label."""
    given = [
        name
        for name, value in (("score", score), ("thumb", thumb), ("label", label))
        if value is not None
    ]
    if len(given) != 1:
        found = ", ".join(given) if given else "none"
        raise ValueError(f"give exactly one of score, thumb or label (got {found})")
    request = feedback_service_pb2.SubmitFeedbackRequest(
        conversation_id=conversation_id or "",
        message_id=message_id or "",
        user_id=user_id or "",
        text=text or "",
        latency_ms=latency_ms,
        tokens_used=tokens_used,
        input_hash=input_hash or "",
        output_hash=output_hash or "",
        model=model or "",
    )
    if score is not None:
        # bool is an int subclass; True must not silently become a score of 1.
        if isinstance(score, bool) or not isinstance(score, int):
            raise TypeError(f"score must be an int from 1 to 5, not {type(score).__name__}")
        request.score = score
    elif thumb is not None:
        # A string such as "down" is truthy and would otherwise be sent as thumbs up.
        if not isinstance(thumb, bool):
            raise TypeError(f"thumb must be True (up) or False (down), not {thumb!r}")
        request.thumb = feedback_pb2.THUMB_UP if thumb else feedback_pb2.THUMB_DOWN
    elif label is not None:
        request.label = label
    if metadata is not None:
        request.metadata.CopyFrom(to_struct(metadata, name="metadata"))
    return request


def event_request(
    user_id: str,
    event_type: str,
    *,
    details: Mapping[str, Any] | None = None,
    event_time: datetime | None = None,
) -> feedback_service_pb2.LogEventRequest:
    """Build a LogEventRequest."""
    request = feedback_service_pb2.LogEventRequest(user_id=user_id, event_type=event_type)
    if details is not None:
        request.details.CopyFrom(to_struct(details, name="details"))
    if event_time is not None:
        request.event_time.CopyFrom(to_timestamp(event_time, name="event_time"))
    return request


def _at_most_one(**values: str | None) -> None:
    """Reject two members of one oneof, of which protobuf would silently keep only the last."""
    given = [name for name, value in values.items() if value is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of {' or '.join(values)}, not both")
