"""Batch results, the splitting of large inputs into calls the service takes, and batch retries.

One retry loop serves the batch methods and the event batcher: a whole call that fails with a
transient status is sent again, and of a call that succeeded only the items rejected with a
transient status are, all within one RetryPolicy's attempts and one deadline. Every other rejection
is final and reported with the item. An item the server suppressed (its user opted out) is settled
too: answered, not stored, and never sent again.

Re-sending is safe because every item carries its own request_id, set once when the item was made:
an item the server stored although its answer was lost comes back as a duplicate, which counts as
stored. For the same reason an attempt cut short by its own `attempt_timeout` (DEADLINE_EXCEEDED)
is retried while the delivery's deadline leaves time; when the attempt had all the time that was
left, as in the batch methods, there is none to retry in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import grpc

from ._errors import FeedbackError, UnexpectedStatusError, error_from_rpc_error, error_from_status
from ._items import encoded_size
from ._retry import deadline_of, retry_wait, time_left
from .proto.feedback.v1 import batch_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from google.protobuf.message import Message

    from ._retry import RetryPolicy

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_ITEMS",
    "BatchResult",
    "IngestResult",
    "ItemResult",
    "deliver",
    "split_batches",
]

MAX_BATCH_ITEMS = 1000
"""Most items the service takes in one batch call."""

MAX_BATCH_BYTES = 3584 * 1024
"""Most item bytes sent in one batch call: 3.5 MiB, safely under the 4 MiB message limit."""

_RequestT = TypeVar("_RequestT", bound="Message")

# An attempt that ran out of its own time may have been stored or not; its request ids make
# sending it again harmless either way.
_ATTEMPT_TIMEOUT_CODES: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(frozen=True)
class ItemResult:
    """What became of one item: stored under `id`, rejected with `error`, or suppressed.

    A duplicate is a success: the item is stored exactly once, by an earlier attempt of this call
    (whose answer was lost) or by an earlier request with the same request_id (or event_id).

    A suppressed item is about a user who opted out (`FeedbackClient.opt_out_user`): the server
    answered for it and stored nothing, as the user asked. It is neither accepted nor rejected
    (`accepted` False, `error` None, `id` 0), and it is never sent again: sending it again would
    be suppressed again.
    """

    index: int
    """Position of the item in the input given to the method (not in one of the calls it made)."""
    accepted: bool
    """Whether the item is stored, duplicates included."""
    id: int = 0
    """Identifier of the stored record (for a duplicate, the one stored before); 0 when rejected
    or suppressed."""
    error: FeedbackError | None = None
    """Why the item was rejected, as the single-item method would have raised it; None when
    accepted or suppressed. Transient failures (UNAVAILABLE, RESOURCE_EXHAUSTED) are only reported
    here once the retry policy gave up on them."""
    duplicate: bool = False
    """Whether the server had already stored the item and stored nothing new (it is accepted)."""
    request_id: str | None = None
    """The item's idempotency key (also on `error.request_id`): send the item again under it and
    it is stored at most once. None in an IngestResult, whose items carry their own."""
    suppressed: bool = False
    """Whether the server stored nothing because the item's user opted out; not an error."""


@dataclass(frozen=True)
class BatchResult:
    """The outcome of a batch method: one ItemResult per input item, in input order."""

    results: tuple[ItemResult, ...]
    """One result per item, in the order of the input."""
    accepted_count: int = field(init=False)
    """How many items are stored, duplicates included."""
    rejected_count: int = field(init=False)
    """How many items were rejected (each with its error); suppressed items are not."""
    duplicate_count: int = field(init=False)
    """How many of the accepted items were already stored, so nothing new was stored for them."""
    suppressed_count: int = field(init=False)
    """How many items were suppressed: about users who opted out, answered but not stored."""

    def __post_init__(self) -> None:
        accepted = sum(1 for result in self.results if result.accepted)
        suppressed = sum(1 for result in self.results if result.suppressed)
        object.__setattr__(self, "accepted_count", accepted)
        object.__setattr__(self, "suppressed_count", suppressed)
        object.__setattr__(self, "rejected_count", len(self.results) - accepted - suppressed)
        duplicates = sum(1 for result in self.results if result.duplicate)
        object.__setattr__(self, "duplicate_count", duplicates)

    @property
    def rejected(self) -> tuple[ItemResult, ...]:
        """The results of the rejected items, in input order (not the suppressed ones)."""
        return tuple(
            result for result in self.results if not result.accepted and not result.suppressed
        )

    @property
    def suppressed(self) -> tuple[ItemResult, ...]:
        """The results of the suppressed items, in input order."""
        return tuple(result for result in self.results if result.suppressed)

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[ItemResult]:
        return iter(self.results)


