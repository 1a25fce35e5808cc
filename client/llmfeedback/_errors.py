"""Exceptions raised by the client, one class per gRPC status the service documents.

Every failed call raises a `FeedbackError` subclass carrying the status code, the server's message
and the unpacked `google.rpc` error details, so callers catch what they can handle
(`except NotFoundError:`) and never need to inspect a raw `grpc.RpcError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

if TYPE_CHECKING:
    from google.protobuf import any_pb2

    from ._batch import BatchResult

__all__ = [
    "AlreadyExistsError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FeedbackError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaViolation",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnexpectedStatusError",
    "error_from_rpc_error",
    "error_from_status",
]

# The trailer in which gRPC servers send the serialized google.rpc.Status. Parsed here rather than
# with grpcio-status so the client needs no dependency beyond grpcio and the protobuf packages.
STATUS_DETAILS_KEY = "grpc-status-details-bin"

# Detail types defined by google/rpc/error_details.proto; any other packed type is kept as the Any.
_KNOWN_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.BadRequest,
    error_details_pb2.DebugInfo,
    error_details_pb2.ErrorInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.QuotaFailure,
    error_details_pb2.RequestInfo,
    error_details_pb2.ResourceInfo,
    error_details_pb2.RetryInfo,
)

_DetailT = TypeVar("_DetailT", bound=Message)


@dataclass(frozen=True)
class FieldViolation:
    """One request field the server rejected, taken from a google.rpc.BadRequest."""

    field: str
    """Path of the offending field, for example "score" or "metadata"."""
    description: str
    """Why the value was rejected, in words meant for a developer."""


@dataclass(frozen=True)
class QuotaViolation:
    """One limit a call ran into, taken from a google.rpc.QuotaFailure."""

    subject: str
    """What the limit applies to, for example "api_key:fbk_ingest_1a2b" or "write_queue"."""
    description: str
    """Which limit was reached and how, in words meant for a developer."""


class FeedbackError(Exception):
    """Base of every error a FeedbackClient call raises for a failed RPC.

    Catch this to handle all server and transport failures at once; catch a subclass to handle one
    status code.

    A write that fails with DEADLINE_EXCEEDED, UNAVAILABLE or CANCELLED may have been stored: the
    answer, not the write, may be what was lost. Retry it with the same request id
    (`request_id=error.request_id`) and it is stored at most once; the retry returns the record
    stored the first time.
    """

    default_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: list[Message] | None = None,
        retry_delay: float | None = None,
    ) -> None:
        self.code: grpc.StatusCode = code if code is not None else self.default_code
        """The gRPC status code of the failed call."""
        self.message: str = message
        """The server's (or the transport's) human-readable explanation."""
        self.details: list[Message] = details if details is not None else []
        """The unpacked google.rpc detail messages (BadRequest, ErrorInfo, RetryInfo, ...)."""
        self.retry_delay: float | None = retry_delay
        """Seconds the server asked the client to wait before retrying (RetryInfo), if it did."""
        self.batch_result: BatchResult | None = None
        """Set when a batch method failed part-way: the final outcome of every item settled before
        the failure, indexed like the input. Items without a result were not stored (or, when the
        answer to a call was lost, may have been); send them again."""
        self.sent_count: int | None = None
        """Set when `ingest` failed: how many items were sent on the stream before it broke."""
        self.request_id: str | None = None
        """The idempotency key of the write this error is about: set when a single write
        (`record_interaction`, `submit_feedback`, `log_event`) failed, and on the error of each
        rejected batch item; None for reads. Pass it back as `request_id=` to retry the write
        safely: the server stores it at most once."""
        self.request_ids: tuple[str, ...] | None = None
        """Set when a batch method failed: the request id of every input item, indexed like the
        input, so the items without a result in `batch_result` can be sent again under the same
        keys. (`ingest` does not keep them: its items carry their own `request_id`.)"""
        super().__init__(f"{self.code.name}: {message}")

    def detail(self, detail_type: type[_DetailT]) -> _DetailT | None:
        """Return the first detail of the given google.rpc type, or None if the server sent none."""
        for item in self.details:
            if isinstance(item, detail_type):
                return item
        return None

    @property
    def reason(self) -> str | None:
        """Machine-readable cause from ErrorInfo, such as USER_MISMATCH or MISSING_SCOPE."""
        info = self.detail(error_details_pb2.ErrorInfo)
        return None if info is None else str(info.reason)

    @property
    def domain(self) -> str | None:
        """Service that defined `reason` (from ErrorInfo), "feedback.v1" for this service."""
        info = self.detail(error_details_pb2.ErrorInfo)
        return None if info is None else str(info.domain)

    @property
    def metadata(self) -> dict[str, str]:
        """Structured context from ErrorInfo, such as the conflicting identifiers."""
        info = self.detail(error_details_pb2.ErrorInfo)
        if info is None:
            return {}
        return {str(key): str(value) for key, value in info.metadata.items()}


class InvalidArgumentError(FeedbackError):
    """The request broke the contract's field rules; `field_violations` names every bad field."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT

    @property
    def field_violations(self) -> list[FieldViolation]:
        """Every field the server rejected, in the order it reported them."""
        return [
            FieldViolation(field=str(violation.field), description=str(violation.description))
            for detail in self.details
            if isinstance(detail, error_details_pb2.BadRequest)
            for violation in detail.field_violations
        ]


