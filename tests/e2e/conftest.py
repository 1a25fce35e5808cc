"""Fixtures that run the real server on a real port, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmfeedback import FeedbackClient
from server.config import Settings
from tests.databases import create_postgres_database, drop_postgres_database, postgres_server_url
from tests.server_harness import ServerThread


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Default settings over a fresh, empty database (parametrized over both dialects)."""
    return Settings(database_url=database_url, storage_threads=4, log_level="WARNING")


@pytest.fixture
def server(settings: Settings) -> Iterator[ServerThread]:
    """A started server; stopped gracefully after the test."""
    with ServerThread(settings) as running:
        yield running


@pytest.fixture
def client(server: ServerThread) -> Iterator[FeedbackClient]:
    """A client of the running server with a short deadline and no retries."""
    from llmfeedback import RetryPolicy

    with FeedbackClient(server.address, timeout=10, retry=RetryPolicy(max_attempts=1)) as connected:
        yield connected


@pytest.fixture
def own_database(postgres_database_url: str) -> Iterator[str]:
    """A PostgreSQL database of this test alone, so cutting it off harms no other test."""
    url = create_postgres_database(postgres_server_url())
    yield url
    drop_postgres_database(postgres_server_url(), url)
