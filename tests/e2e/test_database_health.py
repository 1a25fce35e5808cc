"""gRPC health follows the database: NOT_SERVING while it cannot write, SERVING once it can."""

from __future__ import annotations

import dataclasses

import pytest

from llmfeedback import FeedbackClient, RetryPolicy, UnavailableError
from server.config import Settings
from tests.databases import allow_connections
from tests.e2e.health_checks import NOT_SERVING, SERVING, stays, wait_for_health
from tests.server_harness import ServerThread

pytestmark = pytest.mark.postgres


@pytest.fixture
def settings(own_database: str) -> Settings:
    """A server on its own database that checks it every second while idle."""
    return Settings(
        database_url=own_database,
        storage_threads=2,
        log_level="ERROR",
        database_probe_seconds=1.0,
    )


def test_a_failed_write_turns_health_not_serving_until_the_database_is_back(
    own_database: str, settings: Settings
) -> None:
    with (
        ServerThread(dataclasses.replace(settings, database_probe_seconds=60)) as server,
        FeedbackClient(server.address, retry=RetryPolicy(max_attempts=1)) as client,
    ):
        wait_for_health(server.address, SERVING, within=1)
        client.log_event("u", "before")
        allow_connections(own_database, allowed=False)
        try:
            with pytest.raises(UnavailableError):
                client.log_event("u", "during")
            # The failed write, not the (hourly here) idle probe, turned it.
            wait_for_health(server.address, NOT_SERVING, within=1)
            stays(server.address, NOT_SERVING, seconds=1.5)
            with pytest.raises(UnavailableError):
                client.log_event("u", "during")
        finally:
            allow_connections(own_database, allowed=True)

        # No call is needed: the probe notices by itself, within a few of its half seconds.
        wait_for_health(server.address, SERVING, within=3)
        client.log_event("u", "after")
        stats = client.get_stats().events

    assert dict(stats.type_counts) == {"before": 1, "after": 1}


def test_a_failed_read_turns_health_not_serving_too(own_database: str, settings: Settings) -> None:
    with (
        ServerThread(dataclasses.replace(settings, database_probe_seconds=60)) as server,
        FeedbackClient(server.address, retry=RetryPolicy(max_attempts=1)) as client,
    ):
        allow_connections(own_database, allowed=False)
        try:
            with pytest.raises(UnavailableError):
                client.get_stats()
            wait_for_health(server.address, NOT_SERVING, within=1)
        finally:
            allow_connections(own_database, allowed=True)
        wait_for_health(server.address, SERVING, within=3)


def test_an_idle_server_notices_an_outage_and_the_recovery(
    own_database: str, settings: Settings
) -> None:
    with ServerThread(settings) as server:
        wait_for_health(server.address, SERVING, within=1)
        allow_connections(own_database, allowed=False)
        try:
            # Not a single call: the periodic probe (every second here) finds the outage.
            waited = wait_for_health(server.address, NOT_SERVING, within=3)
        finally:
            allow_connections(own_database, allowed=True)
        wait_for_health(server.address, SERVING, within=3)

    assert waited <= 2.5
