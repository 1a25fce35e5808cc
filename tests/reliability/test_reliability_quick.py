"""Quick reliability scenarios on real server processes: the CI share of `make reliability`.

Each test runs the suite's own scenario function and checks its figures, not its timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from reliability.databases import POSTGRESQL, Database, sqlite_database
from reliability.postgres_instance import PostgresInstance, postgres_binaries_missing
from reliability.postgres_outage import postgres_outage
from reliability.profiles import QUICK
from reliability.results import PASS
from reliability.stop_signals import kill_under_load, terminate_under_load
from tests.databases import (
    create_postgres_database,
    drop_postgres_database,
    postgres_required,
    postgres_server_url,
    postgres_unreachable_reason,
)


@pytest.fixture
def shared_postgres_database() -> Iterator[Database]:
    """An empty database of its own on the shared PostgreSQL server, dropped afterwards."""
    server_url = postgres_server_url()
    reason = postgres_unreachable_reason(server_url)
    if reason is not None:
        if postgres_required():
            pytest.fail(reason)
        pytest.skip(reason)
    database_url = create_postgres_database(server_url)
    try:
        yield Database(POSTGRESQL, database_url)
    finally:
        drop_postgres_database(server_url, database_url)


def test_kill_9_on_sqlite_loses_no_acknowledged_write(tmp_path: Path) -> None:
    result = asyncio.run(
        kill_under_load(
            sqlite_database(tmp_path, "kill"),
            tmp_path,
            acknowledged_target=QUICK.kill_acknowledged,
        )
    )

    assert result.acknowledged is not None
    assert result.acknowledged >= QUICK.kill_acknowledged
    assert result.missing == 0, result.figures
    assert result.figures["write_after_restart"] == "OK"
    assert result.verdict == PASS, result.failures


def test_sigterm_drains_exits_0_and_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    result = asyncio.run(
        terminate_under_load(
            sqlite_database(tmp_path, "term"),
            tmp_path,
            acknowledged_target=QUICK.terminate_acknowledged,
        )
    )

    assert result.figures["exit_code"] == 0
    assert result.missing == 0, result.figures
    assert result.verdict == PASS, result.failures


@pytest.mark.postgres
def test_kill_9_on_postgresql_loses_no_acknowledged_write(
    tmp_path: Path, shared_postgres_database: Database
) -> None:
    result = asyncio.run(
        kill_under_load(
            shared_postgres_database, tmp_path, acknowledged_target=QUICK.kill_acknowledged
        )
    )

    assert result.missing == 0, result.figures
    assert result.verdict == PASS, result.failures


@pytest.mark.postgres
def test_postgresql_outage_fails_writes_as_unavailable_and_recovers(tmp_path: Path) -> None:
    """On a private cluster (initdb in tmp), so stopping it harms no other test."""
    missing = postgres_binaries_missing()
    if missing is not None:
        pytest.skip(missing)
    with PostgresInstance() as instance:
        result = asyncio.run(
            postgres_outage(
                instance,
                tmp_path,
                acknowledged_before=QUICK.outage_acknowledged,
                outage_seconds=QUICK.outage_seconds,
            )
        )

    failed = result.figures["writes_failed_during_outage"]
    assert set(failed) <= {"UNAVAILABLE"}, failed
    assert result.missing == 0, result.figures
    assert result.figures["recovery_write_seconds"] is not None
    assert result.verdict == PASS, result.failures
