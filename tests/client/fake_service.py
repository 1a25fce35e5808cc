"""A scriptable FeedbackService served by a real gRPC server, to test the client end to end.

The real servicer is written in parallel; this one records every request and answers with canned
responses or aborts with rich google.rpc statuses, exactly as a server would put them on the wire.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import defaultdict, deque
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import grpc
from google.rpc import status_pb2

from llmfeedback import Event, Feedback, FeedbackStats, Interaction
from llmfeedback._proto.feedback.v1 import feedback_service_pb2, feedback_service_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from google.protobuf.message import Message

STATUS_DETAILS_KEY = "grpc-status-details-bin"

_ResponseT = TypeVar("_ResponseT")


@dataclass(frozen=True)
class Abort:
    """A planned failure: abort the call with this code, message and google.rpc details."""

    code: grpc.StatusCode
    message: str = "planned failure"
    details: Sequence[Message] = ()
    status_code: grpc.StatusCode | None = None
    """Code written in the google.rpc.Status trailer when it must differ from `code`."""


@dataclass(frozen=True)
class Stall:
    """A planned slow answer: sleep this long, then answer with the default response."""

    seconds: float


@dataclass
class ReceivedCall:
    """One request as the server saw it."""

    request: Message
    time_remaining: float | None
    metadata: dict[str, str | bytes] = field(default_factory=dict)


def abort_with_rich_status(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    details: Sequence[Message] = (),
    *,
    status_code: grpc.StatusCode | None = None,
) -> None:
    """Abort like the real server: google.rpc.Status in the grpc-status-details-bin trailer."""
    status = status_pb2.Status(code=(status_code or code).value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    context.set_trailing_metadata(((STATUS_DETAILS_KEY, status.SerializeToString()),))
    context.abort(code, message)


class RecordingServicer(feedback_service_pb2_grpc.FeedbackServiceServicer):
    """Records every call and answers with planned outcomes, then with default responses."""

    def __init__(self) -> None:
        self.calls: dict[str, list[ReceivedCall]] = defaultdict(list)
        self._planned: dict[str, deque[Message | Abort | Stall]] = defaultdict(deque)
        self._lock = threading.Lock()

    def plan(self, method: str, *outcomes: Message | Abort | Stall) -> None:
        """Queue the next answers of `method` (for example "GetStats"), used once each in order."""
        with self._lock:
            self._planned[method].extend(outcomes)

    def requests(self, method: str) -> list[Message]:
        """The requests `method` received so far, oldest first."""
        return [call.request for call in self.calls[method]]

    def _answer(
        self,
        method: str,
        request: Message,
        context: grpc.ServicerContext,
        default: _ResponseT,
    ) -> _ResponseT:
        with self._lock:
            self.calls[method].append(
                ReceivedCall(
                    request=request,
                    time_remaining=context.time_remaining(),
                    metadata=dict(context.invocation_metadata()),
                )
            )
            planned = self._planned[method]
            outcome = planned.popleft() if planned else default
        if isinstance(outcome, Abort):
            abort_with_rich_status(
                context,
                outcome.code,
                outcome.message,
                outcome.details,
                status_code=outcome.status_code,
            )
        if isinstance(outcome, Stall):
            time.sleep(outcome.seconds)
            return default
        assert isinstance(outcome, type(default)), f"planned {outcome!r} for {method}"
        return outcome

    def RecordInteraction(
        self,
        request: feedback_service_pb2.RecordInteractionRequest,
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.RecordInteractionResponse:
        interaction = Interaction(id=1, conversation_id=request.conversation_id)
        default = feedback_service_pb2.RecordInteractionResponse(interaction=interaction)
        return self._answer("RecordInteraction", request, context, default)

    def SubmitFeedback(
        self,
        request: feedback_service_pb2.SubmitFeedbackRequest,
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.SubmitFeedbackResponse:
        feedback = Feedback(id=1, conversation_id=request.conversation_id, score=5)
        default = feedback_service_pb2.SubmitFeedbackResponse(feedback=feedback)
        return self._answer("SubmitFeedback", request, context, default)

    def LogEvent(
        self,
        request: feedback_service_pb2.LogEventRequest,
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.LogEventResponse:
        event = Event(id=1, user_id=request.user_id, event_type=request.event_type)
        default = feedback_service_pb2.LogEventResponse(event=event)
        return self._answer("LogEvent", request, context, default)

    def GetStats(
        self,
        request: feedback_service_pb2.GetStatsRequest,
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.GetStatsResponse:
        default = feedback_service_pb2.GetStatsResponse(feedback=FeedbackStats(total_count=0))
        return self._answer("GetStats", request, context, default)

    def ListFeedback(
        self,
        request: feedback_service_pb2.ListFeedbackRequest,
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.ListFeedbackResponse:
        default = feedback_service_pb2.ListFeedbackResponse()
        return self._answer("ListFeedback", request, context, default)


@contextmanager
def serve(servicer: RecordingServicer) -> Iterator[str]:
    """Serve `servicer` on a free 127.0.0.1 port and yield its address."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    feedback_service_pb2_grpc.add_FeedbackServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def unused_address() -> str:
    """An address on which nothing listens, so connecting is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"
