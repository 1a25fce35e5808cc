"""A database outage is an error the client sees and may retry, never a silent loss."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmfeedback import (
    Event,
    EventItem,
    ExportChunk,
    FeedbackClient,
    RetryPolicy,
    UnavailableError,
)
from server.config import Settings
from tests.databases import allow_connections
from tests.server_harness import ServerThread

pytestmark = pytest.mark.postgres


def test_outage_gives_unavailable_and_the_service_recovers_by_itself(own_database: str) -> None:
    settings = Settings(database_url=own_database, storage_threads=2, log_level="ERROR")
    with (
        ServerThread(settings) as server,
        FeedbackClient(server.address, retry=RetryPolicy(max_attempts=1)) as client,
    ):
        client.log_event("u", "before")
        allow_connections(own_database, allowed=False)
        try:
            with pytest.raises(UnavailableError) as caught:
                client.log_event("u", "during")
            with pytest.raises(UnavailableError):
                client.get_stats()
        finally:
            allow_connections(own_database, allowed=True)

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
        # Twenty chunks: more than HTTP/2 flow control lets the server send ahead of the reader.
        ids = [r.id for r in client.log_events(EventItem("u", "e") for _ in range(20000)).results]
        chunks: list[ExportChunk[Event]] = []

        def drain(export: Iterator[ExportChunk[Event]]) -> None:
            for chunk in export:
                chunks.append(chunk)

        export = client.export_events()
        chunks.append(next(export))
        allow_connections(own_database, allowed=False)
        try:
            with pytest.raises(UnavailableError):
                drain(export)
        finally:
            allow_connections(own_database, allowed=True)
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
        allow_connections(own_database, allowed=True)

    with (
        ServerThread(settings) as server,
        FeedbackClient(server.address, retry=RetryPolicy(sleep=recover)) as client,
    ):
        ids = [r.id for r in client.log_events(EventItem("u", "e") for _ in range(6000)).results]
        # The outage starts before the first read: once chunks flow, HTTP/2 flow control lets
        # the server send the rest ahead of the reader, which would make the outage a race.
        allow_connections(own_database, allowed=False)
        try:
            received = [event.id for chunk in client.export_events() for event in chunk.records]
        finally:
            allow_connections(own_database, allowed=True)

    assert len(waits) >= 1, "the outage did not break the export"
    assert received == ids
