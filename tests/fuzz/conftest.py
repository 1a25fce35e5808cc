"""A real server per test over a fresh database (SQLite and PostgreSQL), and a row counter."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from server.config import Settings
from tests.fuzz.harness import RowCounter, assert_serving
from tests.server_harness import ServerThread


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Default rules, so label and unknown-conversation rules are fuzzed as shipped."""
    return Settings(database_url=database_url, storage_threads=2, log_level="WARNING")


@pytest.fixture
def server(settings: Settings) -> Iterator[ServerThread]:
    """A started server; stopped gracefully after the test."""
    with ServerThread(settings) as running:
        yield running


@pytest.fixture
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    """A channel to the server, which must still be SERVING when the test ends."""
    with grpc.insecure_channel(server.address) as connected:
        yield connected
        assert_serving(connected)


@pytest.fixture
def rows(database_url: str) -> Iterator[RowCounter]:
    """Counts of stored records, read from the server's database."""
    counter = RowCounter(database_url)
    yield counter
    counter.close()
