"""Watches: an iterator over a kind's records as they are committed, which reconnects and
resumes by itself from the last position it saw."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import grpc
from google.protobuf import duration_pb2

from ._closing import Closing
from ._errors import FeedbackError, error_from_rpc_error
from ._retry import RetryPolicy, retry_wait

RecordT = TypeVar("RecordT")

WATCH_RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
    }
)
"""Failures a watch resumes after: a stopping server or a lost connection (UNAVAILABLE,
CANCELLED, INTERNAL from a reset stream), a full buffer or a watch limit (RESOURCE_EXHAUSTED),
a connection's maximum age (DEADLINE_EXCEEDED). Resuming from a position repeats nothing."""


class WatchedRecord(NamedTuple, Generic[RecordT]):
    """One record of a watch and the position right after it."""

    record: RecordT
    position: str
    """Pass it as `start_position` to a new watch (same filters) to continue right after this
    record, with nothing skipped or repeated."""


class Watch(Closing, Generic[RecordT]):
    """Iterate it for the watched records, oldest first, as they are committed; it blocks
    until the next one comes. Use it as a context manager, or call close(), to end it.

    The stream is reopened from the last position seen whenever it breaks for a reason worth
    retrying (WATCH_RETRYABLE_CODES), after the client's RetryPolicy backoff; the count of
    failures starts again with every message received, so a watch that makes progress retries
    for ever. Any other failure (bad filters, OutOfRangeError for a position older than the
    server's watch history) is raised from the iteration.
    """

    def __init__(
        self,
        open_stream: Callable[[str, str], Any],
        records: Callable[[Any], Sequence[Any]],
        policy: RetryPolicy,
        *,
        start_position: str,
        start_page_token: str,
    ) -> None:
        self._open = open_stream
        self._records = records
        self._policy = policy
        self._start_page_token = start_page_token
        self._call: Any = None
        self._closed = False
        self.position: str = start_position
        """The position after everything received, progress markers included ("" until the
        first message): where a new watch with the same filters would resume."""
        self.reconnects = 0
        """How many times the stream was reopened."""

    def __iter__(self) -> Iterator[WatchedRecord[RecordT]]:
        """The records, reconnecting as described in the class docstring."""
        failures = 0
        while not self._closed:
            token = "" if self.position else self._start_page_token
            self._call = self._open(self.position, token)
            try:
                for response in self._call:
                    failures = 0
                    for watched in self._records(response):
                        # Before the yield: a caller that stops here has taken this record.
                        self.position = watched.position
                        yield WatchedRecord(watched_record(watched), watched.position)
                    self.position = response.position
                if self._closed:
                    return
                # The server ended the stream without a status: reopen it.
                failures += 1
            except grpc.RpcError as rpc_error:
                if self._closed:
                    return
                error = error_from_rpc_error(rpc_error)
                failures += 1
                wait = _resume_wait(self._policy, failures, error)
                if wait is None:
                    raise error from rpc_error
                self._policy.sleep(wait)
                self.reconnects += 1
            finally:
                self._call.cancel()

    def close(self) -> None:
        """End the watch; an iteration in progress in another thread stops."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()


def watched_record(watched: Any) -> Any:
    """The record inside a Watched* element (its first field)."""
    return getattr(watched, watched.DESCRIPTOR.fields[0].name)


def progress_interval(seconds: float | None) -> duration_pb2.Duration | None:
    """The request's progress_interval (None: the server's default of 10 s)."""
    if seconds is None:
        return None
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def _resume_wait(policy: RetryPolicy, failures: int, error: FeedbackError) -> float | None:
    return retry_wait(policy, failures, error, None, retryable=error.code in WATCH_RETRYABLE_CODES)
