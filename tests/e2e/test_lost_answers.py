"""At-least-once delivery, exactly-once storage: the client retries writes whose answer was lost.

A client interceptor lets each write reach the real server and be committed, then throws the
answer away and reports UNAVAILABLE, as a dropped connection would. The client's retry carries
the same request id, so the server answers with what it stored the first time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from llmfeedback import EventItem, FeedbackClient, RetryPolicy
from tests.server_harness import ServerThread

if TYPE_CHECKING:
    UnaryUnaryClientInterceptor = grpc.UnaryUnaryClientInterceptor[Any, Any]
else:  # not subscriptable at run time
    UnaryUnaryClientInterceptor = grpc.UnaryUnaryClientInterceptor


class _LostAnswer(grpc.RpcError, grpc.Call):
    """What a client sees when the connection drops after the server committed."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection reset after the request was sent"

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def initial_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False


class LoseFirstAnswers(UnaryUnaryClientInterceptor):
    """Lets the first `lost` write calls through to the server and drops their answers."""

    def __init__(self, lost: int) -> None:
        self.lost = lost
        self.calls = 0

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        self.calls += 1
        outcome = continuation(client_call_details, request)
        if self.lost > 0 and client_call_details.method.rsplit("/", 1)[-1] != "GetStats":
            outcome.result()  # the server has committed
            self.lost -= 1
            raise _LostAnswer()
        return outcome


@pytest.fixture
def lossy(server: ServerThread) -> Iterator[tuple[FeedbackClient, LoseFirstAnswers]]:
    interceptor = LoseFirstAnswers(lost=0)
    channel = grpc.intercept_channel(grpc.insecure_channel(server.address), interceptor)
    policy = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.02)
    with FeedbackClient(channel=channel, timeout=10, retry=policy) as client:
        yield client, interceptor
    channel.close()


def test_a_write_whose_answer_was_lost_is_stored_once(
    lossy: tuple[FeedbackClient, LoseFirstAnswers],
) -> None:
    client, interceptor = lossy
    interceptor.lost = 2
    event = client.log_event("user-1", "page_view", details={"page": "/"})
    assert interceptor.calls == 3  # two answers lost, the third attempt answered
    assert client.get_stats().events.total_count == 1
    interceptor.lost = 1
    client.record_interaction("conv-1", message_id="msg-1", user_id="user-1")
    interceptor.lost = 1
    rating = client.submit_feedback(message_id="msg-1", score=4)
    stats = client.get_stats()
    assert (stats.interactions.total_count, stats.feedback.total_count) == (1, 1)
    assert event.id > 0
    assert rating.score == 4


def test_a_batch_whose_answer_was_lost_is_stored_once(
    lossy: tuple[FeedbackClient, LoseFirstAnswers],
) -> None:
    client, interceptor = lossy
    interceptor.lost = 1
    result = client.log_events([EventItem(f"user-{n}", "click") for n in range(20)])
    assert (result.accepted_count, result.duplicate_count) == (20, 20)
    assert client.get_stats().events.total_count == 20
