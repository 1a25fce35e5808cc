"""Failures the service reports; the servicer turns each into one precise gRPC status."""

from __future__ import annotations

from dataclasses import dataclass


class ServiceError(Exception):
    """Base of every failure a caller caused or may retry; anything else is a bug."""


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One broken rule of one request field (the field path uses the proto field names)."""

    field: str
    description: str


class InvalidArgument(ServiceError):
    """The request breaks field rules; lists every violation, not just the first."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(f"invalid request: {summary}")


class ResourceError(ServiceError):
    """A failure about one named resource; the status names it (NotFound, AlreadyExists)."""

    def __init__(self, resource_type: str, resource_name: str, description: str) -> None:
        self.resource_type = resource_type
        self.resource_name = resource_name
        super().__init__(description)


class NotFound(ResourceError):
    """A named resource the request depends on does not exist."""


class AlreadyExists(ResourceError):
    """The request would create a resource whose unique name is taken."""


class ReasonedError(ServiceError):
    """A refusal whose machine-readable `reason` and `metadata` say why (FailedPrecondition,
    PermissionDenied)."""

    def __init__(self, reason: str, description: str, metadata: dict[str, str]) -> None:
        self.reason = reason
        self.metadata = metadata
        super().__init__(description)


class FailedPrecondition(ReasonedError):
    """The request is well formed but contradicts stored state; `reason` is machine-readable."""


class OutOfRange(ReasonedError):
    """The request names a point past what is kept (a watch position older than the watch
    history); `reason` and `metadata` say where the kept range begins."""


@dataclass(frozen=True, slots=True)
class QuotaViolation:
    """One limit a call went over: whose limit (`subject`) and which one, in words."""

    subject: str
    description: str


class ResourceExhausted(ServiceError):
    """The server is overloaded or a limit is reached; nothing was done, and the call should wait
    `retry_after_seconds` before retrying. `reason` names the limit for machines; `quota` says whose
    limit it was when the limit belongs to one caller."""

    def __init__(
        self,
        description: str,
        retry_after_seconds: float,
        *,
        reason: str = "",
        quota: QuotaViolation | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.retry_after_seconds = retry_after_seconds
        self.reason = reason
        self.quota = quota
        self.metadata = metadata or {}
        """ErrorInfo metadata beside the reason (a watch's position to resume from)."""
        super().__init__(description)


class Unavailable(ServiceError):
    """The database cannot serve now; nothing was written and the call may be retried."""

    def __init__(
        self,
        description: str,
        retry_after_seconds: float = 1.0,
        *,
        reason: str = "",
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.retry_after_seconds = retry_after_seconds
        self.reason = reason
        """An ErrorInfo reason, when the client can act on it (a stopping server's watch)."""
        self.metadata = metadata or {}
        super().__init__(description)


class Unauthenticated(ServiceError):
    """The call carries no valid credentials; `reason` says what was wrong, for machines."""

    def __init__(self, reason: str, description: str) -> None:
        self.reason = reason
        super().__init__(description)


class PermissionDenied(ReasonedError):
    """The caller is known but may not do this; `reason` and `metadata` say why, for machines."""
