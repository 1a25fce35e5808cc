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
from typing import TYPE_CHECKING, TypeAlias, TypeVar

import grpc
from google.rpc import status_pb2

from llmfeedback import Event, Feedback, FeedbackStats, Interaction
from llmfeedback.proto.feedback.v1 import (
    batch_pb2,
    feedback_service_pb2,
    feedback_service_pb2_grpc,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from google.protobuf.message import Message

    Verdict = Callable[[Message], status_pb2.Status | None]
    """Judges one batch or ingest item: None accepts it, a Status rejects it with that error."""

STATUS_DETAILS_KEY = "grpc-status-details-bin"

_ResponseT = TypeVar("_ResponseT")
_BatchResponseT = TypeVar(
    "_BatchResponseT",
    feedback_service_pb2.RecordInteractionsResponse,
    feedback_service_pb2.SubmitFeedbackBatchResponse,
    feedback_service_pb2.LogEventsResponse,
)


@dataclass(frozen=True)
class Abort:
    """A planned failure: abort the call with this code, message and google.rpc details."""

    code: grpc.StatusCode
    message: str = "planned failure"
    details: Sequence[Message] = ()
    status_code: grpc.StatusCode | None = None
    """Code written in the google.rpc.Status trailer when it must differ from `code`."""
    after_storing: bool = False
    """Store the call's items first, as when the connection drops after the server committed."""


@dataclass(frozen=True)
class Stall:
    """A planned slow answer: sleep this long, then answer with the default response."""

    seconds: float


@dataclass(frozen=True)
class Hold:
    """A planned stalled answer: wait until `release` is set (10 s at most), then answer."""

    release: threading.Event


@dataclass(frozen=True)
class Reply:
    """A planned answer computed from the request, for batch calls whose answer depends on it."""

    build: Callable[[Message], Message]


@dataclass(frozen=True)
class Stream:
    """A planned server stream: send these responses, then end with `then` (OK when None)."""

    responses: Sequence[Message]
    then: Abort | None = None


Planned: TypeAlias = "Message | Abort | Stall | Hold | Reply | Stream"


@dataclass
class ReceivedCall:
    """One request as the server saw it."""

    request: Message
    time_remaining: float | None
    metadata: dict[str, str | bytes] = field(default_factory=dict)
    peer_identities: tuple[bytes, ...] = ()
    """The client certificate's names (its CN) on a mutual TLS channel; empty otherwise."""

    @classmethod
    def of(cls, request: Message, context: grpc.ServicerContext) -> ReceivedCall:
        """What the server saw of one call: the request, its deadline, metadata and peer."""
        return cls(
            request=request,
            time_remaining=context.time_remaining(),
            metadata=dict(context.invocation_metadata()),
            peer_identities=tuple(context.peer_identities() or ()),
        )


def rich_status(
    code: grpc.StatusCode, message: str = "planned rejection", *details: Message
) -> status_pb2.Status:
    """A google.rpc.Status as the server puts it in a rejected batch item."""
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return status


def abort_with_rich_status(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    details: Sequence[Message] = (),
    *,
    status_code: grpc.StatusCode | None = None,
) -> None:
    """Abort like the real server: google.rpc.Status in the grpc-status-details-bin trailer."""
    status = rich_status(status_code or code, message, *details)
    context.set_trailing_metadata(((STATUS_DETAILS_KEY, status.SerializeToString()),))
    context.abort(code, message)


class RecordingServicer(feedback_service_pb2_grpc.FeedbackServiceServicer):
    """Records every call and answers with planned outcomes, then with default responses.

    Batch calls and ingest streams accept every item by default, with increasing ids; set `verdict`
    to reject some. Like the real server, an item whose request_id (or event_id) was stored before
    comes back as ITEM_OUTCOME_DUPLICATE with the stored id.
    """

    def __init__(self) -> None:
        self.calls: dict[str, list[ReceivedCall]] = defaultdict(list)
        self.verdict: Verdict | None = None
        self.ingested: list[feedback_service_pb2.IngestItem] = []
        self.ingest_message_sizes: list[int] = []
        self.ended_streams: list[str] = []
        """Stream methods whose handler ended, OK or not, in the order they ended."""
        self._planned: dict[str, deque[Planned]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._last_id = 0
        self.stored_ids: dict[tuple[str, str], int] = {}
        """Ids of the stored batch and ingest items by (kind, request_id or "event_id:" id)."""

    def plan(self, method: str, *outcomes: Planned) -> None:
        """Queue the next answers of `method` (for example "GetStats"), used once each in order."""
        with self._lock:
            self._planned[method].extend(outcomes)

    def requests(self, method: str) -> list[Message]:
        """The requests `method` received so far, oldest first."""
        return [call.request for call in self.calls[method]]

    def received_items(self, method: str) -> list[Message]:
        """Every item the batch `method` received, in order, re-sent items included."""
        return [item for request in self.requests(method) for item in _batch_items(request)]

    def _answer(
        self,
        method: str,
        request: Message,
        context: grpc.ServicerContext,
        default: Callable[[], _ResponseT],
        response_type: type[_ResponseT],
    ) -> _ResponseT:
        with self._lock:
            self.calls[method].append(ReceivedCall.of(request, context))
            planned = self._planned[method]
            outcome = planned.popleft() if planned else None
        if outcome is None or isinstance(outcome, Stall | Hold):
            if isinstance(outcome, Stall):
                time.sleep(outcome.seconds)
            if isinstance(outcome, Hold):
                outcome.release.wait(timeout=10)
            return default()
        if isinstance(outcome, Reply):
            outcome = outcome.build(request)
        if isinstance(outcome, Abort):
            if outcome.after_storing:
                default()
            abort_with_rich_status(
                context,
                outcome.code,
                outcome.message,
                outcome.details,
                status_code=outcome.status_code,
            )
        assert isinstance(outcome, response_type), f"planned {outcome!r} for {method}"
        return outcome

    def _new_id(self) -> int:
        with self._lock:
            self._last_id += 1
            return self._last_id

    def _judge(self, items: Iterable[Message]) -> list[batch_pb2.BatchItemResult]:
        """Results of the items: duplicate of a stored one, or by `verdict` accepted or rejected."""
        results = []
        for index, item in enumerate(items):
            keys = _idempotency_keys(item)
            with self._lock:
                stored = next((self.stored_ids[key] for key in keys if key in self.stored_ids), 0)
            if stored:
                outcome = batch_pb2.ITEM_OUTCOME_DUPLICATE
                results.append(batch_pb2.BatchItemResult(index=index, outcome=outcome, id=stored))
                continue
            error = None if self.verdict is None else self.verdict(item)
            if error is None:
                outcome = batch_pb2.ITEM_OUTCOME_ACCEPTED
                new_id = self._new_id()
                with self._lock:
                    self.stored_ids.update(dict.fromkeys(keys, new_id))
                results.append(batch_pb2.BatchItemResult(index=index, outcome=outcome, id=new_id))
            else:
                outcome = batch_pb2.ITEM_OUTCOME_REJECTED
                results.append(batch_pb2.BatchItemResult(index=index, outcome=outcome, error=error))
        return results

    def _batch_response(
        self, response_type: type[_BatchResponseT], items: Iterable[Message]
    ) -> Callable[[], _BatchResponseT]:
        def build() -> _BatchResponseT:
            results = self._judge(items)
            counts = _outcome_counts(results)
            return response_type(
                results=results,
                accepted_count=counts[batch_pb2.ITEM_OUTCOME_ACCEPTED],
                rejected_count=counts[batch_pb2.ITEM_OUTCOME_REJECTED],
                duplicate_count=counts[batch_pb2.ITEM_OUTCOME_DUPLICATE],
            )

        return build

    def RecordInteraction(
        self,
        request: feedback_service_pb2.RecordInteractionRequest,
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.RecordInteractionResponse:
        interaction = Interaction(id=1, conversation_id=request.conversation_id)
        default = feedback_service_pb2.RecordInteractionResponse(interaction=interaction)
        return self._answer("RecordInteraction", request, context, lambda: default, type(default))

    def SubmitFeedback(
        self,
        request: feedback_service_pb2.SubmitFeedbackRequest,
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.SubmitFeedbackResponse:
        feedback = Feedback(id=1, conversation_id=request.conversation_id, score=5)
        default = feedback_service_pb2.SubmitFeedbackResponse(feedback=feedback)
        return self._answer("SubmitFeedback", request, context, lambda: default, type(default))

    def LogEvent(
        self,
        request: feedback_service_pb2.LogEventRequest,
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.LogEventResponse:
        event = Event(id=1, user_id=request.user_id, event_type=request.event_type)
        default = feedback_service_pb2.LogEventResponse(event=event)
        return self._answer("LogEvent", request, context, lambda: default, type(default))

    def GetStats(
        self,
        request: feedback_service_pb2.GetStatsRequest,
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.GetStatsResponse:
        default = feedback_service_pb2.GetStatsResponse(feedback=FeedbackStats(total_count=0))
        return self._answer("GetStats", request, context, lambda: default, type(default))

    def ListFeedback(
        self,
        request: feedback_service_pb2.ListFeedbackRequest,
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.ListFeedbackResponse:
        default = feedback_service_pb2.ListFeedbackResponse()
        return self._answer("ListFeedback", request, context, lambda: default, type(default))

    def ListFeedbackHistory(
        self,
        request: feedback_service_pb2.ListFeedbackHistoryRequest,
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.ListFeedbackHistoryResponse:
        default = feedback_service_pb2.ListFeedbackHistoryResponse()
        return self._answer("ListFeedbackHistory", request, context, lambda: default, type(default))

    def ListInteractions(
        self,
        request: feedback_service_pb2.ListInteractionsRequest,
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.ListInteractionsResponse:
        default = feedback_service_pb2.ListInteractionsResponse()
        return self._answer("ListInteractions", request, context, lambda: default, type(default))

    def ListEvents(
        self,
        request: feedback_service_pb2.ListEventsRequest,
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.ListEventsResponse:
        default = feedback_service_pb2.ListEventsResponse()
        return self._answer("ListEvents", request, context, lambda: default, type(default))

    def ExportFeedback(
        self, request: feedback_service_pb2.ExportFeedbackRequest, context: grpc.ServicerContext
    ) -> Iterator[feedback_service_pb2.ExportFeedbackResponse]:
        return self._stream(
            "ExportFeedback", request, context, feedback_service_pb2.ExportFeedbackResponse
        )

    def ExportInteractions(
        self,
        request: feedback_service_pb2.ExportInteractionsRequest,
        context: grpc.ServicerContext,
    ) -> Iterator[feedback_service_pb2.ExportInteractionsResponse]:
        return self._stream(
            "ExportInteractions", request, context, feedback_service_pb2.ExportInteractionsResponse
        )

    def ExportEvents(
        self, request: feedback_service_pb2.ExportEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[feedback_service_pb2.ExportEventsResponse]:
        return self._stream(
            "ExportEvents", request, context, feedback_service_pb2.ExportEventsResponse
        )

    def _stream(
        self,
        method: str,
        request: Message,
        context: grpc.ServicerContext,
        response_type: type[_ResponseT],
    ) -> Iterator[_ResponseT]:
        """Record the call, then play its planned Stream (or Abort); an empty stream by default."""
        with self._lock:
            self.calls[method].append(ReceivedCall.of(request, context))
            planned = self._planned[method]
            outcome = planned.popleft() if planned else Stream(())
        if isinstance(outcome, Abort):
            outcome = Stream((), then=outcome)
        assert isinstance(outcome, Stream), f"planned {outcome!r} for {method}"
        try:
            for response in outcome.responses:
                assert isinstance(response, response_type), f"planned {response!r} for {method}"
                yield response
            if outcome.then is not None:
                abort_with_rich_status(
                    context,
                    outcome.then.code,
                    outcome.then.message,
                    outcome.then.details,
                    status_code=outcome.then.status_code,
                )
        finally:
            with self._lock:
                self.ended_streams.append(method)

    def RecordInteractions(
        self,
        request: feedback_service_pb2.RecordInteractionsRequest,
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.RecordInteractionsResponse:
        response_type = feedback_service_pb2.RecordInteractionsResponse
        default = self._batch_response(response_type, request.interactions)
        return self._answer("RecordInteractions", request, context, default, response_type)

    def SubmitFeedbackBatch(
        self,
        request: feedback_service_pb2.SubmitFeedbackBatchRequest,
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.SubmitFeedbackBatchResponse:
        response_type = feedback_service_pb2.SubmitFeedbackBatchResponse
        default = self._batch_response(response_type, request.feedback)
        return self._answer("SubmitFeedbackBatch", request, context, default, response_type)

    def LogEvents(
        self,
        request: feedback_service_pb2.LogEventsRequest,
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.LogEventsResponse:
        response_type = feedback_service_pb2.LogEventsResponse
        default = self._batch_response(response_type, request.events)
        return self._answer("LogEvents", request, context, default, response_type)

    def Ingest(
        self,
        request_iterator: Iterator[feedback_service_pb2.IngestRequest],
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.IngestResponse:
        # The stream is read to its end first; its items are kept in `ingested`, and the call
        # is recorded with its first message.
        messages = list(request_iterator)
        self.ingest_message_sizes.extend(len(message.items) for message in messages)
        stream = [item for message in messages for item in message.items]

        def default() -> feedback_service_pb2.IngestResponse:
            results = self._judge(_ingest_item(message) for message in stream)
            rejections = [
                result for result in results if result.outcome == batch_pb2.ITEM_OUTCOME_REJECTED
            ]
            counts = _outcome_counts(results)
            return feedback_service_pb2.IngestResponse(
                received_count=len(stream),
                accepted_count=counts[batch_pb2.ITEM_OUTCOME_ACCEPTED],
                rejected_count=len(rejections),
                rejections=rejections[:1000],
                duplicate_count=counts[batch_pb2.ITEM_OUTCOME_DUPLICATE],
            )

        self.ingested.extend(stream)
        first = stream[0] if stream else feedback_service_pb2.IngestItem()
        return self._answer("Ingest", first, context, default, feedback_service_pb2.IngestResponse)

    def EraseUser(
        self, request: feedback_service_pb2.EraseUserRequest, context: grpc.ServicerContext
    ) -> feedback_service_pb2.EraseUserResponse:
        default = feedback_service_pb2.EraseUserResponse()
        return self._answer("EraseUser", request, context, lambda: default, type(default))

    def EraseConversation(
        self,
        request: feedback_service_pb2.EraseConversationRequest,
        context: grpc.ServicerContext,
    ) -> feedback_service_pb2.EraseConversationResponse:
        default = feedback_service_pb2.EraseConversationResponse()
        return self._answer("EraseConversation", request, context, lambda: default, type(default))

    def OptOutUser(
        self, request: feedback_service_pb2.OptOutUserRequest, context: grpc.ServicerContext
    ) -> feedback_service_pb2.OptOutUserResponse:
        default = feedback_service_pb2.OptOutUserResponse()
        return self._answer("OptOutUser", request, context, lambda: default, type(default))

    def OptInUser(
        self, request: feedback_service_pb2.OptInUserRequest, context: grpc.ServicerContext
    ) -> feedback_service_pb2.OptInUserResponse:
        default = feedback_service_pb2.OptInUserResponse()
        return self._answer("OptInUser", request, context, lambda: default, type(default))

    def GetOptOut(
        self, request: feedback_service_pb2.GetOptOutRequest, context: grpc.ServicerContext
    ) -> feedback_service_pb2.GetOptOutResponse:
        default = feedback_service_pb2.GetOptOutResponse()
        return self._answer("GetOptOut", request, context, lambda: default, type(default))

    def ListErasures(
        self, request: feedback_service_pb2.ListErasuresRequest, context: grpc.ServicerContext
    ) -> feedback_service_pb2.ListErasuresResponse:
        default = feedback_service_pb2.ListErasuresResponse()
        return self._answer("ListErasures", request, context, lambda: default, type(default))

    def ExportUserData(
        self, request: feedback_service_pb2.ExportUserDataRequest, context: grpc.ServicerContext
    ) -> Iterator[feedback_service_pb2.ExportUserDataResponse]:
        return self._stream(
            "ExportUserData", request, context, feedback_service_pb2.ExportUserDataResponse
        )


def _idempotency_keys(item: Message) -> list[tuple[str, str]]:
    """The keys under which the real server finds an item stored before: request_id, event_id."""
    kind = type(item).__name__
    keys = []
    request_id = getattr(item, "request_id", "")
    if request_id:
        keys.append((kind, request_id.lower()))
    event_id = getattr(item, "event_id", "")
    if event_id:
        keys.append((kind, f"event_id:{event_id}"))
    return keys


def _outcome_counts(results: Sequence[batch_pb2.BatchItemResult]) -> dict[int, int]:
    counts: dict[int, int] = dict.fromkeys(batch_pb2.ItemOutcome.values(), 0)
    for result in results:
        counts[result.outcome] += 1
    return counts


def _ingest_item(message: feedback_service_pb2.IngestItem) -> Message:
    """The interaction, feedback or event an ingest item carries (the item if none)."""
    kind = message.WhichOneof("item")
    return message if kind is None else getattr(message, kind)


def _batch_items(request: Message) -> Sequence[Message]:
    if isinstance(request, feedback_service_pb2.LogEventsRequest):
        return request.events
    if isinstance(request, feedback_service_pb2.RecordInteractionsRequest):
        return request.interactions
    if isinstance(request, feedback_service_pb2.SubmitFeedbackBatchRequest):
        return request.feedback
    raise TypeError(f"not a batch request: {type(request).__name__}")


@contextmanager
def serve(
    servicer: RecordingServicer, credentials: grpc.ServerCredentials | None = None
) -> Iterator[str]:
    """Serve `servicer` on a free 127.0.0.1 port and yield its address; TLS with `credentials`."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    feedback_service_pb2_grpc.add_FeedbackServiceServicer_to_server(servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
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
