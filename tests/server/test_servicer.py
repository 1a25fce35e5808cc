"""FeedbackServicer under grpc_testing: status codes and rich error details, no network."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import grpc
import grpc_testing
import pytest
from google.protobuf import message
from google.rpc import error_details_pb2, status_pb2

from llmfeedback.proto.feedback.v1 import feedback_pb2
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from server import mapping
from server.access import Access
from server.service import FeedbackService, Rules
from server.service.api_keys import ApiKeyService, KeyRing
from server.service.erasure import ErasureService
from server.service.opt_out import OptOutService
from server.service.rate_limits import RateLimiter
from server.service.subjects import Subjects
from server.service.tail import Tail
from server.service.watch import WatchLimits, WatchService
from server.servicer import FeedbackServicer
from storage import Storage

SERVICE = pb.DESCRIPTOR.services_by_name["FeedbackService"]
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class _AsyncContext:
    """The aio context API the servicer uses, over grpc_testing's synchronous context."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[Any] = ()
    ) -> NoReturn:
        # grpc_testing's own abort() drops trailing metadata, so end the call the way aio does:
        # status, details and trailers set, then the handler unwinds.
        self._context.set_trailing_metadata(tuple(trailing_metadata))
        self._context.set_code(code)
        self._context.set_details(details)
        raise grpc.aio.AbortError()


class _SyncServicer:
    """grpc_testing calls handlers synchronously; run each async method to completion."""

    def __init__(self, servicer: FeedbackServicer) -> None:
        self._servicer = servicer

    def __getattr__(self, name: str) -> Callable[[message.Message, grpc.ServicerContext], Any]:
        method = getattr(self._servicer, name)

        def call(request: message.Message, context: grpc.ServicerContext) -> Any:
            try:
                return asyncio.run(method(request, _AsyncContext(context)))
            except grpc.aio.AbortError:
                return None  # the status set by abort() ends the call

        return call


@pytest.fixture
def grpc_server(tmp_path: Path) -> Iterator[grpc_testing.Server]:
    storage = Storage.connect(f"sqlite:///{tmp_path}/feedback.sqlite3")
    storage.migrate()
    with ThreadPoolExecutor(2) as executor:
        service = FeedbackService(storage, executor, Rules(), clock=lambda: NOW)
        yield grpc_testing.server_from_dictionary(
            {SERVICE: _SyncServicer(_servicer(service, storage, executor))},
            grpc_testing.strict_real_time(),
        )
        service.close()
    storage.close()


def _servicer(
    service: FeedbackService, storage: Storage, executor: ThreadPoolExecutor
) -> FeedbackServicer:
    keys = ApiKeyService(storage, executor, KeyRing())
    erasures = ErasureService(storage, executor, Subjects())
    access = Access(None, RateLimiter({}))
    watches = WatchService(Tail(storage, executor, mapping.watched_record), limits=WatchLimits())
    return FeedbackServicer(service, keys, access, erasures, OptOutService(erasures), watches)


def _call(
    server: grpc_testing.Server, method: str, request: message.Message
) -> tuple[Any, grpc.StatusCode, str, status_pb2.Status | None]:
    rpc = server.invoke_unary_unary(SERVICE.methods_by_name[method], (), request, None)
    response, trailing_metadata, code, details = rpc.termination()
    status = None
    for key, value in trailing_metadata:
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
    return response, code, details, status


def _unpack(status: status_pb2.Status | None, detail_type: type[Any]) -> Any:
    assert status is not None, "the error carries no google.rpc.Status"
    for detail in status.details:
        if detail.Is(detail_type.DESCRIPTOR):
            unpacked = detail_type()
            detail.Unpack(unpacked)
            return unpacked
    raise AssertionError(f"no {detail_type.__name__} in {status}")


