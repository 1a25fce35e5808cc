"""Retry policy for transient failures: jittered exponential backoff bounded by the call deadline.

Modelled on the OpenTelemetry OTLP gRPC exporter: the retryable status codes live in one frozenset,
the backoff uses full jitter so many clients do not retry in lockstep, a server's RetryInfo delay is
honoured, and no retry is started that could not finish before the caller's deadline.

Writes are retried like reads, even when the failure may have come after the server stored the
write (an UNAVAILABLE from a dropped connection): every write carries a request_id that the retry
sends again, so the server answers with what it stored instead of storing it twice. Erasures
(EraseUser, EraseConversation) need no request_id to be retried alike: a repeated call joins the
erasure under way, or resumes the one a stopped server left, and returns its counts. A single call
does not retry DEADLINE_EXCEEDED: its attempt already had all the time the call had left. Only the
batch delivery, whose attempts can be bounded more tightly than the whole (see `_batch.deliver`),
retries an attempt that ran out of its own time.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import grpc

from ._errors import error_from_rpc_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._errors import FeedbackError

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "RETRYABLE_CODES",
    "RetryPolicy",
    "call_with_retry",
    "deadline_of",
    "retry_wait",
    "time_left",
    "wait_or_raise",
]

RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
)
"""Status codes worth retrying: the service documents the first two as transient. CANCELLED
reaches this blocking client only from the server side: a server shutting down cancels calls it
has not started (after answering UNAVAILABLE for a while). Writes carry request ids, so a retry
never stores anything twice."""

# Quota exhaustion without a RetryInfo hint may last for hours; only the server knows when to retry.
_CODES_RETRIED_ONLY_WITH_RETRY_INFO: frozenset[grpc.StatusCode] = frozenset(
    {grpc.StatusCode.RESOURCE_EXHAUSTED}
)

_ResponseT = TypeVar("_ResponseT")


def _full_jitter(backoff: float) -> float:
    """Pick a wait uniformly in [0, backoff] ("full jitter") to spread out competing clients."""
    return random.uniform(0.0, backoff)


@dataclass(frozen=True)
class RetryPolicy:
    """How a FeedbackClient retries calls that failed with a transient status.

    Use `RetryPolicy(max_attempts=1)` to disable retries.
    """

    max_attempts: int = 5
    """Total attempts per call, the first one included; 1 disables retries."""
    initial_backoff: float = 0.1
    """Upper bound, in seconds, of the wait before the first retry."""
    max_backoff: float = 5.0
    """Largest upper bound, in seconds, the exponential backoff grows to."""
    multiplier: float = 2.0
    """Factor by which the backoff bound grows after each retry."""
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    """Function that waits the given seconds; replace it in tests to run without waiting."""
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    """Monotonic clock, in seconds, used to keep retries within the call deadline."""
    jitter: Callable[[float], float] = field(default=_full_jitter, repr=False, compare=False)
    """Maps the current backoff bound to the actual wait; full jitter by default."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff durations must not be negative")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")

    def should_retry(self, error: FeedbackError) -> bool:
        """Tell whether the failure is transient according to this policy's codes."""
        if error.code not in RETRYABLE_CODES:
            return False
        if error.code in _CODES_RETRIED_ONLY_WITH_RETRY_INFO:
            return error.retry_delay is not None
        return True

    def backoff(self, retry_number: int, error: FeedbackError) -> float:
        """Seconds to wait before the given retry (1 for the first), honouring RetryInfo."""
        bound = min(self.max_backoff, self.initial_backoff)
        # Grown step by step rather than as a power, which overflows for long retry sequences.
        for _ in range(retry_number - 1):
            bound = min(self.max_backoff, bound * self.multiplier)
        wait = self.jitter(bound)
        # The server's hint is a floor: retrying sooner would only be refused again.
        return wait if error.retry_delay is None else max(wait, error.retry_delay)


DEFAULT_RETRY_POLICY = RetryPolicy()
"""The policy a FeedbackClient uses unless told otherwise."""


def call_with_retry(
    attempt: Callable[[float | None], _ResponseT],
    *,
    policy: RetryPolicy,
    timeout: float | None,
) -> _ResponseT:
    """Run `attempt(remaining_timeout)` until it succeeds, fails for good, or time runs out.

    The timeout covers the whole call, retries and waits included: each attempt gets only what is
    left of it. `attempt` must send the same request every time (same request_id for a write), so
    a retry can never store a write twice. Raises the FeedbackError of the last attempt.
    """
    deadline = deadline_of(policy, timeout)
    retry_number = 0
    while True:
        try:
            return attempt(time_left(policy, deadline))
        except grpc.RpcError as rpc_error:
            retry_number += 1
            wait_or_raise(policy, retry_number, rpc_error, deadline)


def wait_or_raise(
    policy: RetryPolicy, retry_number: int, rpc_error: grpc.RpcError, deadline: float | None
) -> None:
    """Wait before retry `retry_number` after `rpc_error`, or raise its FeedbackError when the
    call fails for good (see retry_wait)."""
    error = error_from_rpc_error(rpc_error)
    wait = retry_wait(policy, retry_number, error, deadline)
    if wait is None:
        raise error from rpc_error
    policy.sleep(wait)


def deadline_of(policy: RetryPolicy, timeout: float | None) -> float | None:
    """When a call given `timeout` for all its attempts must end, by the policy's clock."""
    return None if timeout is None else policy.clock() + timeout


def time_left(policy: RetryPolicy, deadline: float | None) -> float | None:
    """The timeout of the next attempt: what is left before `deadline` (None: no deadline)."""
    return None if deadline is None else max(0.0, deadline - policy.clock())


def retry_wait(
    policy: RetryPolicy,
    retry_number: int,
    error: FeedbackError,
    deadline: float | None,
    *,
    retryable: bool | None = None,
) -> float | None:
    """Seconds to wait before retry `retry_number` (1 for the first) after `error`, or None when
    the call fails for good: not retryable (by default, by the policy's codes), out of attempts,
    or the wait would end past `deadline`.

    Waiting past the deadline would only turn a meaningful error into DEADLINE_EXCEEDED.
    """
    if retryable is None:
        retryable = policy.should_retry(error)
    if retry_number >= policy.max_attempts or not retryable:
        return None
    wait = policy.backoff(retry_number, error)
    if deadline is not None and policy.clock() + wait >= deadline:
        return None
    return wait
