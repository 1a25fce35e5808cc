"""Database fixtures shared by every test suite: each test gets a migrated, empty database."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

import pytest

from storage import Storage
from tests.databases import (
    create_postgres_database,
    drop_postgres_database,
    empty_postgres_tables,
    postgres_required,
    postgres_server_url,
    postgres_unreachable_reason,
    sqlite_url,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """A migrated PostgreSQL database for this test session, dropped at its end.

    Skips (or fails, with FEEDBACK_REQUIRE_POSTGRES=1) when no server answers.
    """
    server_url = postgres_server_url()
    reason = postgres_unreachable_reason(server_url)
    if reason is not None:
        if postgres_required():
            pytest.fail(reason)
        pytest.skip(reason)
    database_url = create_postgres_database(server_url)
    try:
        with Storage.connect(database_url) as storage:
            storage.migrate()
        yield database_url
    finally:
        drop_postgres_database(server_url, database_url)


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session: tests get copies, the same bytes a fresh
    migration writes, without paying for the migration each time."""
    path = tmp_path_factory.mktemp("migrated-sqlite") / "feedback.sqlite3"
    with Storage.connect(sqlite_url(path)) as storage:
        storage.migrate()
    # Closing the last connection checkpoints the WAL into the file, so the file is the whole
    # database; a leftover WAL would mean a copy of the file alone misses rows.
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(("-wal", "-shm"))]
    assert not leftovers, f"the migrated SQLite file is not self-contained: {leftovers}"
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, migrated_sqlite_file: Path) -> str:
    """The URL of a migrated database with no rows, once per supported database."""
    if request.param == "sqlite":
        path = tmp_path / "feedback.sqlite3"
        shutil.copyfile(migrated_sqlite_file, path)
        return sqlite_url(path)
    # Looked up lazily so a SQLite-only run never touches PostgreSQL.
    postgres_url: str = request.getfixturevalue("postgres_database_url")
    empty_postgres_tables(postgres_url)
    return postgres_url


@pytest.fixture
def storage(database_url: str) -> Iterator[Storage]:
    """A Storage connected to the test's empty database, closed afterwards."""
    with Storage.connect(database_url) as connected:
        yield connected


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """One worker more than the cores (--numprocesses=auto), still capped by --maxprocesses.

    Many tests spend seconds waiting (rate-limited streams, stall timeouts, server processes
    starting, kill and restart), so a worker per core leaves a core idle for much of the run.
    Measured on 2 cores: 2 workers 247 s, 3 workers 204 s, 4 workers 242 s (more contention).
    """
    return len(os.sched_getaffinity(0)) + 1


LONGEST_FIRST = (
    "tests/bench/test_bench_smoke.py",
    "tests/reliability/",
    "tests/hostile/",
    "tests/fuzz/test_requests.py",
    "tests/storage/test_listing_depth.py",
    "tests/e2e/test_replica_deadlocks.py",
    "tests/e2e/test_ingest_clock.py",
    "tests/fuzz/",
    "tests/bench/",
    "tests/e2e/test_process.py",
    "tests/e2e/test_node_client.py",
)
"""Modules and folders whose modules take tens of seconds each (benchmark runs, killed
processes, abuse phases, hypothesis, bulk loads), longest first as measured: started first, so no
worker is left with one of them at the end. pytest-xdist hands out modules in this order only
with --no-loadscope-reorder (pyproject.toml)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run `database_independent` tests on SQLite only (their PostgreSQL runs prove nothing more),
    leave `alone` tests to a run in one process, and start the longest folders first
    (pytest-xdist hands out modules in this order)."""
    parallel = int(getattr(config, "workerinput", {}).get("workercount", 1)) > 1
    dropped = [
        item
        for item in items
        if _runs_on_postgresql_for_nothing(item)
        or (parallel and item.get_closest_marker("alone") is not None)
    ]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    kept = [item for item in items if item not in dropped]
    items[:] = sorted(kept, key=_longest_first_rank)  # stable: the order within a folder is kept


def _runs_on_postgresql_for_nothing(item: pytest.Item) -> bool:
    """Whether a database_independent test is here with its PostgreSQL parameter."""
    callspec = getattr(item, "callspec", None)
    on_postgresql = callspec is not None and callspec.params.get("database_url") == "postgresql"
    return on_postgresql and item.get_closest_marker("database_independent") is not None


def _longest_first_rank(item: pytest.Item) -> int:
    """Where the test's module or folder first comes in LONGEST_FIRST, after them all when it
    is not there."""
    nodeid = item.nodeid
    return next(
        (rank for rank, prefix in enumerate(LONGEST_FIRST) if nodeid.startswith(prefix)),
        len(LONGEST_FIRST),
    )
