"""The requests every phase sends, built in one place so h2load, Python clients and SQLite agree.

The ceiling server answers with responses shaped like the real server's, so both put the same
bytes on the wire and the comparison measures only the work behind the handler.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from llmfeedback.proto.feedback.v1 import event_pb2, feedback_pb2
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb

SERVICE_PATH = "/feedback.v1.FeedbackService"
LOG_EVENTS_PATH = f"{SERVICE_PATH}/LogEvents"
INGEST_PATH = f"{SERVICE_PATH}/Ingest"

CONVERSATION_ID = "bench-conversation"
USER_ID = "bench-user"
EVENT_TYPE = "page_view"
TYPICAL_ROW_ID = 20_000
"""An id as large as the real server's reach during a run (a 3-byte varint)."""


@dataclass(frozen=True, slots=True)
class UnaryCall:
    """One unary write the bench drives with h2load: its method, request and the table it fills."""

    method: str
    table: str
    request: Message

    @property
    def path(self) -> str:
        """The HTTP/2 path of the method."""
        return f"{SERVICE_PATH}/{self.method}"

    def grpc_body(self) -> bytes:
        """The request as one length-prefixed gRPC message, the HTTP/2 body h2load sends."""
        return grpc_frame(self.request.SerializeToString())


def grpc_frame(message: bytes) -> bytes:
    """A serialized message behind gRPC's 5-byte prefix: uncompressed flag, big-endian length."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def submit_feedback_request() -> pb.SubmitFeedbackRequest:
    """A FilAgent-shaped rating: score, text, latency and tokens."""
    return pb.SubmitFeedbackRequest(
        conversation_id=CONVERSATION_ID,
        score=4,
        text="Clear and concise answer",
        latency_ms=125.5,
        tokens_used=245,
    )


def log_event_request() -> pb.LogEventRequest:
    """An UP2D8-shaped page view with a small details object."""
    request = pb.LogEventRequest(user_id=USER_ID, event_type=EVENT_TYPE)
    request.details.update({"page": "/dashboard", "duration_ms": 42})
    return request


def log_events_request(batch_size: int) -> pb.LogEventsRequest:
    """A LogEvents batch of `batch_size` copies of the unary event."""
    return pb.LogEventsRequest(events=[log_event_request()] * batch_size)


INGEST_ITEMS_PER_MESSAGE = 500
"""Events per Ingest stream message, as the client library sends them."""


def ingest_message(items: int) -> pb.IngestRequest:
    """One Ingest stream message carrying `items` copies of the unary event."""
    return pb.IngestRequest(items=[pb.IngestItem(event=log_event_request())] * items)


UNARY_CALLS = (
    UnaryCall("SubmitFeedback", "feedback", submit_feedback_request()),
    UnaryCall("LogEvent", "events", log_event_request()),
)


def submit_feedback_response() -> pb.SubmitFeedbackResponse:
    """What the real server answers to submit_feedback_request(), for the ceiling to send."""
    request = submit_feedback_request()
    return pb.SubmitFeedbackResponse(
        feedback=feedback_pb2.Feedback(
            id=TYPICAL_ROW_ID,
            conversation_id=request.conversation_id,
            score=request.score,
            text=request.text,
            latency_ms=request.latency_ms,
            tokens_used=request.tokens_used,
            metadata=Struct(),
            create_time=_now(),
        )
    )


def log_event_response() -> pb.LogEventResponse:
    """What the real server answers to log_event_request(), for the ceiling to send."""
    request = log_event_request()
    now = _now()
    return pb.LogEventResponse(
        event=event_pb2.Event(
            id=TYPICAL_ROW_ID,
            user_id=request.user_id,
            event_type=request.event_type,
            details=request.details,
            event_time=now,
            receive_time=now,
        )
    )


def _now() -> Timestamp:
    """The current time at microsecond precision, as the server stores it."""
    microseconds = time.time_ns() // 1000
    return Timestamp(seconds=microseconds // 1_000_000, nanos=microseconds % 1_000_000 * 1000)
