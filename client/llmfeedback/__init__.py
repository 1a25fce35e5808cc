"""Python client of the LLM feedback & analytics gRPC service.

    from llmfeedback import EventItem, FeedbackClient

    with FeedbackClient("127.0.0.1:50051", api_key="fbk_...") as client:
        client.submit_feedback("conv-1", score=5, text="spot on")
        result = client.log_events([EventItem("alice", "page_view"), EventItem("bob", "click")])
        with client.event_batcher() as events:
            events.log("alice", "page_view", details={"path": "/pricing"})

The friendly client is importable from here. The generated messages and stubs are public too, in
`llmfeedback.proto.feedback.v1` (the server and outside code that speaks the raw contract import
them there); they are produced from `protos/` and never edited.
"""

from importlib.metadata import PackageNotFoundError, version

from ._batch import BatchResult, IngestResult, ItemResult
from ._batcher import BatcherStats, EventBatcher, OnFull, QueueFullError
from ._client import DEFAULT_ADDRESS, DEFAULT_TIMEOUT, FeedbackClient
from ._errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    FeedbackError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    QuotaViolation,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnexpectedStatusError,
    error_from_rpc_error,
    error_from_status,
)
from ._hashing import compute_hash
from ._items import EventItem, FeedbackItem, HistoricItem, InteractionItem
from ._listing import (
    EventFilters,
    ExportChunk,
    FeedbackFilters,
    InteractionFilters,
    Order,
    UserDataKind,
    UserRecord,
)
from ._retry import DEFAULT_RETRY_POLICY, RETRYABLE_CODES, RetryPolicy
from ._suppression import is_suppressed
from ._watch import Watch, WatchedRecord
from .proto.feedback.v1.event_pb2 import Event
from .proto.feedback.v1.feedback_pb2 import Feedback, Thumb
from .proto.feedback.v1.feedback_service_pb2 import (
    GetOptOutResponse,
    GetStatsResponse,
    ListErasuresResponse,
    ListEventsResponse,
    ListFeedbackResponse,
    ListInteractionsResponse,
    OptOutUserResponse,
)
from .proto.feedback.v1.interaction_pb2 import Interaction
from .proto.feedback.v1.privacy_pb2 import (
    ErasedCounts,
    Erasure,
    OptOut,
    OptOutAction,
    OptOutChoice,
    SubjectKind,
)
from .proto.feedback.v1.stats_pb2 import EventStats, FeedbackStats, InteractionStats

try:
    __version__ = version("llmfeedback")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_RETRY_POLICY",
    "DEFAULT_TIMEOUT",
    "RETRYABLE_CODES",
    "AlreadyExistsError",
    "BatchResult",
    "BatcherStats",
    "DeadlineExceededError",
    "ErasedCounts",
    "Erasure",
    "Event",
    "EventBatcher",
    "EventFilters",
    "EventItem",
    "EventStats",
    "ExportChunk",
    "FailedPreconditionError",
    "Feedback",
    "FeedbackClient",
    "FeedbackError",
    "FeedbackFilters",
    "FeedbackItem",
    "FeedbackStats",
    "FieldViolation",
    "GetOptOutResponse",
    "GetStatsResponse",
    "HistoricItem",
    "IngestResult",
    "Interaction",
    "InteractionFilters",
    "InteractionItem",
    "InteractionStats",
    "InternalError",
    "InvalidArgumentError",
    "ItemResult",
    "ListErasuresResponse",
    "ListEventsResponse",
    "ListFeedbackResponse",
    "ListInteractionsResponse",
    "NotFoundError",
    "OnFull",
    "OptOut",
    "OptOutAction",
    "OptOutChoice",
    "OptOutUserResponse",
    "Order",
    "OutOfRangeError",
    "PermissionDeniedError",
    "QueueFullError",
    "QuotaViolation",
    "ResourceExhaustedError",
    "RetryPolicy",
    "SubjectKind",
    "Thumb",
    "UnauthenticatedError",
    "UnavailableError",
    "UnexpectedStatusError",
    "UserDataKind",
    "UserRecord",
    "Watch",
    "WatchedRecord",
    "__version__",
    "compute_hash",
    "error_from_rpc_error",
    "error_from_status",
    "is_suppressed",
]
