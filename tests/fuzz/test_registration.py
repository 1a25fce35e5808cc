"""Handlers come from the service descriptor and the servicer, so new methods need no new code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from server.access import Access
from server.request_parsing import SERVICE, implements, method_handlers
from server.service import FeedbackService
from server.service.api_keys import ApiKeyService
from server.service.erasure import ErasureService
from server.service.opt_out import OptOutService
from server.service.watch import WatchService
from server.servicer import FeedbackServicer


class _WithHistory(FeedbackServicer):
    """What the servicer becomes once ListFeedbackHistory is implemented."""

    async def ListFeedbackHistory(
        self, request: pb.ListFeedbackHistoryRequest, context: Any
    ) -> pb.ListFeedbackHistoryResponse:
        return pb.ListFeedbackHistoryResponse()


def _servicer(
    make: Callable[..., FeedbackServicer],
) -> FeedbackServicer:
    # Building handlers never calls the services.
    return make(
        cast(FeedbackService, None),
        cast(ApiKeyService, None),
        cast(Access, None),
        cast(ErasureService, None),
        cast(OptOutService, None),
        cast(WatchService, None),
    )


def test_every_method_the_servicer_overrides_is_registered_and_no_other() -> None:
    handlers = method_handlers(_servicer(FeedbackServicer))

    expected = {m.name for m in SERVICE.methods if implements(FeedbackServicer, m.name)}
    assert set(handlers) == expected
    assert "Ingest" in handlers
    assert all(handler.request_deserializer is None for handler in handlers.values())


def test_a_method_implemented_later_is_picked_up() -> None:
    handlers = method_handlers(_servicer(_WithHistory))

    assert "ListFeedbackHistory" in handlers
    assert set(handlers) == {m.name for m in SERVICE.methods}


def test_handler_kinds_follow_the_descriptor() -> None:
    handlers = method_handlers(_servicer(_WithHistory))

    for method in SERVICE.methods:
        handler = handlers[method.name]
        assert handler.request_streaming == method.client_streaming
        assert handler.response_streaming == method.server_streaming
