"""The friendly, typed client: plain Python arguments in, generated protobuf messages out."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar

import grpc

from ._conversions import to_struct, to_timestamp
from ._proto.feedback.v1 import feedback_pb2, feedback_service_pb2, feedback_service_pb2_grpc
from ._retry import DEFAULT_RETRY_POLICY, RetryPolicy, call_with_retry

if TYPE_CHECKING:
    from datetime import datetime
    from types import TracebackType

    from ._proto.feedback.v1 import event_pb2, interaction_pb2

__all__ = ["DEFAULT_ADDRESS", "DEFAULT_TIMEOUT", "FeedbackClient"]

DEFAULT_ADDRESS = "127.0.0.1:50051"
"""Where the service listens when run locally with its defaults."""

DEFAULT_TIMEOUT = 10.0
"""Seconds a call may take, retries included, unless the client or the call says otherwise."""

_RequestT = TypeVar("_RequestT")
_ResponseT = TypeVar("_ResponseT")


class FeedbackClient:
    """Synchronous client of feedback.v1.FeedbackService; thread-safe, so share one instance.

    Use it as a context manager, or call `close()`, to release the channel it opened. Every method
    raises a `FeedbackError` subclass when the call fails, `ValueError`/`TypeError` before any call
    when the arguments cannot form a valid request.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        channel_options: Sequence[tuple[str, Any]] | None = None,
        metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        """Connect to `address` (host:port), over TLS when `credentials` are given.

        `timeout` bounds each call in seconds, retries included (None: no deadline). `metadata`
        is sent with every call, for example an authorization header. Pass an existing `channel`
        to share it; the client then leaves closing it to you.
        """
        if channel is not None and (channel_options is not None or credentials is not None):
            raise ValueError("channel_options and credentials configure a new channel; not both")
        self._timeout = timeout
        self._retry = retry
        self._metadata: tuple[tuple[str, str], ...] = _metadata_pairs(metadata)
        self._owns_channel = channel is None
        if channel is None:
            options = list(channel_options or ())
            if credentials is None:
                channel = grpc.insecure_channel(address, options=options)
            else:
                channel = grpc.secure_channel(address, credentials, options=options)
        self._channel: grpc.Channel = channel
        self._stub = feedback_service_pb2_grpc.FeedbackServiceStub(channel)
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel if this client opened it; later calls raise RuntimeError."""
        if self._closed:
            return
        self._closed = True
        if self._owns_channel:
            self._channel.close()

    def record_interaction(
        self,
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
        timeout: float | None = None,
    ) -> interaction_pb2.Interaction:
        """Record one chat turn so later feedback can link to it; returns it as stored.

        Give the input and the output each as text (the server hashes it and stores only the hash)
        or as a hash from `compute_hash`, not both.
        """
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
        response = self._call(self._stub.RecordInteraction, request, timeout)
        return response.interaction

    def submit_feedback(
        self,
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
        timeout: float | None = None,
    ) -> feedback_pb2.Feedback:
        """Submit one rating of an AI answer; returns it as stored, linked to its interaction.

        Rate with exactly one of `score` (1-5), `thumb` (True for up, False for down) or `label`.
        Name the answer by `conversation_id`, `message_id`, or both.
        """
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
        response = self._call(self._stub.SubmitFeedback, request, timeout)
        return response.feedback

    def log_event(
        self,
        user_id: str,
        event_type: str,
        *,
        details: Mapping[str, Any] | None = None,
        event_time: datetime | None = None,
        timeout: float | None = None,
    ) -> event_pb2.Event:
        """Log one product analytics event, such as a page view; returns it as stored."""
        request = feedback_service_pb2.LogEventRequest(user_id=user_id, event_type=event_type)
        if details is not None:
            request.details.CopyFrom(to_struct(details, name="details"))
        if event_time is not None:
            request.event_time.CopyFrom(to_timestamp(event_time, name="event_time"))
        response = self._call(self._stub.LogEvent, request, timeout)
        return response.event

    def get_stats(
        self,
        *,
        conversation_id: str | None = None,
        user_id: str | None = None,
        message_id: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        timeout: float | None = None,
    ) -> feedback_service_pb2.GetStatsResponse:
        """Aggregate feedback, interactions and events, overall or for the given filters.

        The time range includes `start_time` and excludes `end_time`.
        """
        request = feedback_service_pb2.GetStatsRequest(
            conversation_id=conversation_id or "",
            user_id=user_id or "",
            message_id=message_id or "",
        )
        if start_time is not None:
            request.start_time.CopyFrom(to_timestamp(start_time, name="start_time"))
        if end_time is not None:
            request.end_time.CopyFrom(to_timestamp(end_time, name="end_time"))
        return self._call(self._stub.GetStats, request, timeout)

    def list_feedback(
        self,
        *,
        conversation_id: str | None = None,
        message_id: str | None = None,
        user_id: str | None = None,
        min_score: int | None = None,
        max_score: int | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> feedback_service_pb2.ListFeedbackResponse:
        """Fetch one page of feedback, newest first; see `iter_feedback` to walk every page.

        `page_size` 0 lets the server choose (50); pass the response's `next_page_token` with the
        same filters to get the following page.
        """
        request = feedback_service_pb2.ListFeedbackRequest(
            conversation_id=conversation_id or "",
            message_id=message_id or "",
            user_id=user_id or "",
            min_score=min_score,
            max_score=max_score,
            page_size=page_size,
            page_token=page_token,
        )
        return self._call(self._stub.ListFeedback, request, timeout)

    def iter_feedback(
        self,
        *,
        conversation_id: str | None = None,
        message_id: str | None = None,
        user_id: str | None = None,
        min_score: int | None = None,
        max_score: int | None = None,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> Iterator[feedback_pb2.Feedback]:
        """Yield every matching feedback, newest first, fetching pages as the loop needs them.

        `timeout` applies to each page fetch. Stop iterating early to avoid fetching more pages.
        """
        page_token = ""
        while True:
            page = self.list_feedback(
                conversation_id=conversation_id,
                message_id=message_id,
                user_id=user_id,
                min_score=min_score,
                max_score=max_score,
                page_size=page_size,
                page_token=page_token,
                timeout=timeout,
            )
            yield from page.feedback
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def _call(
        self,
        method: grpc.UnaryUnaryMultiCallable[_RequestT, _ResponseT],
        request: _RequestT,
        timeout: float | None,
    ) -> _ResponseT:
        """Invoke one RPC under the retry policy, translating failures into FeedbackError."""
        if self._closed:
            raise RuntimeError("the FeedbackClient is closed")

        def attempt(remaining: float | None) -> _ResponseT:
            return method(request, timeout=remaining, metadata=self._metadata)

        return call_with_retry(
            attempt,
            policy=self._retry,
            timeout=self._timeout if timeout is None else timeout,
        )


def _at_most_one(**values: str | None) -> None:
    """Reject two members of one oneof, of which protobuf would silently keep only the last."""
    given = [name for name, value in values.items() if value is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of {' or '.join(values)}, not both")


def _metadata_pairs(
    metadata: Mapping[str, str] | Sequence[tuple[str, str]] | None,
) -> tuple[tuple[str, str], ...]:
    """Normalize call metadata to the tuple of pairs gRPC expects."""
    if metadata is None:
        return ()
    pairs = metadata.items() if isinstance(metadata, Mapping) else metadata
    return tuple((str(key), str(value)) for key, value in pairs)
