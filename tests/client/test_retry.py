"""Transient failures are retried with growing jittered waits, within attempts and deadline."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from llmfeedback import (
    RETRYABLE_CODES,
    FeedbackClient,
    FeedbackError,
    GetStatsResponse,
    InvalidArgumentError,
    ResourceExhaustedError,
    RetryPolicy,
    UnavailableError,
)

from .fake_service import Abort

if TYPE_CHECKING:
    from collections.abc import Callable

    from .fake_service import RecordingServicer

UNAVAILABLE = Abort(grpc.StatusCode.UNAVAILABLE, "database unreachable")


def unavailable_for(seconds: float) -> Abort:
    retry_info = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9))
    )
    return Abort(grpc.StatusCode.UNAVAILABLE, "database restarting", [retry_info])


class FakeClock:
    """A monotonic clock that only moves when the retry policy sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_unavailable_is_retried_until_success_with_growing_waits(
    client: FeedbackClient, servicer: RecordingServicer, sleeps: list[float]
) -> None:
    servicer.plan("GetStats", UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)

    stats = client.get_stats()

    assert isinstance(stats, GetStatsResponse)
    assert len(servicer.requests("GetStats")) == 4
    # The conftest client has no jitter: the waits are the exponential bounds themselves.
    assert sleeps == pytest.approx([0.1, 0.2, 0.4])


def test_a_write_cancelled_by_a_stopping_server_is_retried_with_its_request_id(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("LogEvent", Abort(grpc.StatusCode.CANCELLED, "server shutting down"))

    client.log_event("user-1", "click")

    sent = [request.request_id for request in servicer.requests("LogEvent")]  # type: ignore[attr-defined]
    assert len(sent) == 2
    assert sent[0] == sent[1] != ""


def test_waits_are_full_jitter_below_the_growing_bound(
    address: str, servicer: RecordingServicer
) -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(max_attempts=6, sleep=sleeps.append)
    servicer.plan("LogEvent", *[UNAVAILABLE] * 5)

    with FeedbackClient(address, retry=policy) as client:
        client.log_event("alice", "click")

    bounds = [0.1, 0.2, 0.4, 0.8, 1.6]
    assert len(sleeps) == len(bounds)
    assert all(0.0 <= wait <= bound for wait, bound in zip(sleeps, bounds, strict=True))
    assert sleeps != bounds


def test_backoff_bound_stops_growing_at_max_backoff() -> None:
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=3.0, jitter=lambda bound: bound)
    error = UnavailableError("down")

    assert [policy.backoff(number, error) for number in range(1, 6)] == [1.0, 2.0, 3.0, 3.0, 3.0]
    assert policy.backoff(100_000, error) == 3.0


def test_retries_stop_after_max_attempts(
    address: str, servicer: RecordingServicer, sleeps: list[float]
) -> None:
    policy = RetryPolicy(max_attempts=3, sleep=sleeps.append)
    servicer.plan("SubmitFeedback", *[UNAVAILABLE] * 5)

    with FeedbackClient(address, retry=policy) as client, pytest.raises(UnavailableError):
        client.submit_feedback("conv-1", score=3)

    assert len(servicer.requests("SubmitFeedback")) == 3
    assert len(sleeps) == 2


def test_invalid_argument_is_never_retried(
    client: FeedbackClient, servicer: RecordingServicer, sleeps: list[float]
) -> None:
    servicer.plan("RecordInteraction", Abort(grpc.StatusCode.INVALID_ARGUMENT, "bad id"))

    with pytest.raises(InvalidArgumentError):
        client.record_interaction("bad id!")

    assert len(servicer.requests("RecordInteraction")) == 1
    assert sleeps == []


def test_retry_info_delay_is_honoured_as_the_minimum_wait(
    client: FeedbackClient, servicer: RecordingServicer, sleeps: list[float]
) -> None:
    servicer.plan("GetStats", unavailable_for(2.5), UNAVAILABLE)

    client.get_stats()

    # 2.5 s from RetryInfo beats the 0.1 s backoff; the next retry falls back to the backoff.
    assert sleeps == pytest.approx([2.5, 0.2])


