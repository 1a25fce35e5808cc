"""A database outage is an error the client sees and may retry, never a silent loss."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from llmfeedback import (
    Event,
    EventItem,
    ExportChunk,
    FeedbackClient,
    RetryPolicy,
    UnavailableError,
)
from server.config import Settings
from tests.databases import (
    create_postgres_database,
    drop_postgres_database,
    libpq_url,
    postgres_server_url,
)
from tests.server_harness import ServerThread

pytestmark = pytest.mark.postgres


@pytest.fixture
def own_database(postgres_database_url: str) -> Iterator[str]:
    """A database of this test alone, so cutting it off harms no other test."""
    url = create_postgres_database(postgres_server_url())
    yield url
    drop_postgres_database(postgres_server_url(), url)


def _allow_connections(database_url: str, allowed: bool) -> None:
    name = make_url(database_url).database or ""
    with psycopg.connect(libpq_url(postgres_server_url()), autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.Literal(allowed)
            )
        )
        if not allowed:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


def test_outage_gives_unavailable_and_the_service_recovers_by_itself(own_database: str) -> None:
    settings = Settings(database_url=own_database, storage_threads=2, log_level="ERROR")
    with (
        ServerThread(settings) as server,
        FeedbackClient(server.address, retry=RetryPolicy(max_attempts=1)) as client,
    ):
        client.log_event("u", "before")
        _allow_connections(own_database, allowed=False)
        try:
            with pytest.raises(UnavailableError) as caught:
                client.log_event("u", "during")
            with pytest.raises(UnavailableError):
                client.get_stats()
        finally:
            _allow_connections(own_database, allowed=True)

        client.log_event("u", "after")
        stats = client.get_stats().events

    assert caught.value.retry_delay == 1.0
    assert "retry later" in caught.value.message
    assert dict(stats.type_counts) == {"before": 1, "after": 1}


def test_an_export_broken_by_an_outage_resumes_from_its_last_chunk(own_database: str) -> None:
    settings = Settings(database_url=own_database, storage_threads=2, log_level="ERROR")
    with (
        ServerThread(settings) as server,
        FeedbackClient(server.address, retry=RetryPolicy(max_attempts=1)) as client,
    ):
        ids = [r.id for r in client.log_events(EventItem("u", "e") for _ in range(6000)).results]
        chunks: list[ExportChunk[Event]] = []

        def drain(export: Iterator[ExportChunk[Event]]) -> None:
            for chunk in export:
                chunks.append(chunk)

        export = client.export_events()
        chunks.append(next(export))
        _allow_connections(own_database, allowed=False)
        try:
            with pytest.raises(UnavailableError):
                drain(export)
        finally:
            _allow_connections(own_database, allowed=True)
        token = chunks[-1].resume_token
        rest = [e.id for chunk in client.export_events(resume_token=token) for e in chunk.records]

    received = [event.id for chunk in chunks for event in chunk.records]
    assert len(received) < len(ids), "the outage did not break the export"
    assert received + rest == ids


def test_the_client_resumes_an_export_across_an_outage_by_itself(own_database: str) -> None:
    settings = Settings(database_url=own_database, storage_threads=2, log_level="ERROR")
    waits: list[float] = []

    def recover(seconds: float) -> None:
        waits.append(seconds)
        _allow_connections(own_database, allowed=True)

    with (
        ServerThread(settings) as server,
        FeedbackClient(server.address, retry=RetryPolicy(sleep=recover)) as client,
    ):
        ids = [r.id for r in client.log_events(EventItem("u", "e") for _ in range(6000)).results]
        export = client.export_events()
        first = next(export)
        _allow_connections(own_database, allowed=False)
        try:
            rest = [event.id for chunk in export for event in chunk.records]
        finally:
            _allow_connections(own_database, allowed=True)

    assert len(waits) >= 1, "the outage did not break the export"
    assert [event.id for event in first.records] + rest == ids
