"""Fixtures: a recording fake service on a real gRPC server, a client that never really sleeps."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from llmfeedback import FeedbackClient, RetryPolicy
from llmfeedback._connection import (
    API_KEY_ENVIRONMENT_VARIABLE,
    CA_FILE_ENVIRONMENT_VARIABLE,
    CLIENT_CERT_ENVIRONMENT_VARIABLE,
    CLIENT_KEY_ENVIRONMENT_VARIABLE,
    TLS_ENVIRONMENT_VARIABLE,
)
from tests.certificates import Certificates, make_certificates, openssl_missing_reason

from .fake_service import RecordingServicer, serve

if TYPE_CHECKING:
    from collections.abc import Iterator

CREDENTIAL_VARIABLES = (
    API_KEY_ENVIRONMENT_VARIABLE,
    TLS_ENVIRONMENT_VARIABLE,
    CA_FILE_ENVIRONMENT_VARIABLE,
    CLIENT_CERT_ENVIRONMENT_VARIABLE,
    CLIENT_KEY_ENVIRONMENT_VARIABLE,
)


@pytest.fixture(autouse=True)
def _no_credentials_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every client reads FEEDBACK_API_KEY and FEEDBACK_TLS...; a developer's shell must not
    change what the tests send."""
    for variable in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


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


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA of this session, a server certificate for 127.0.0.1 and localhost, a client one."""
    reason = openssl_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    return make_certificates(tmp_path_factory.mktemp("pki"))