def test_resource_exhausted_is_retried_only_with_retry_info(
    client: FeedbackClient, servicer: RecordingServicer, sleeps: list[float]
) -> None:
    retry_info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1))
    servicer.plan("GetStats", Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota", [retry_info]))

    client.get_stats()
    assert sleeps == [1.0]

    servicer.plan("GetStats", Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota, no hint"))
    with pytest.raises(ResourceExhaustedError):
        client.get_stats()
    assert len(servicer.requests("GetStats")) == 3
    assert sleeps == [1.0]


def test_retries_never_run_past_the_deadline_and_shrink_each_attempt(
    address: str, servicer: RecordingServicer
) -> None:
    clock = FakeClock()
    policy = RetryPolicy(
        initial_backoff=0.4, clock=clock, sleep=clock.sleep, jitter=lambda bound: bound
    )
    servicer.plan("GetStats", *[UNAVAILABLE] * 5)

    with (
        FeedbackClient(address, timeout=1.0, retry=policy) as client,
        pytest.raises(UnavailableError),
    ):
        client.get_stats()

    # Attempt 1 at t=0, wait 0.4, attempt 2 at t=0.4; waiting 0.8 more would pass t=1.0.
    assert clock.sleeps == pytest.approx([0.4])
    remaining = [call.time_remaining for call in servicer.calls["GetStats"]]
    assert len(remaining) == 2
    first, second = remaining
    assert first is not None
    assert second is not None
    # gRPC rounds deadlines on the wire, so the server's view is only approximately ours.
    assert first == pytest.approx(1.0, abs=0.15)
    assert second == pytest.approx(0.6, abs=0.15)


def test_retry_info_longer_than_the_deadline_fails_at_once(
    client: FeedbackClient, servicer: RecordingServicer, sleeps: list[float]
) -> None:
    servicer.plan("GetStats", unavailable_for(30))

    with pytest.raises(UnavailableError) as raised:
        client.get_stats(timeout=1.0)

    assert raised.value.retry_delay == 30
    assert sleeps == []
    assert len(servicer.requests("GetStats")) == 1


def test_retryable_codes_are_one_frozenset() -> None:
    assert (
        frozenset(
            {
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.CANCELLED,
            }
        )
        == RETRYABLE_CODES
    )


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (UnavailableError("down"), True),
        (UnavailableError("down", retry_delay=1.0), True),
        (ResourceExhaustedError("quota"), False),
        (ResourceExhaustedError("quota", retry_delay=1.0), True),
        (InvalidArgumentError("bad"), False),
        (FeedbackError("deadline", code=grpc.StatusCode.DEADLINE_EXCEEDED), False),
    ],
)
def test_should_retry(error: FeedbackError, retryable: bool) -> None:
    assert RetryPolicy().should_retry(error) is retryable


@pytest.mark.parametrize(
    "settings",
    [{"max_attempts": 0}, {"initial_backoff": -1.0}, {"max_backoff": -1.0}, {"multiplier": 0.5}],
)
def test_nonsensical_policies_are_rejected(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        RetryPolicy(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "write"),
    [
        ("RecordInteraction", lambda client: client.record_interaction("conv-1")),
        ("SubmitFeedback", lambda client: client.submit_feedback("conv-1", score=4)),
        ("LogEvent", lambda client: client.log_event("alice", "click")),
    ],
)
def test_writes_refused_by_an_overloaded_server_are_retried_after_its_delay(
    client: FeedbackClient,
    servicer: RecordingServicer,
    sleeps: list[float],
    method: str,
    write: Callable[[FeedbackClient], object],
) -> None:
    retry_info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=750_000_000))
    servicer.plan(
        method, Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "write queue full", [retry_info])
    )

    write(client)

    assert len(servicer.requests(method)) == 2
    assert sleeps == [0.75]
