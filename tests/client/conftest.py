"""Fixtures: a recording fake service on a real gRPC server, a client that never really sleeps."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from llmfeedback import FeedbackClient, RetryPolicy

from .fake_service import RecordingServicer, serve

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def servicer() -> RecordingServicer:
    return RecordingServicer()  # type: ignore[abstract]  # API key RPCs are not faked


@pytest.fixture
def address(servicer: RecordingServicer) -> Iterator[str]:
    with serve(servicer) as served_address:
        yield served_address


@pytest.fixture
def sleeps() -> list[float]:
    """Every wait the client's retry policy asked for, in order."""
    return []


@pytest.fixture
def client(address: str, sleeps: list[float]) -> Iterator[FeedbackClient]:
    """A client whose retries record their waits instead of sleeping, without jitter."""
    policy = RetryPolicy(sleep=sleeps.append, jitter=lambda bound: bound)
    with FeedbackClient(address, retry=policy) as feedback_client:
        yield feedback_client