@dataclass(frozen=True)
class IngestResult:
    """The outcome of `ingest` or `import_history`: totals, and the first rejected items with
    their errors. received_count = accepted_count + rejected_count + suppressed_count."""

    received_count: int
    """How many items the server received."""
    accepted_count: int
    """How many items are stored, duplicates included (as in BatchResult; the server's own
    accepted_count leaves them out)."""
    rejected_count: int
    """How many items were rejected; suppressed items are not."""
    rejections: tuple[ItemResult, ...]
    """The rejected items in stream order, at most the first 1000 (the server lists no more)."""
    duplicate_count: int = 0
    """How many of the accepted items were already stored by an earlier request (same request_id
    or event_id), so nothing new was stored for them."""
    suppressed_count: int = 0
    """How many items were suppressed: about users who opted out, so the server stored nothing
    for them (not an error, and not listed in `rejections`)."""

    @property
    def rejections_truncated(self) -> bool:
        """Whether more items were rejected than `rejections` lists."""
        return len(self.rejections) < self.rejected_count


def split_batches(
    requests: Sequence[_RequestT],
    *,
    max_items: int = MAX_BATCH_ITEMS,
    max_bytes: int = MAX_BATCH_BYTES,
) -> Iterator[tuple[int, Sequence[_RequestT]]]:
    """Cut requests into runs the service takes in one call; yield each with its first index."""
    start = 0
    size = 0
    for index, request in enumerate(requests):
        item_size = encoded_size(request)
        if index > start and (index - start >= max_items or size + item_size > max_bytes):
            yield start, requests[start:index]
            start, size = index, 0
        size += item_size
    if start < len(requests):
        yield start, requests[start:]


def deliver(
    requests: Sequence[_RequestT],
    send: Callable[[list[_RequestT], float | None], Sequence[batch_pb2.BatchItemResult]],
    *,
    policy: RetryPolicy,
    first_index: int = 0,
    timeout: float | None = None,
    attempt_timeout: float | None = None,
    wait: Callable[[float], bool] | None = None,
) -> tuple[list[ItemResult], FeedbackError | None]:
    """Send one batch with `send(requests, timeout)`, retrying transient failures under `policy`.

    `timeout` bounds the whole delivery, waits included; `attempt_timeout` bounds each call, and
    a call that exceeds it is retried like an UNAVAILABLE one. `wait(seconds)` pauses between
    attempts and returns False to give up early (default: the policy's sleep). Returns the results
    of the settled items, indexed from `first_index`, and the error of a whole call that failed for
    good, in which case the other items were not stored (or, when the answer was lost, were stored
    without it being known).
    """
    pause = wait if wait is not None else _sleeper(policy)
    deadline = deadline_of(policy, timeout)
    settled: dict[int, ItemResult] = {}
    pending = list(range(len(requests)))
    retry_number = 0
    while True:
        remaining = time_left(policy, deadline)
        # Whether this attempt gets less time than the delivery has left, so a timeout still
        # leaves time to try again.
        cut_short = attempt_timeout is not None and (
            remaining is None or attempt_timeout < remaining
        )
        if attempt_timeout is not None:
            remaining = attempt_timeout if remaining is None else min(remaining, attempt_timeout)
        call_error: FeedbackError | None = None
        transient: dict[int, FeedbackError] = {}
        try:
            results = send([requests[index] for index in pending], remaining)
        except grpc.RpcError as rpc_error:
            call_error = error_from_rpc_error(rpc_error)
            call_error.__cause__ = rpc_error
        except FeedbackError as failure:
            call_error = failure
        else:
            transient = _settle(requests, pending, results, settled, policy, first_index)
            if not transient:
                return _in_order(settled), None
        # The longest RetryInfo delay among the failed items sets the wait for all of them.
        error = call_error or max(transient.values(), key=lambda item: item.retry_delay or 0.0)
        retry_number += 1
        retryable = policy.should_retry(error) or (
            cut_short and call_error is not None and call_error.code in _ATTEMPT_TIMEOUT_CODES
        )
        backoff = retry_wait(policy, retry_number, error, deadline, retryable=retryable)
        if backoff is not None and pause(backoff):
            if call_error is None:
                pending = sorted(transient)
            continue
        if call_error is not None:
            return _in_order(settled), call_error
        for index, item_error in transient.items():
            settled[index] = _rejected(index + first_index, item_error, requests[index])
        return _in_order(settled), None


