"""Business rules of the feedback service: plain typed Python, no gRPC and no SQL."""

from server.service.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QuotaViolation,
    ReasonedError,
    ResourceError,
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
    HistoricInput,
    InteractionInput,
    StatsInput,
)
from server.service.list_inputs import (
    EventSelection,
    ExportRequest,
    FeedbackSelection,
    InteractionSelection,
    PageRequest,
)
from server.service.write_rules import DEFAULT_LABELS, Duplicate, Rules, Suppressed

__all__ = [
    "DEFAULT_LABELS",
    "MAX_BATCH_ITEMS",
    "AlreadyExists",
    "Duplicate",
    "EventInput",
    "EventSelection",
    "ExportRequest",
    "FailedPrecondition",
    "FeedbackInput",
    "FeedbackSelection",
    "FeedbackService",
    "FieldViolation",
    "HistoricInput",
    "InteractionInput",
    "InteractionSelection",
    "InvalidArgument",
    "NotFound",
    "PageRequest",
    "PermissionDenied",
    "QuotaViolation",
    "ReasonedError",
    "ResourceError",
    "ResourceExhausted",
    "Rules",
    "ServiceError",
    "Stats",
    "StatsInput",
    "Suppressed",
    "Unauthenticated",
    "Unavailable",
    "WriteInput",
    "WriteOutcome",
]
