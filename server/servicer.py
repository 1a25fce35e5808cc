"""FeedbackServicer: maps feedback.v1 requests to FeedbackService calls and results back."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from functools import wraps
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from llmfeedback.proto.feedback.v1 import batch_pb2, feedback_service_pb2_grpc
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from server import mapping
from server.access import Access, current_caller
from server.service import (
    MAX_BATCH_ITEMS,
    Duplicate,
    FeedbackService,
    FieldViolation,
    HistoricInput,
    InvalidArgument,
    ResourceExhausted,
    ServiceError,
    Suppressed,
    WriteInput,
    WriteOutcome,
)
from server.service.api_keys import ApiKeyService
from server.service.erasure import ErasureService
from server.service.list_inputs import SelectionT
from server.service.listing import EVENTS, FEEDBACK, INTERACTIONS, EntryT, FilterT, Listing
from server.service.opt_out import OptOutService
from server.service.subjects import CONVERSATION, USER
from server.service.watch import WatchService
from server.status import abort, status_for

Request = TypeVar("Request")
Response = TypeVar("Response")
ItemMessage = TypeVar("ItemMessage", bound=Message)
Context = grpc.aio.ServicerContext[object, object]

MAX_ITEM_BYTES = 64 * 1024
"""Largest serialized item of a batch call or an Ingest stream."""
MAX_LISTED_REJECTIONS = 1000
"""Ingest lists at most this many rejected items; the counts include them all."""
INGEST_OVERLOAD_PATIENCE_SECONDS = 30.0
"""How long Ingest keeps waiting for room in a full write queue before giving up."""


def _unary(
    method: Callable[[FeedbackServicer, Request, Context], Awaitable[Response]],
) -> Callable[[FeedbackServicer, Request, Context], Awaitable[Response]]:
    """Answer every exception with a precise status instead of UNKNOWN."""

    @wraps(method)
    async def handle(self: FeedbackServicer, request: Request, context: Context) -> Response:
        try:
            return await method(self, request, context)
        except Exception as error:
            if isinstance(error, grpc.aio.AbortError):
                raise
            await abort(context, error)

    return handle


def _streaming(
    method: Callable[[FeedbackServicer, Request, Context], AsyncGenerator[Response, None]],
) -> Callable[[FeedbackServicer, Request, Context], AsyncGenerator[Response, None]]:
    """_unary for server-streaming handlers: an exception ends the stream with its status.

    Responses already sent stay sent; an export's client resumes from the last one's token.
    The handler's generator is closed as soon as the call ends, so a cancelled export stops
    reading at once instead of when the garbage collector finds it.
    """

    @wraps(method)
    async def handle(
        self: FeedbackServicer, request: Request, context: Context
    ) -> AsyncGenerator[Response, None]:
        try:
            async with aclosing(method(self, request, context)) as responses:
                async for response in responses:
                    yield response
        except Exception as error:
            if isinstance(error, grpc.aio.AbortError):
                raise
            await abort(context, error)

    return handle


class FeedbackServicer(feedback_service_pb2_grpc.FeedbackServiceServicer):
    """The feedback.v1.FeedbackService endpoints; rules live in FeedbackService."""

    def __init__(
        self,
        service: FeedbackService,
        keys: ApiKeyService,
        access: Access,
        erasures: ErasureService,
        opt_outs: OptOutService,
        watches: WatchService,
    ) -> None:
        self._service = service
        self._watches = watches
        self._keys = keys
        self._erasures = erasures
        self._opt_outs = opt_outs
        self._access = access
        self._stats_responses = mapping.StatsResponses()

    @_unary
    async def RecordInteraction(
        self, request: pb.RecordInteractionRequest, context: Context
    ) -> pb.RecordInteractionResponse:
        record = await self._service.record_interaction(mapping.interaction_input(request))
        if isinstance(record, Suppressed):
            return pb.RecordInteractionResponse(suppressed=True)
        return pb.RecordInteractionResponse(interaction=mapping.interaction_message(record))

    @_unary
    async def SubmitFeedback(
        self, request: pb.SubmitFeedbackRequest, context: Context
    ) -> pb.SubmitFeedbackResponse:
        record = await self._service.submit_feedback(mapping.feedback_input(request))
        if isinstance(record, Suppressed):
            return pb.SubmitFeedbackResponse(suppressed=True)
        return pb.SubmitFeedbackResponse(feedback=mapping.feedback_message(record))

    @_unary
    async def LogEvent(self, request: pb.LogEventRequest, context: Context) -> pb.LogEventResponse:
        record = await self._service.log_event(mapping.event_input(request))
        if isinstance(record, Suppressed):
            return pb.LogEventResponse(suppressed=True)
        return pb.LogEventResponse(event=mapping.event_message(record))

    @_unary
    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.GetStatsResponse:
        stats = await self._service.get_stats(mapping.stats_input(request))
        return self._stats_responses.response(stats)

    @_unary
    async def ListFeedback(
        self, request: pb.ListFeedbackRequest, context: Context
    ) -> pb.ListFeedbackResponse:
        selection = mapping.feedback_selection(request)
        return await self._page(FEEDBACK, selection, request, mapping.FEEDBACK_RESPONSES)

    @_unary
    async def ListInteractions(
        self, request: pb.ListInteractionsRequest, context: Context
    ) -> pb.ListInteractionsResponse:
        selection = mapping.interaction_selection(request)
        return await self._page(INTERACTIONS, selection, request, mapping.INTERACTION_RESPONSES)

    @_unary
    async def ListEvents(
        self, request: pb.ListEventsRequest, context: Context
    ) -> pb.ListEventsResponse:
        selection = mapping.event_selection(request)
        return await self._page(EVENTS, selection, request, mapping.EVENT_RESPONSES)

    @_streaming
    def ExportFeedback(
        self, request: pb.ExportFeedbackRequest, context: Context
    ) -> AsyncGenerator[pb.ExportFeedbackResponse, None]:
        selection = mapping.feedback_selection(request)
        return self._export(FEEDBACK, selection, request, mapping.FEEDBACK_RESPONSES)

    @_streaming
    def ExportInteractions(
        self, request: pb.ExportInteractionsRequest, context: Context
    ) -> AsyncGenerator[pb.ExportInteractionsResponse, None]:
        selection = mapping.interaction_selection(request)
        return self._export(INTERACTIONS, selection, request, mapping.INTERACTION_RESPONSES)

    @_streaming
    def ExportEvents(
        self, request: pb.ExportEventsRequest, context: Context
    ) -> AsyncGenerator[pb.ExportEventsResponse, None]:
        selection = mapping.event_selection(request)
        return self._export(EVENTS, selection, request, mapping.EVENT_RESPONSES)

    @_streaming
    def WatchFeedback(
        self, request: pb.WatchFeedbackRequest, context: Context
    ) -> AsyncGenerator[Any, None]:
        selection = mapping.feedback_selection(request)
        return self._watch("feedback", FEEDBACK, selection, request)

    @_streaming
    def WatchInteractions(
        self, request: pb.WatchInteractionsRequest, context: Context
    ) -> AsyncGenerator[Any, None]:
        selection = mapping.interaction_selection(request)
        return self._watch("interactions", INTERACTIONS, selection, request)

    @_streaming
    def WatchEvents(
        self, request: pb.WatchEventsRequest, context: Context
    ) -> AsyncGenerator[Any, None]:
        selection = mapping.event_selection(request)
        return self._watch("events", EVENTS, selection, request)

    async def _watch(
        self,
        kind: str,
        listing: Listing[SelectionT, FilterT, EntryT],
        selection: SelectionT,
        request: mapping.WatchRequestMessage,
    ) -> AsyncGenerator[bytes, None]:
        """Every Watch method: the serialized responses of a watch of its kind."""
        watch = self._watches.watch(
            kind, listing.validate, mapping.watch_request(request, selection)
        )
        async with aclosing(watch) as messages:
            async for message in messages:
                yield mapping.watch_response(message)

    async def _page(
        self,
        listing: Listing[SelectionT, FilterT, EntryT],
        selection: SelectionT,
        request: mapping.ListRequestMessage,
        responses: mapping.ListedResponses[mapping.PageResponseT, Any],
    ) -> mapping.PageResponseT:
        """Every List method: one page of its kind."""
        page = await self._service.list_page(listing, mapping.page_request(request, selection))
        return responses.page_response(page)

    async def _export(
        self,
        listing: Listing[SelectionT, FilterT, EntryT],
        selection: SelectionT,
        request: mapping.ExportRequestMessage,
        responses: mapping.ListedResponses[Any, mapping.ChunkResponseT],
    ) -> AsyncGenerator[mapping.ChunkResponseT, None]:
        """Every Export method: the chunks of its kind, the export closed when the call ends."""
        export = self._service.export(listing, mapping.export_request(request, selection))
        async with aclosing(export) as chunks:
            async for chunk in chunks:
                yield responses.chunk_response(chunk)

    @_unary
    async def ListFeedbackHistory(
        self, request: pb.ListFeedbackHistoryRequest, context: Context
    ) -> pb.ListFeedbackHistoryResponse:
        votes = await self._service.feedback_history(request.message_id, request.user_id)
        return pb.ListFeedbackHistoryResponse(
            feedback=[mapping.feedback_message(vote) for vote in votes]
        )

    @_unary
    async def RecordInteractions(
        self, request: pb.RecordInteractionsRequest, context: Context
    ) -> pb.RecordInteractionsResponse:
        inputs = [_sized(item, mapping.interaction_input) for item in request.interactions]
        results = await self._write_batch(inputs, "interactions")
        return _batch_response(pb.RecordInteractionsResponse, results)

    @_unary
    async def SubmitFeedbackBatch(
        self, request: pb.SubmitFeedbackBatchRequest, context: Context
    ) -> pb.SubmitFeedbackBatchResponse:
        inputs = [_sized(item, mapping.feedback_input) for item in request.feedback]
        results = await self._write_batch(inputs, "feedback")
        return _batch_response(pb.SubmitFeedbackBatchResponse, results)

    @_unary
    async def LogEvents(
        self, request: pb.LogEventsRequest, context: Context
    ) -> pb.LogEventsResponse:
        inputs = [_sized(item, mapping.event_input) for item in request.events]
        results = await self._write_batch(inputs, "events")
        return _batch_response(pb.LogEventsResponse, results)

    async def _write_batch(
        self, inputs: Sequence[WriteInput | InvalidArgument], field: str
    ) -> list[batch_pb2.BatchItemResult]:
        self._access.charge(len(inputs) - 1)  # the call itself was charged one item
        outcomes = await self._service.write_many(inputs, field)
        return [_item_result(index, outcome) for index, outcome in enumerate(outcomes)]

    @_unary
    async def Ingest(
        self, request_iterator: AsyncIterator[pb.IngestRequest], context: Context
    ) -> pb.IngestResponse:
        ingest = await self._stream(request_iterator, _ingest_input, correct_clocks=True)
        return pb.IngestResponse(**ingest.totals())

    @_unary
    async def ImportHistory(
        self, request_iterator: AsyncIterator[pb.ImportHistoryRequest], context: Context
    ) -> pb.ImportHistoryResponse:
        ingest = await self._stream(request_iterator, _import_input, correct_clocks=False)
        return pb.ImportHistoryResponse(**ingest.totals())

    async def _stream(
        self,
        request_iterator: AsyncIterator[Any],
        to_input: Callable[[Any], WriteInput | InvalidArgument],
        *,
        correct_clocks: bool,
    ) -> _IngestRun:
        """Write a stream of item messages in chunks, one chunk in flight while the next is read;
        `correct_clocks` estimates the client's clock error over the stream (Ingest)."""
        ingest = _IngestRun(self._service)
        chunk: list[tuple[int, WriteInput | InvalidArgument]] = []
        try:
            async for request in request_iterator:
                inputs = [to_input(item) for item in request.items]
                if correct_clocks:
                    ingest.clock.observe(inputs)  # when received, before any wait of ours
                await self._within_rate(len(request.items))
                for item_input in inputs:
                    chunk.append((ingest.received, item_input))
                    ingest.received += 1
                    if len(chunk) == MAX_BATCH_ITEMS:
                        await ingest.write(chunk)
                        chunk = []
            if chunk:
                await ingest.write(chunk)
            await ingest.finish()
        except BaseException:
            ingest.abandon()
            raise
        return ingest

    async def _within_rate(self, items: int) -> None:
        """Charge a stream's items, slowing the stream (HTTP/2 flow control) while the caller is
        over its rate limit, for up to INGEST_OVERLOAD_PATIENCE_SECONDS."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + INGEST_OVERLOAD_PATIENCE_SECONDS
        while (delay := self._access.wait_seconds(items)) > 0:
            if loop.time() + delay > give_up:
                self._access.charge(items)  # raises ResourceExhausted with the rate's details
            await asyncio.sleep(delay)

    # ---- API keys ----

    @_unary
    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        scopes = mapping.scopes_input(request.scopes)
        if isinstance(scopes, InvalidArgument):
            raise scopes
        created = await self._keys.create(
            request.name, scopes, request.client_identity, current_caller().actor
        )
        return pb.CreateApiKeyResponse(
            api_key=mapping.api_key_message(created.key), secret=created.secret
        )

    @_unary
    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Context
    ) -> pb.ListApiKeysResponse:
        keys = await self._keys.all_keys()
        return pb.ListApiKeysResponse(
            api_keys=[
                mapping.api_key_message(key)
                for key in keys
                if not (request.active_only and key.revoke_time is not None)
            ]
        )

    @_unary
    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Context
    ) -> pb.RevokeApiKeyResponse:
        key = await self._keys.revoke(request.prefix, current_caller().actor)
        return pb.RevokeApiKeyResponse(api_key=mapping.api_key_message(key))

    @_unary
    async def ListApiKeyEvents(
        self, request: pb.ListApiKeyEventsRequest, context: Context
    ) -> pb.ListApiKeyEventsResponse:
        events = await self._keys.events(request.page_size)
        return pb.ListApiKeyEventsResponse(
            events=[mapping.api_key_event_message(event) for event in events]
        )

    # ---- erasures and access exports ----

    @_unary
    async def EraseUser(
        self, request: pb.EraseUserRequest, context: Context
    ) -> pb.EraseUserResponse:
        erasure = await self._erasures.erase(USER, request.user_id, current_caller().actor)
        return pb.EraseUserResponse(erasure=mapping.erasure_message(erasure))

    @_unary
    async def EraseConversation(
        self, request: pb.EraseConversationRequest, context: Context
    ) -> pb.EraseConversationResponse:
        erasure = await self._erasures.erase(
            CONVERSATION, request.conversation_id, current_caller().actor
        )
        return pb.EraseConversationResponse(erasure=mapping.erasure_message(erasure))

    @_unary
    async def ListErasures(
        self, request: pb.ListErasuresRequest, context: Context
    ) -> pb.ListErasuresResponse:
        entries, next_token = await self._erasures.log(
            request.page_size, request.page_token, request.user_id, request.conversation_id
        )
        return pb.ListErasuresResponse(
            erasures=[mapping.erasure_message(entry) for entry in entries],
            next_page_token=next_token,
        )

    @_streaming
    async def ExportUserData(
        self, request: pb.ExportUserDataRequest, context: Context
    ) -> AsyncGenerator[pb.ExportUserDataResponse, None]:
        async with aclosing(self._erasures.export_user(request.user_id)) as chunks:
            async for table, records in chunks:
                yield mapping.user_data_response(table, records)

    @_unary
    async def OptOutUser(
        self, request: pb.OptOutUserRequest, context: Context
    ) -> pb.OptOutUserResponse:
        opt_out, erasure = await self._opt_outs.opt_out(
            request.user_id, current_caller().actor, erase=request.erase_past_data
        )
        response = pb.OptOutUserResponse(opt_out=mapping.opt_out_message(opt_out))
        if erasure is not None:
            response.erasure.CopyFrom(mapping.erasure_message(erasure))
        return response

    @_unary
    async def OptInUser(
        self, request: pb.OptInUserRequest, context: Context
    ) -> pb.OptInUserResponse:
        was_opted_out = await self._opt_outs.opt_in(request.user_id, current_caller().actor)
        return pb.OptInUserResponse(was_opted_out=was_opted_out)

    @_unary
    async def GetOptOut(
        self, request: pb.GetOptOutRequest, context: Context
    ) -> pb.GetOptOutResponse:
        state = await self._opt_outs.state(request.user_id)
        response = pb.GetOptOutResponse(
            choices=[mapping.opt_out_choice_message(choice) for choice in state.choices]
        )
        if state.opt_out is not None:
            response.opt_out.CopyFrom(mapping.opt_out_message(state.opt_out))
        return response


class _IngestRun:
    """One Ingest stream: writes chunks with one chunk in flight while the next one is read."""

    def __init__(self, service: FeedbackService) -> None:
        self._service = service
        self.clock = service.stream_clock()
        """The client's clock error as estimated over this stream; corrects its items' times."""
        self._in_flight: asyncio.Task[None] | None = None
        self.received = 0
        self.accepted = 0
        self.rejected = 0
        self.duplicates = 0
        self.suppressed = 0
        self.rejections: list[batch_pb2.BatchItemResult] = []

    async def write(self, chunk: list[tuple[int, WriteInput | InvalidArgument]]) -> None:
        """Start writing `chunk` once the previous chunk has committed."""
        await self.finish()
        self._in_flight = asyncio.create_task(self._write(chunk))

    def abandon(self) -> None:
        """The stream failed or its client left: the chunk in flight still commits (its items
        were queued), and its outcome is taken here so it is never reported as unretrieved."""
        if self._in_flight is not None:
            self._in_flight.add_done_callback(_retrieved)
            self._in_flight = None

    async def finish(self) -> None:
        """Wait for the chunk in flight; re-raises its failure."""
        if self._in_flight is not None:
            task, self._in_flight = self._in_flight, None
            await task

    async def _write(self, chunk: list[tuple[int, WriteInput | InvalidArgument]]) -> None:
        outcomes = await self._admitted([item for _, item in chunk])
        for (index, _), outcome in zip(chunk, outcomes, strict=True):
            if isinstance(outcome, Exception):
                self.rejected += 1
                if len(self.rejections) < MAX_LISTED_REJECTIONS:
                    self.rejections.append(_item_result(index, outcome))
            elif isinstance(outcome, Duplicate):
                self.duplicates += 1
            elif isinstance(outcome, Suppressed):
                self.suppressed += 1
            else:
                self.accepted += 1

    async def _admitted(self, items: list[WriteInput | InvalidArgument]) -> list[WriteOutcome]:
        """Write the items, waiting (and so slowing the stream) while the write queue is full."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + INGEST_OVERLOAD_PATIENCE_SECONDS
        while True:
            try:
                return await self._service.write_many(items, "item", clock_offset=self.clock.offset)
            except ResourceExhausted as error:
                if loop.time() + error.retry_after_seconds > give_up:
                    raise self._stopped(error) from error
                await asyncio.sleep(error.retry_after_seconds)
            except ServiceError as error:
                raise self._stopped(error) from error

    def _stopped(self, error: ServiceError) -> ServiceError:
        """The stream's failure, saying how much of it was already committed."""
        error.args = (f"{error}; {self.accepted} items were stored before the stream stopped",)
        return error

    def totals(self) -> dict[str, Any]:
        """Totals and rejections of the finished stream, as response fields."""
        return {
            "received_count": self.received,
            "accepted_count": self.accepted,
            "rejected_count": self.rejected,
            "rejections": self.rejections,
            "duplicate_count": self.duplicates,
            "suppressed_count": self.suppressed,
        }


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _sized(
    item: ItemMessage, to_input: Callable[[ItemMessage], WriteInput]
) -> WriteInput | InvalidArgument:
    """The item's service input, or its rejection when it is over the per-item size limit."""
    size = item.ByteSize()
    if size > MAX_ITEM_BYTES:
        return InvalidArgument(
            [FieldViolation("", f"must be at most {MAX_ITEM_BYTES} bytes serialized, got {size}")]
        )
    return to_input(item)