class NotFoundError(FeedbackError):
    """A conversation or message the request refers to was never recorded."""

    default_code = grpc.StatusCode.NOT_FOUND

    @property
    def resource_type(self) -> str | None:
        """Kind of the missing resource (from ResourceInfo), for example "message"."""
        info = self.detail(error_details_pb2.ResourceInfo)
        return None if info is None else str(info.resource_type)

    @property
    def resource_name(self) -> str | None:
        """Name of the missing resource (from ResourceInfo), for example the message_id."""
        info = self.detail(error_details_pb2.ResourceInfo)
        return None if info is None else str(info.resource_name)


class AlreadyExistsError(FeedbackError):
    """The write would duplicate a unique record, for example a message_id recorded twice.

    Also raised when a request_id is sent again with other content (ResourceInfo resource_type
    "request"): an idempotency key names one write, never two.
    """

    default_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPreconditionError(FeedbackError):
    """The request is well-formed but contradicts stored data.

    `reason` (from ErrorInfo) says how: CONVERSATION_MISMATCH, USER_MISMATCH or MODEL_MISMATCH,
    with the conflicting identifiers in `metadata`.
    """

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhaustedError(FeedbackError):
    """The server is rate limiting or out of capacity; retry after `retry_delay` when set.

    Nothing of the call was stored. It is retried only when the server sent a RetryInfo delay;
    `quota_violations` names the limits that were reached.
    """

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED

    @property
    def quota_violations(self) -> list[QuotaViolation]:
        """Every limit the server reported reached (from QuotaFailure), in its order."""
        return [
            QuotaViolation(subject=str(violation.subject), description=str(violation.description))
            for detail in self.details
            if isinstance(detail, error_details_pb2.QuotaFailure)
            for violation in detail.violations
        ]


class UnavailableError(FeedbackError):
    """The service or its database cannot be reached now; the same call may succeed later.

    A write that fails with it may have been stored (the connection may have dropped after the
    server committed): retry with `request_id=error.request_id` and it is stored at most once.
    """

    default_code = grpc.StatusCode.UNAVAILABLE


class OutOfRangeError(FeedbackError):
    """The request names a point the server no longer keeps: a watch start older than its
    watch history (reason POSITION_COMPACTED). `metadata["oldest_position"]` is the oldest
    position a watch may start from; to miss nothing, list or export again instead."""

    default_code = grpc.StatusCode.OUT_OF_RANGE


