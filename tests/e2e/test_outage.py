"""A database outage is an error the client sees and may retry, never a silent loss."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from llmfeedback import FeedbackClient, RetryPolicy, UnavailableError
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
