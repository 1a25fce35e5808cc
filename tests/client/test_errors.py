"""Failed calls raise the FeedbackError subclass of their status, with rich details unpacked."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2
from google.protobuf.any_pb2 import Any as AnyMessage
from google.rpc import error_details_pb2

import llmfeedback
from llmfeedback import (
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    FeedbackClient,
    FeedbackError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    RetryPolicy,
    UnauthenticatedError,
    UnavailableError,
    UnexpectedStatusError,
)

from .fake_service import Abort, Stall, unused_address

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .fake_service import RecordingServicer

NO_RETRY = RetryPolicy(max_attempts=1)


@pytest.fixture
def single_attempt_client(address: str) -> Iterator[FeedbackClient]:
    with FeedbackClient(address, retry=NO_RETRY) as feedback_client:
        yield feedback_client


def retry_info(seconds: int, nanos: int = 0) -> error_details_pb2.RetryInfo:
    return error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos)
    )


def failure_of(client: FeedbackClient, servicer: RecordingServicer, abort: Abort) -> FeedbackError:
    servicer.plan("GetStats", abort)
    with pytest.raises(FeedbackError) as raised:
        client.get_stats()
    return raised.value


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.NOT_FOUND, NotFoundError),
        (grpc.StatusCode.ALREADY_EXISTS, AlreadyExistsError),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPreconditionError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
        (grpc.StatusCode.UNAVAILABLE, UnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
        (grpc.StatusCode.UNAUTHENTICATED, UnauthenticatedError),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError),
        (grpc.StatusCode.INTERNAL, InternalError),
        (grpc.StatusCode.UNIMPLEMENTED, UnexpectedStatusError),
        (grpc.StatusCode.ABORTED, UnexpectedStatusError),
        (grpc.StatusCode.UNKNOWN, UnexpectedStatusError),
    ],
)
def test_each_status_code_maps_to_its_error_class(
    single_attempt_client: FeedbackClient,
    servicer: RecordingServicer,
    code: grpc.StatusCode,
    error_type: type[FeedbackError],
) -> None:
    error = failure_of(single_attempt_client, servicer, Abort(code, "it went wrong"))

    assert type(error) is error_type
    assert error.code is code
    assert error.message == "it went wrong"
    assert error.retry_delay is None
    assert str(error) == f"{code.name}: it went wrong"
    # The original grpc.RpcError stays reachable for debugging.
    assert isinstance(error.__cause__, grpc.RpcError)


def test_invalid_argument_lists_every_field_violation(
    single_attempt_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="score", description="must be from 1 to 5"
            ),
            error_details_pb2.BadRequest.FieldViolation(
                field="conversation_id", description="must not be empty"
            ),
        ]
    )
    abort = Abort(grpc.StatusCode.INVALID_ARGUMENT, "2 invalid fields", details=[bad_request])

    error = failure_of(single_attempt_client, servicer, abort)

    assert isinstance(error, InvalidArgumentError)
    assert error.field_violations == [
        FieldViolation(field="score", description="must be from 1 to 5"),
        FieldViolation(field="conversation_id", description="must not be empty"),
    ]
    assert error.details == [bad_request]
    assert error.detail(error_details_pb2.BadRequest) == bad_request


def test_invalid_argument_without_details_has_no_violations(
    single_attempt_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    error = failure_of(
        single_attempt_client, servicer, Abort(grpc.StatusCode.INVALID_ARGUMENT, "bad")
    )

    assert isinstance(error, InvalidArgumentError)
    assert error.field_violations == []
    assert error.details == []


def test_not_found_names_the_missing_resource(
    single_attempt_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    resource = error_details_pb2.ResourceInfo(
        resource_type="feedback.v1.Interaction", resource_name="msg-404"
    )
    error = failure_of(
        single_attempt_client,
        servicer,
        Abort(grpc.StatusCode.NOT_FOUND, "message msg-404 was never recorded", [resource]),
    )

    assert isinstance(error, NotFoundError)
    assert error.resource_type == "feedback.v1.Interaction"
    assert error.resource_name == "msg-404"


def test_not_found_without_resource_info(
    single_attempt_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    error = failure_of(single_attempt_client, servicer, Abort(grpc.StatusCode.NOT_FOUND, "gone"))

    assert isinstance(error, NotFoundError)
    assert error.resource_type is None
    assert error.resource_name is None


@pytest.mark.parametrize("reason", ["CONVERSATION_MISMATCH", "USER_MISMATCH"])
def test_failed_precondition_carries_the_error_info(
    single_attempt_client: FeedbackClient, servicer: RecordingServicer, reason: str
) -> None:
    info = error_details_pb2.ErrorInfo(
        reason=reason,
        domain="feedback.v1",
        metadata={"message_id": "msg-1", "recorded_conversation_id": "conv-2"},
    )
    error = failure_of(
        single_attempt_client,
        servicer,
        Abort(grpc.StatusCode.FAILED_PRECONDITION, "mismatch", [info]),
    )

    assert isinstance(error, FailedPreconditionError)
    assert error.reason == reason
    assert error.domain == "feedback.v1"
    assert error.metadata == {"message_id": "msg-1", "recorded_conversation_id": "conv-2"}


def test_failed_precondition_without_error_info(
    single_attempt_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    error = failure_of(
        single_attempt_client, servicer, Abort(grpc.StatusCode.FAILED_PRECONDITION, "no")
    )

    assert isinstance(error, FailedPreconditionError)
    assert (error.reason, error.domain, error.metadata) == (None, None, {})


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
        (grpc.StatusCode.UNAVAILABLE, UnavailableError),
    ],
)
def test_retry_info_becomes_retry_delay(
    single_attempt_client: FeedbackClient,
    servicer: RecordingServicer,
    code: grpc.StatusCode,
    error_type: type[FeedbackError],
) -> None:
    error = failure_of(
        single_attempt_client, servicer, Abort(code, "slow down", [retry_info(1, 500_000_000)])
    )

    assert isinstance(error, error_type)
    assert error.retry_delay == pytest.approx(1.5)


def test_unknown_detail_types_are_kept_packed(
    single_attempt_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    custom = struct_pb2.Struct(fields={"hint": struct_pb2.Value(string_value="x")})
    error = failure_of(
        single_attempt_client, servicer, Abort(grpc.StatusCode.INTERNAL, "odd", [custom])
    )

    assert len(error.details) == 1
    packed = error.details[0]
    assert isinstance(packed, AnyMessage)
    unpacked = struct_pb2.Struct()
    assert packed.Unpack(unpacked)
    assert unpacked == custom


def test_details_of_a_status_for_another_code_are_ignored(
    single_attempt_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    # As when a proxy replaces the status but forwards the original trailer.
    abort = Abort(
        grpc.StatusCode.INTERNAL,
        "proxy failure",
        [retry_info(3)],
        status_code=grpc.StatusCode.UNAVAILABLE,
    )

    error = failure_of(single_attempt_client, servicer, abort)

    assert isinstance(error, InternalError)
    assert error.details == []
    assert error.retry_delay is None


def test_client_side_deadline_raises_deadline_exceeded(
    single_attempt_client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("GetStats", Stall(1.0))

    with pytest.raises(DeadlineExceededError) as raised:
        single_attempt_client.get_stats(timeout=0.2)

    assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED


def test_unreachable_server_raises_unavailable() -> None:
    with (
        FeedbackClient(unused_address(), retry=NO_RETRY) as client,
        pytest.raises(UnavailableError),
    ):
        client.get_stats(timeout=2)


def test_error_from_rpc_error_is_public_for_callers_using_raw_stubs() -> None:
    plain = grpc.RpcError("not a finished call")

    error = llmfeedback.error_from_rpc_error(plain)

    assert isinstance(error, UnexpectedStatusError)
    assert error.code is grpc.StatusCode.UNKNOWN