class DeadlineExceededError(FeedbackError):
    """The call did not finish within its timeout (including the time spent on retries).

    A write that fails with it may have been stored anyway: the server commits a write it has
    queued even after the caller stopped waiting. Retry it with `request_id=error.request_id`
    and it is stored at most once; the retry returns the record stored the first time.
    """

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class UnauthenticatedError(FeedbackError):
    """The call carried no API key, or one the service does not accept (unknown, revoked, mistyped).

    Never retried: the same key would be refused again. Nothing of the call was stored.
    """

    default_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(FeedbackError):
    """The API key is valid but lacks the scope this call needs (`missing_scope`).

    Never retried: the same key would be refused again. Nothing of the call was stored.
    """

    default_code = grpc.StatusCode.PERMISSION_DENIED

    @property
    def missing_scope(self) -> str | None:
        """The scope the call needs and the key lacks, such as "read" (ErrorInfo required_scope)."""
        return self.metadata.get("required_scope")


class InternalError(FeedbackError):
    """The server failed in a way it did not anticipate; report it to the service owners."""

    default_code = grpc.StatusCode.INTERNAL


class UnexpectedStatusError(FeedbackError):
    """A status the service does not document (CANCELLED, UNKNOWN, UNIMPLEMENTED, ...)."""


_ERROR_BY_CODE: dict[grpc.StatusCode, type[FeedbackError]] = {
    error_type.default_code: error_type
    for error_type in (
        InvalidArgumentError,
        NotFoundError,
        AlreadyExistsError,
        FailedPreconditionError,
        ResourceExhaustedError,
        UnavailableError,
        DeadlineExceededError,
        OutOfRangeError,
        UnauthenticatedError,
        PermissionDeniedError,
        InternalError,
    )
}


def error_from_rpc_error(error: grpc.RpcError) -> FeedbackError:
    """Translate a failed call into the matching FeedbackError, with its rich details unpacked."""
    if not isinstance(error, grpc.Call):
        # Only errors raised for a finished call carry a status; anything else is reported as is.
        return UnexpectedStatusError(str(error) or type(error).__name__)
    code = error.code()
    status = _rich_status(error.trailing_metadata() or (), code)
    message = error.details() or (str(status.message) if status is not None else "") or code.name
    details = [] if status is None else [_unpack(item) for item in status.details]
    return _error_of(code, message, details)


def error_from_status(status: status_pb2.Status) -> FeedbackError:
    """Translate a google.rpc.Status, such as a rejected batch item's, into its FeedbackError."""
    code = _CODE_BY_NUMBER.get(int(status.code), grpc.StatusCode.UNKNOWN)
    if code is grpc.StatusCode.OK:
        # A rejection must carry a failure code; OK here is a server bug, not a success.
        code = grpc.StatusCode.UNKNOWN
    details = [_unpack(item) for item in status.details]
    return _error_of(code, str(status.message) or code.name, details)


_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def _error_of(code: grpc.StatusCode, message: str, details: list[Message]) -> FeedbackError:
    """Build the FeedbackError subclass documented for `code`."""
    error_type = _ERROR_BY_CODE.get(code, UnexpectedStatusError)
    return error_type(message, code=code, details=details, retry_delay=_retry_delay(details))


def _rich_status(
    trailing_metadata: tuple[tuple[str, str | bytes], ...], code: grpc.StatusCode
) -> status_pb2.Status | None:
    """Decode the google.rpc.Status trailer, or None when absent, corrupt or for another code."""
    for key, value in trailing_metadata:
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except DecodeError:
            return None
        # A proxy that rewrote the status would leave details describing a different failure.
        return status if status.code == code.value[0] else None
    return None


def _unpack(packed: any_pb2.Any) -> Message:
    """Unpack one Any detail into its google.rpc type, keeping unknown types packed."""
    type_name = packed.TypeName()
    for detail_type in _KNOWN_DETAIL_TYPES:
        if detail_type.DESCRIPTOR.full_name == type_name:
            detail = detail_type()
            packed.Unpack(detail)
            return detail
    return packed


def _retry_delay(details: list[Message]) -> float | None:
    """Seconds from the first RetryInfo detail, or None when the server sent none."""
    for detail in details:
        if isinstance(detail, error_details_pb2.RetryInfo):
            delay = detail.retry_delay
            return max(0.0, int(delay.seconds) + int(delay.nanos) / 1e9)
    return None