def test_feedback_links_to_the_recorded_interaction(grpc_server: grpc_testing.Server) -> None:
    _, code, _, _ = _call(
        grpc_server,
        "RecordInteraction",
        pb.RecordInteractionRequest(
            conversation_id="conv-1",
            message_id="m1",
            user_id="u1",
            input_text="question",
            output_text="answer",
            latency_ms=120.5,
            prompt_tokens=10,
            completion_tokens=5,
        ),
    )
    assert code == grpc.StatusCode.OK

    response, code, _, _ = _call(
        grpc_server, "SubmitFeedback", pb.SubmitFeedbackRequest(message_id="m1", score=5)
    )

    assert code == grpc.StatusCode.OK
    feedback = response.feedback
    assert (feedback.conversation_id, feedback.user_id, feedback.score) == ("conv-1", "u1", 5)
    assert feedback.latency_ms == 120.5
    assert feedback.tokens_used == 15
    assert len(feedback.input_hash) == 64
    assert feedback.create_time.ToDatetime(tzinfo=UTC) == NOW


def test_invalid_feedback_names_every_violating_field(grpc_server: grpc_testing.Server) -> None:
    request = pb.SubmitFeedbackRequest(
        conversation_id="bad id!", score=6, text="x" * 2001, latency_ms=-1.0, tokens_used=-2
    )

    _, code, _, status = _call(grpc_server, "SubmitFeedback", request)

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    bad_request = _unpack(status, error_details_pb2.BadRequest)
    fields = {violation.field for violation in bad_request.field_violations}
    assert fields == {"conversation_id", "score", "text", "latency_ms", "tokens_used"}


def test_unknown_conversation_is_not_found(grpc_server: grpc_testing.Server) -> None:
    _, code, details, status = _call(
        grpc_server, "SubmitFeedback", pb.SubmitFeedbackRequest(conversation_id="nope", score=3)
    )

    assert code == grpc.StatusCode.NOT_FOUND
    assert "nope" in details
    info = _unpack(status, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("conversation", "nope")


def test_mismatched_conversation_is_failed_precondition(grpc_server: grpc_testing.Server) -> None:
    _call(
        grpc_server,
        "RecordInteraction",
        pb.RecordInteractionRequest(conversation_id="a", message_id="m"),
    )

    _, code, _, status = _call(
        grpc_server,
        "SubmitFeedback",
        pb.SubmitFeedbackRequest(conversation_id="b", message_id="m", thumb=feedback_pb2.THUMB_UP),
    )

    assert code == grpc.StatusCode.FAILED_PRECONDITION
    info = _unpack(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("CONVERSATION_MISMATCH", "feedback.v1")


def test_duplicate_message_id_already_exists(grpc_server: grpc_testing.Server) -> None:
    request = pb.RecordInteractionRequest(conversation_id="c", message_id="m-dup")
    assert _call(grpc_server, "RecordInteraction", request)[1] == grpc.StatusCode.OK

    _, code, _, status = _call(grpc_server, "RecordInteraction", request)

    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert _unpack(status, error_details_pb2.ResourceInfo).resource_name == "m-dup"


def test_event_is_stored_and_counted(grpc_server: grpc_testing.Server) -> None:
    response, code, _, _ = _call(
        grpc_server, "LogEvent", pb.LogEventRequest(user_id="u1", event_type="page_view")
    )
    assert code == grpc.StatusCode.OK
    assert response.event.receive_time.ToDatetime(tzinfo=UTC) == NOW

    stats, code, _, _ = _call(grpc_server, "GetStats", pb.GetStatsRequest())

    assert code == grpc.StatusCode.OK
    assert stats.events.total_count == 1
    assert dict(stats.events.type_counts) == {"page_view": 1}


def test_stats_for_a_conversation_leave_events_unset(grpc_server: grpc_testing.Server) -> None:
    stats, code, _, _ = _call(grpc_server, "GetStats", pb.GetStatsRequest(conversation_id="c"))

    assert code == grpc.StatusCode.OK
    assert not stats.HasField("events")
    assert stats.feedback.total_count == 0
    assert not stats.feedback.HasField("avg_score")


def test_malformed_page_token_is_invalid_argument(grpc_server: grpc_testing.Server) -> None:
    _, code, _, status = _call(
        grpc_server, "ListFeedback", pb.ListFeedbackRequest(page_token="not-a-token")
    )

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in _unpack(status, error_details_pb2.BadRequest).field_violations]
    assert fields == ["page_token"]
