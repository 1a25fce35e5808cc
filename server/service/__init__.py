"""Business rules of the feedback service: plain typed Python, no gRPC and no SQL."""

from server.service.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ServiceError,
    Unavailable,
)
from server.service.feedback_service import FeedbackPage, FeedbackService, Rules, Stats
from server.service.inputs import (
    EventInput,
    FeedbackInput,
    InteractionInput,
    ListFeedbackInput,
    StatsInput,
)

__all__ = [
    "AlreadyExists",
    "EventInput",
    "FailedPrecondition",
    "FeedbackInput",
    "FeedbackPage",
    "FeedbackService",
    "FieldViolation",
    "InteractionInput",
    "InvalidArgument",
    "ListFeedbackInput",
    "NotFound",
    "Rules",
    "ServiceError",
    "Stats",
    "StatsInput",
    "Unavailable",
]
