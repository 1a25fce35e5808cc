"""Turns service errors into rich google.rpc.Status replies (AIP-193)."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from server.service import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ReasonedError,
    ResourceError,
    ResourceExhausted,
    ServiceError,
    Unauthenticated,
    Unavailable,
)

ERROR_DOMAIN = "feedback.v1"
"""ErrorInfo.domain of every reason this service sends."""
STATUS_DETAILS_KEY = "grpc-status-details-bin"
MALFORMED_REQUEST = "MALFORMED_REQUEST"
"""ErrorInfo.reason of INVALID_ARGUMENT for bytes that are not a valid request message."""

MESSAGE_TIMEOUT = "MESSAGE_TIMEOUT"
"""ErrorInfo.reason of DEADLINE_EXCEEDED for a request message that did not arrive in time."""

log = logging.getLogger(__name__)

_CODES: dict[type[ServiceError], int] = {
    NotFound: code_pb2.NOT_FOUND,
    AlreadyExists: code_pb2.ALREADY_EXISTS,
    FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    PermissionDenied: code_pb2.PERMISSION_DENIED,
    OutOfRange: code_pb2.OUT_OF_RANGE,
}
"""The code of each service error whose details its base class decides."""


def status_for(error: Exception) -> status_pb2.Status:
    """The google.rpc.Status a client should see for `error` (INTERNAL for anything unexpected)."""
    match error:
        case InvalidArgument(violations=violations):
            details = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in violations
                ]
            )
            return _status(code_pb2.INVALID_ARGUMENT, str(error), details)
        case ResourceError(resource_type=kind, resource_name=name) if type(error) in _CODES:
            info = error_details_pb2.ResourceInfo(
                resource_type=kind, resource_name=name, description=str(error)
            )
            return _status(_CODES[type(error)], str(error), info)
        case ReasonedError(reason=reason, metadata=metadata) if type(error) in _CODES:
            error_info = error_details_pb2.ErrorInfo(
                reason=reason, domain=ERROR_DOMAIN, metadata=metadata
            )
            return _status(_CODES[type(error)], str(error), error_info)
        case Unauthenticated(reason=reason):
            error_info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)
            return _status(code_pb2.UNAUTHENTICATED, str(error), error_info)
        case Unavailable(retry_after_seconds=delay, reason=reason, metadata=metadata):
            extra: list[object] = [_retry_info(delay)]
            if reason:
                extra.append(
                    error_details_pb2.ErrorInfo(
                        reason=reason, domain=ERROR_DOMAIN, metadata=metadata
                    )
                )
            return _status(code_pb2.UNAVAILABLE, str(error), *extra)
        case ResourceExhausted(
            retry_after_seconds=delay, reason=reason, quota=quota, metadata=metadata
        ):
            extra = [_retry_info(delay)]
            if reason:
                extra.append(
                    error_details_pb2.ErrorInfo(
                        reason=reason, domain=ERROR_DOMAIN, metadata=metadata
                    )
                )
            if quota is not None:
                extra.append(
                    error_details_pb2.QuotaFailure(
                        violations=[
                            error_details_pb2.QuotaFailure.Violation(
                                subject=quota.subject, description=quota.description
                            )
                        ]
                    )
                )
            return _status(code_pb2.RESOURCE_EXHAUSTED, str(error), *extra)
        case ServiceError():
            return _status(code_pb2.INTERNAL, str(error))
    log.exception("unexpected error while serving a call", exc_info=error)
    return _status(code_pb2.INTERNAL, "internal error")


def malformed_request_status(
    message_type: str, reason: str, metadata: dict[str, str] | None = None
) -> status_pb2.Status:
    """INVALID_ARGUMENT, ErrorInfo MALFORMED_REQUEST: bytes that do not decode as `message_type`.

    No BadRequest: the parser cannot say which field was broken, so none is named.
    """
    info = error_details_pb2.ErrorInfo(
        reason=MALFORMED_REQUEST,
        domain=ERROR_DOMAIN,
        metadata={"message_type": message_type, **(metadata or {})},
    )
    return _status(
        code_pb2.INVALID_ARGUMENT, f"request is not a valid {message_type}: {reason}", info
    )


def message_timeout_status(seconds: float) -> status_pb2.Status:
    """DEADLINE_EXCEEDED, ErrorInfo MESSAGE_TIMEOUT: the request message did not arrive in time."""
    info = error_details_pb2.ErrorInfo(
        reason=MESSAGE_TIMEOUT, domain=ERROR_DOMAIN, metadata={"timeout_seconds": f"{seconds:g}"}
    )
    return _status(
        code_pb2.DEADLINE_EXCEEDED,
        f"the request message did not arrive within {seconds:g} s of the call's start",
        info,
    )


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: Exception) -> NoReturn:
    """End the call with the rich status of `error`."""
    await abort_with_status(context, status_for(error))


async def abort_with_status(
    context: grpc.aio.ServicerContext[Any, Any], status: status_pb2.Status
) -> NoReturn:
    """End the call with `status`, its details in the grpc-status-details-bin trailer."""
    await context.abort(
        grpc.StatusCode[code_pb2.Code.Name(status.code)],
        status.message,
        ((STATUS_DETAILS_KEY, status.SerializeToString()),),
    )
    raise AssertionError("context.abort returned")  # abort always raises


def _retry_info(delay_seconds: float) -> error_details_pb2.RetryInfo:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(delay_seconds * 1_000_000_000))
    return error_details_pb2.RetryInfo(retry_delay=duration)


def _status(code: int, message: str, *details: object) -> status_pb2.Status:
    status = status_pb2.Status(code=code, message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)  # type: ignore[arg-type]
        status.details.append(packed)
    return status
