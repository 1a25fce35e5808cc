"""Background batching of analytics events: `log` only queues, a daemon thread sends batches.

The pattern of analytics-python and PostHog, with what they leave implicit made explicit: a
bounded queue whose overflow policy the caller chooses, acknowledgement-based `flush`, retries that
honour the server's RetryInfo, and every event that cannot be stored reported, never dropped
silently.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import grpc

from ._batch import MAX_BATCH_BYTES, MAX_BATCH_ITEMS, deliver
from ._closing import Closing
from ._errors import FeedbackError, UnexpectedStatusError
from ._items import EVENTS, EventItem, encoded_size
from .proto.feedback.v1 import feedback_service_pb2

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from ._batch import ItemResult
    from ._retry import RetryPolicy
    from .proto.feedback.v1 import batch_pb2

__all__ = ["BatcherStats", "EventBatcher", "OnFull", "QueueFullError"]

logger = logging.getLogger("llmfeedback")

OnFull = Literal["block", "raise", "drop"]
"""What `EventBatcher.log` does when the queue is full: wait, raise QueueFullError, or drop."""

_ON_FULL_CHOICES: tuple[OnFull, ...] = ("block", "raise", "drop")

# Time an unclosed batcher gets at interpreter exit when the client sets no timeout.
_EXIT_TIMEOUT = 10.0


class QueueFullError(Exception):
    """`EventBatcher.log` found the queue full: with on_full="raise", or after block_timeout."""

    def __init__(self, message: str, *, max_queue: int) -> None:
        super().__init__(message)
        self.max_queue: int = max_queue
        """The capacity of the queue that was full."""


@dataclass(frozen=True)
class BatcherStats:
    """A consistent snapshot of an EventBatcher's counters;
    enqueued = accepted + rejected + suppressed + pending."""

    enqueued: int
    """Events `log` accepted into the queue."""
    sent: int
    """Events sent to the server at least once (each counted once, however often re-sent)."""
    accepted: int
    """Events the server acknowledged as stored, duplicates included."""
    rejected: int
    """Events reported as not stored: rejected by the server, still failing after the retries, or
    cancelled by a `close` that timed out. Each went to `on_rejected`, or to the log without one."""
    dropped: int
    """Events not queued because the queue was full and on_full is "drop"; each went to on_drop."""
    pending: int
    """Events queued or in flight: neither acknowledged nor reported yet."""
    duplicates: int = 0
    """Of the accepted events, those the server had already stored (an attempt whose answer was
    lost, or an event_id logged before), so nothing new was stored for them."""
    suppressed: int = 0
    """Events the server answered for but did not store because their user opted out
    (`FeedbackClient.opt_out_user`): settled, as the user asked, so neither accepted nor
    rejected, never re-sent and never passed to `on_rejected`."""


@dataclass(frozen=True)
class _Queued:
    """One queued event with what the sender needs to decide when to send it."""

    item: EventItem
    size: int
    enqueue_time: float


class EventBatcher(Closing):
    """Collects analytics events and sends them to LogEvents in batches from a daemon thread.

    Create one with `FeedbackClient.event_batcher()`; use it as a context manager or call `close()`.
    All methods are thread-safe.

    Guarantees:

    - `log` does no network I/O. It checks the event like `log_event` would (raising ValueError or
      TypeError at once), stamps `event_time` with the time of the call when not given (so a late
      batch does not shift the event), and queues it.
    - A batch is sent when `max_batch` events (or about 3.5 MiB) are waiting, when the oldest
      waiting event has waited `flush_interval` seconds, or when `flush`/`close` asks.
    - The queue holds at most `max_queue` events not yet acknowledged (waiting or in flight). When
      it is full, `on_full` decides: "block" waits for room (up to `block_timeout` seconds, then
      raises QueueFullError), "raise" raises QueueFullError at once, "drop" passes the event to
      `on_drop` and returns.
    - Whole batches failing with UNAVAILABLE, RESOURCE_EXHAUSTED (with RetryInfo) or
      DEADLINE_EXCEEDED, and single events rejected with the first two, are re-sent under the
      retry policy, with jittered exponential backoff that waits at least the server's RetryInfo
      delay. Each attempt is bounded by the client's timeout and the policy's `max_attempts` bounds
      the retries; the waits use the batcher's own condition rather than `RetryPolicy.sleep`, so
      that `close` can cut them short.
    - Each event gets its request_id when `log` queues it and keeps it through every re-send, so an
      event whose answer was lost (the connection dropped after the server committed it, or the
      attempt timed out) is stored once: the retry comes back as a duplicate, counted as accepted
      (and in `stats.duplicates`). An event reported after its retries ran out, or cancelled by a
      `close`, may still have been stored; the item given to `on_rejected` keeps its request_id, so
      sending it again (`FeedbackClient.log_events([item])`) stores it at most once.
    - No event is lost silently: each is acknowledged by the server or reported, with its
      FeedbackError, to `on_rejected(item, error)` (invalid events, events still failing after the
      retries, events cancelled by a `close` that timed out). Without `on_rejected` they are logged
      at ERROR level on the "llmfeedback" logger. Either way `stats.rejected` counts them.
    - An event about a user who opted out is acknowledged as suppressed: the server stored
      nothing, as the user asked. It is not a failure: it is counted in `stats.suppressed` only,
      never re-sent nor reported, and `flush` and `close` count it as settled like any other.
    - An open batcher is closed at interpreter exit, with the client's timeout to send what is left.

    Callbacks run without the batcher's lock held. `on_drop` runs in the thread calling `log`, and
    what it raises reaches that caller. `on_rejected` runs in the sender thread, so keep it quick (a
    slow callback delays sending); what it raises is logged and does not stop the batcher; calling
    `flush` or `close` from it raises RuntimeError, as the batcher would wait for itself.
    """

    def __init__(
        self,
        send: Callable[
            [feedback_service_pb2.LogEventsRequest, float | None],
            grpc.CallFuture[feedback_service_pb2.LogEventsResponse],
        ],
        *,
        retry: RetryPolicy,
        attempt_timeout: float | None,
        max_batch: int = 500,
        flush_interval: float = 0.5,
        max_queue: int = 10_000,
        on_full: OnFull = "block",
        on_drop: Callable[[EventItem], object] | None = None,
        on_rejected: Callable[[EventItem, FeedbackError], object] | None = None,
        block_timeout: float | None = None,
    ) -> None:
        """Start the sender thread; prefer `FeedbackClient.event_batcher()`, which fills in `send`.

        `send(request, timeout)` starts one LogEvents call and returns its future.
        """
        if not 1 <= max_batch <= MAX_BATCH_ITEMS:
            raise ValueError(f"max_batch must be from 1 to {MAX_BATCH_ITEMS}, not {max_batch}")
        if not flush_interval > 0:
            raise ValueError(f"flush_interval must be positive, not {flush_interval}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, not {max_queue}")
        if on_full not in _ON_FULL_CHOICES:
            raise ValueError(f'on_full must be "block", "raise" or "drop", not {on_full!r}')
        if (on_full == "drop") != (on_drop is not None):
            raise ValueError('on_drop is required with on_full="drop", and used with it only')
        if block_timeout is not None and (on_full != "block" or block_timeout < 0):
            raise ValueError('block_timeout must be a non-negative number, with on_full="block"')
        self._send = send
        self._retry = retry
        self._attempt_timeout = attempt_timeout
        self._max_batch = max_batch
        self._flush_interval = flush_interval
        self._max_queue = max_queue
        self._on_full: OnFull = on_full
        self._on_drop = on_drop
        self._on_rejected = on_rejected
        self._block_timeout = block_timeout

        lock = threading.Lock()
        # One lock, three reasons to wake: work for the sender, room for blocked producers, and
        # settled events for flush and close.
        self._work = threading.Condition(lock)
        self._room = threading.Condition(lock)
        self._settled_changed = threading.Condition(lock)
        self._queue: deque[_Queued] = deque()
        self._queued_bytes = 0
        self._in_flight = 0
        self._enqueued = 0
        self._taken = 0
        self._settled = 0
        self._sent = 0
        self._accepted = 0
        self._duplicates = 0
        self._suppressed = 0
        self._rejected = 0
        self._dropped = 0
        self._flush_through = 0
        self._closed = False
        self._aborted = False
        self._call: grpc.Future[Any] | None = None

        self._thread = threading.Thread(
            target=self._run, name="llmfeedback-event-batcher", daemon=True
        )
        self._thread.start()
        atexit.register(self._close_at_exit)

    def log(
        self,
        user_id: str,
        event_type: str,
        *,
        details: Mapping[str, Any] | None = None,
        event_time: datetime | None = None,
        event_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Queue one event for sending; `event_time` defaults to now. See the class guarantees.

        `event_id` and `request_id` are those of `FeedbackClient.log_event`; the request id is
        made here when not given, once, and kept through every re-send.

        Raises ValueError/TypeError for an invalid event, QueueFullError when the queue is full
        (on_full "raise", or "block" after block_timeout), RuntimeError after `close`.
        """
        if event_time is None:
            event_time = datetime.now(UTC)
        item = EventItem(**EVENTS.arguments(locals()))
        queued = _Queued(item, encoded_size(item._request), time.monotonic())
        with self._work:
            self._check_open()
            if self._pending() >= self._max_queue:
                if self._on_full == "drop":
                    self._dropped += 1
                    dropped = True
                elif self._on_full == "raise":
                    raise self._queue_full("is full")
                else:
                    has_room = self._room.wait_for(
                        lambda: self._closed or self._pending() < self._max_queue,
                        timeout=self._block_timeout,
                    )
                    self._check_open()
                    if not has_room:
                        raise self._queue_full(f"stayed full for {self._block_timeout:g} s")
                    dropped = False
            else:
                dropped = False
            if not dropped:
                was_empty = not self._queue
                self._queue.append(queued)
                self._queued_bytes += queued.size
                self._enqueued += 1
                # The sender sleeps until the oldest event is due; wake it only if that changed.
                if was_empty or self._batch_is_full():
                    self._work.notify()
        if dropped and self._on_drop is not None:
            self._on_drop(item)

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now and wait until each of those events is acknowledged or
        reported; return False if `timeout` seconds passed first (they stay queued).
        """
        self._check_not_sender("flush")
        with self._work:
            target = self._enqueued
            if self._settled >= target:
                return True
            self._flush_through = max(self._flush_through, target)
            self._work.notify()
            return self._settled_changed.wait_for(lambda: self._settled >= target, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, stop the sender thread and refuse further events; return True if all was done.

        If `timeout` seconds pass first, the retries stop, the call in flight is cancelled, and the
        events not yet acknowledged are reported to `on_rejected` as CANCELLED (they may have been
        stored); close then returns False. Calling close again waits for the thread and returns
        whether nothing was left.
        """
        self._check_not_sender("close")
        atexit.unregister(self._close_at_exit)
        with self._work:
            self._closed = True
            # Producers blocked on a full queue learn that it is closed.
            self._room.notify_all()
            self._work.notify()
            finished = self._settled_changed.wait_for(
                lambda: not self._queue and self._in_flight == 0, timeout
            )
            if not finished:
                self._aborted = True
                if self._call is not None:
                    self._call.cancel()
                self._work.notify_all()
        self._thread.join()
        with self._work:
            return not self._aborted

    @property
    def stats(self) -> BatcherStats:
        """A consistent snapshot of the counters."""
        with self._work:
            return BatcherStats(
                enqueued=self._enqueued,
                sent=self._sent,
                accepted=self._accepted,
                rejected=self._rejected,
                dropped=self._dropped,
                pending=self._pending(),
                duplicates=self._duplicates,
                suppressed=self._suppressed,
            )

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        with self._work:
            return self._closed

    # --- sender thread ---------------------------------------------------------------------

    def _run(self) -> None:
        """Take and send batches until closed and empty."""
        while True:
            with self._work:
                while not self._due():
                    if self._closed and not self._queue:
                        return
                    self._work.wait(self._seconds_until_due())
                batch, aborted = self._take_batch()
            if aborted:
                closed = UnexpectedStatusError(
                    "the event batcher was closed before this event was sent",
                    code=grpc.StatusCode.CANCELLED,
                )
                self._finish(batch, [], 0, [(queued.item, closed) for queued in batch])
            else:
                self._send_batch(batch)

    def _due(self) -> bool:
        """Whether a batch should leave now (called with the lock held)."""
        if not self._queue:
            return False
        return (
            self._closed
            or self._batch_is_full()
            or self._flush_through > self._taken
            or time.monotonic() - self._queue[0].enqueue_time >= self._flush_interval
        )

    def _seconds_until_due(self) -> float | None:
        """How long the oldest waiting event may still wait; None when nothing waits."""
        if not self._queue:
            return None
        due = self._queue[0].enqueue_time + self._flush_interval
        return max(0.0, due - time.monotonic())

    def _batch_is_full(self) -> bool:
        return len(self._queue) >= self._max_batch or self._queued_bytes >= MAX_BATCH_BYTES

    def _take_batch(self) -> tuple[list[_Queued], bool]:
        """Move the oldest events that fit one call from the queue to the flight (lock held)."""
        batch: list[_Queued] = []
        size = 0
        while self._queue and len(batch) < self._max_batch:
            queued = self._queue[0]
            if batch and size + queued.size > MAX_BATCH_BYTES:
                break
            batch.append(self._queue.popleft())
            size += queued.size
        self._queued_bytes -= size
        self._taken += len(batch)
        self._in_flight = len(batch)
        if not self._aborted:
            self._sent += len(batch)
        return batch, self._aborted

    def _send_batch(self, batch: list[_Queued]) -> None:
        """Deliver one batch with retries, then account for and report every event of it."""
        try:
            results, failure = deliver(
                [queued.item._request for queued in batch],
                self._call_log_events,
                policy=self._retry,
                attempt_timeout=self._attempt_timeout,
                wait=self._pause,
            )
        except Exception as error:  # a bug must not kill the thread and lose the queue silently
            logger.exception("sending a batch of events failed unexpectedly")
            results, failure = [], UnexpectedStatusError(f"sending failed unexpectedly: {error!r}")
        accepted = [result for result in results if result.accepted]
        suppressed = sum(1 for result in results if result.suppressed)
        rejected = [
            (batch[result.index].item, result.error)
            for result in results
            if not result.accepted and result.error is not None
        ]
        if failure is not None:
            settled = {result.index for result in results}
            rejected += [
                (queued.item, failure) for index, queued in enumerate(batch) if index not in settled
            ]
        self._finish(batch, accepted, suppressed, rejected)

    def _call_log_events(
        self, requests: list[feedback_service_pb2.LogEventRequest], timeout: float | None
    ) -> Sequence[batch_pb2.BatchItemResult]:
        """One LogEvents attempt, cancellable by a `close` that runs out of time."""
        # Typed as the Future it also is: grpc-stubs leave Call.cancel untyped.
        request = feedback_service_pb2.LogEventsRequest(events=requests)
        EVENTS.stamp_sent_time(request.events)
        call: grpc.Future[feedback_service_pb2.LogEventsResponse] = self._send(request, timeout)
        with self._work:
            self._call = call
            if self._aborted:
                call.cancel()
        try:
            return call.result().results
        except grpc.FutureCancelledError:
            raise UnexpectedStatusError(
                "the event batcher was closed while this event was being sent; it may be stored",
                code=grpc.StatusCode.CANCELLED,
            ) from None
        finally:
            with self._work:
                self._call = None

    def _pause(self, seconds: float) -> bool:
        """Wait between attempts; return False at once when a timed-out close aborts."""
        with self._work:
            return not self._work.wait_for(lambda: self._aborted, timeout=seconds)

    def _finish(
        self,
        batch: list[_Queued],
        accepted: list[ItemResult],
        suppressed: int,
        rejected: list[tuple[EventItem, FeedbackError]],
    ) -> None:
        """Report the failed events, then count the batch as settled (accepted, suppressed or
        rejected) and wake the waiters."""
        # Reported before being counted as settled, so flush() returns only after the reports.
        for item, error in rejected:
            self._report(item, error)
        with self._work:
            self._accepted += len(accepted)
            self._duplicates += sum(1 for result in accepted if result.duplicate)
            self._suppressed += suppressed
            self._rejected += len(rejected)
            self._settled += len(batch)
            self._in_flight = 0
            self._room.notify_all()
            self._settled_changed.notify_all()

    def _report(self, item: EventItem, error: FeedbackError) -> None:
        if self._on_rejected is None:
            logger.error(
                "event not stored: %s (user_id=%r, event_type=%r, event_time=%s)",
                error,
                item.user_id,
                item.event_type,
                item.event_time.isoformat() if item.event_time is not None else "-",
            )
            return
        try:
            self._on_rejected(item, error)
        except Exception:
            logger.exception("on_rejected raised; the event still counts as rejected")

    # --- helpers -------------------------------------------------------------------------------

    def _pending(self) -> int:
        return len(self._queue) + self._in_flight

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the EventBatcher is closed")

    def _check_not_sender(self, method: str) -> None:
        if threading.current_thread() is self._thread:
            raise RuntimeError(f"{method}() from a batcher callback would wait for itself")

    def _queue_full(self, what: str) -> QueueFullError:
        return QueueFullError(
            f"the event queue ({self._max_queue} events) {what}", max_queue=self._max_queue
        )

    def _close_at_exit(self) -> None:
        self.close(timeout=self._attempt_timeout or _EXIT_TIMEOUT)