def _settle(
    requests: Sequence[Message],
    pending: list[int],
    results: Sequence[batch_pb2.BatchItemResult],
    settled: dict[int, ItemResult],
    policy: RetryPolicy,
    first_index: int,
) -> dict[int, FeedbackError]:
    """Record the final results of a call into `settled`; return the transient item errors."""
    by_position = {result.index: result for result in results}
    transient: dict[int, FeedbackError] = {}
    for position, index in enumerate(pending):
        result = by_position.get(position)
        if result is not None and result.outcome == batch_pb2.ITEM_OUTCOME_SUPPRESSED:
            # Answered and deliberately not stored: final, and sending it again changes nothing.
            settled[index] = ItemResult(
                index + first_index,
                accepted=False,
                suppressed=True,
                request_id=_request_id(requests[index]),
            )
            continue
        if result is not None and result.outcome in _STORED_OUTCOMES:
            duplicate = result.outcome == batch_pb2.ITEM_OUTCOME_DUPLICATE
            settled[index] = ItemResult(
                index + first_index,
                accepted=True,
                id=result.id,
                duplicate=duplicate,
                request_id=_request_id(requests[index]),
            )
            continue
        if result is None:
            # Never treat silence as success: the item may not have been stored.
            error: FeedbackError = UnexpectedStatusError("the server sent no result for this item")
        elif not result.HasField("error"):
            error = UnexpectedStatusError("the server rejected this item without saying why")
        else:
            error = error_from_status(result.error)
        if policy.should_retry(error):
            transient[index] = error
        else:
            settled[index] = _rejected(index + first_index, error, requests[index])
    return transient


def _rejected(index: int, error: FeedbackError, request: Message) -> ItemResult:
    """The result of a rejected item, its error carrying the item's request id."""
    request_id = _request_id(request)
    error.request_id = request_id
    return ItemResult(index, accepted=False, error=error, request_id=request_id)


def _request_id(request: Message) -> str | None:
    """The idempotency key of an item request; None for a message without one."""
    value = getattr(request, "request_id", "")
    return str(value) if value else None


_STORED_OUTCOMES = frozenset({batch_pb2.ITEM_OUTCOME_ACCEPTED, batch_pb2.ITEM_OUTCOME_DUPLICATE})
"""Outcomes after which the item is stored: by this call, or already before (duplicate)."""


def _in_order(settled: dict[int, ItemResult]) -> list[ItemResult]:
    return [settled[index] for index in sorted(settled)]


def _sleeper(policy: RetryPolicy) -> Callable[[float], bool]:
    """Adapt the policy's sleep to a wait that never gives up early."""

    def sleep(seconds: float) -> bool:
        policy.sleep(seconds)
        return True

    return sleep
