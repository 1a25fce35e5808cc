"""FeedbackServicer: maps feedback.v1 requests to FeedbackService calls and results back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import TypeVar

import grpc

from llmfeedback._proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback._proto.feedback.v1 import feedback_service_pb2_grpc
from server import mapping
from server.service import FeedbackService
from server.status import abort

Request = TypeVar("Request")
Response = TypeVar("Response")
Context = grpc.aio.ServicerContext[object, object]


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


class FeedbackServicer(feedback_service_pb2_grpc.FeedbackServiceServicer):
    """The feedback.v1.FeedbackService endpoints; rules live in FeedbackService."""

    def __init__(self, service: FeedbackService) -> None:
        self._service = service

    @_unary
    async def RecordInteraction(
        self, request: pb.RecordInteractionRequest, context: Context
    ) -> pb.RecordInteractionResponse:
        record = await self._service.record_interaction(mapping.interaction_input(request))
        return pb.RecordInteractionResponse(interaction=mapping.interaction_message(record))

    @_unary
    async def SubmitFeedback(
        self, request: pb.SubmitFeedbackRequest, context: Context
    ) -> pb.SubmitFeedbackResponse:
        record = await self._service.submit_feedback(mapping.feedback_input(request))
        return pb.SubmitFeedbackResponse(feedback=mapping.feedback_message(record))

    @_unary
    async def LogEvent(self, request: pb.LogEventRequest, context: Context) -> pb.LogEventResponse:
        record = await self._service.log_event(mapping.event_input(request))
        return pb.LogEventResponse(event=mapping.event_message(record))

    @_unary
    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.GetStatsResponse:
        stats = await self._service.get_stats(mapping.stats_input(request))
        return mapping.stats_response(stats)

    @_unary
    async def ListFeedback(
        self, request: pb.ListFeedbackRequest, context: Context
    ) -> pb.ListFeedbackResponse:
        page = await self._service.list_feedback(mapping.list_feedback_input(request))
        return pb.ListFeedbackResponse(
            feedback=[mapping.feedback_message(record) for record in page.items],
            next_page_token=page.next_page_token,
        )
