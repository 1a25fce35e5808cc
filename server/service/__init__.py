"""Business rules of the feedback service: plain typed Python, no gRPC and no SQL."""

from server.service.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QuotaViolation,
    ResourceExhausted,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from server.service.feedback_service import (
    MAX_BATCH_ITEMS,
    FeedbackService,
    Stats,
    WriteInput,
    WriteOutcome,
)
from server.service.inputs import (
    EventInput,
    FeedbackInput,
    InteractionInput,
    StatsInput,
)
from server.service.write_rules import DEFAULT_LABELS, Duplicate, Rules

__all__ = [
    "DEFAULT_LABELS",
    "MAX_BATCH_ITEMS",
    "AlreadyExists",
    "Duplicate",
    "EventInput",
    "FailedPrecondition",
    "FeedbackInput",
    "FeedbackService",
    "FieldViolation",
    "InteractionInput",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "QuotaViolation",
    "ResourceExhausted",
    "Rules",
    "ServiceError",
    "Stats",
    "StatsInput",
    "Unauthenticated",
    "Unavailable",
    "WriteInput",
    "WriteOutcome",
]