def _ingest_input(item: pb.IngestItem | pb.ImportItem) -> WriteInput | InvalidArgument:
    kind = item.WhichOneof("item")
    if kind == "interaction":
        return _sized(item.interaction, mapping.interaction_input)
    if kind == "feedback":
        return _sized(item.feedback, mapping.feedback_input)
    if kind == "event":
        return _sized(item.event, mapping.event_input)
    return InvalidArgument(
        [FieldViolation("item", "is required: set one of interaction, feedback or event")]
    )


def _import_input(item: pb.ImportItem) -> WriteInput | InvalidArgument:
    written = _ingest_input(item)
    if isinstance(written, InvalidArgument | HistoricInput):
        return written
    return mapping.historic_input(item, written)


def _item_result(index: int, outcome: WriteOutcome | Exception) -> batch_pb2.BatchItemResult:
    if isinstance(outcome, Exception):
        return batch_pb2.BatchItemResult(
            index=index, outcome=batch_pb2.ITEM_OUTCOME_REJECTED, error=status_for(outcome)
        )
    if isinstance(outcome, Duplicate):
        return batch_pb2.BatchItemResult(
            index=index, outcome=batch_pb2.ITEM_OUTCOME_DUPLICATE, id=outcome.record.id
        )
    if isinstance(outcome, Suppressed):
        return batch_pb2.BatchItemResult(index=index, outcome=batch_pb2.ITEM_OUTCOME_SUPPRESSED)
    return batch_pb2.BatchItemResult(
        index=index, outcome=batch_pb2.ITEM_OUTCOME_ACCEPTED, id=outcome.id
    )


BatchResponse = TypeVar(
    "BatchResponse",
    pb.RecordInteractionsResponse,
    pb.SubmitFeedbackBatchResponse,
    pb.LogEventsResponse,
)


def _batch_response(
    response_type: type[BatchResponse], results: list[batch_pb2.BatchItemResult]
) -> BatchResponse:
    counts = Counter(result.outcome for result in results)
    return response_type(
        results=results,
        accepted_count=counts[batch_pb2.ITEM_OUTCOME_ACCEPTED],
        rejected_count=counts[batch_pb2.ITEM_OUTCOME_REJECTED],
        duplicate_count=counts[batch_pb2.ITEM_OUTCOME_DUPLICATE],
        suppressed_count=counts[batch_pb2.ITEM_OUTCOME_SUPPRESSED],
    )
