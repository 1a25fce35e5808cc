"""The embedded database is private to the server's user: 0600 files, 0700 new directories."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage import Storage
from tests.databases import sqlite_url


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The usual umask, under which plain file creation gives 0644."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_database_its_wal_and_its_directories_are_private(tmp_path: Path) -> None:
    database = tmp_path / "new" / "data" / "feedback.sqlite3"

    with Storage.connect(sqlite_url(database)) as storage:
        storage.migrate()
        storage.write(
            lambda repository: repository.api_keys.record_use({"fbk_00000000"}, datetime.now(UTC))
        )
        sidecars = [database.with_name(database.name + suffix) for suffix in ("-wal", "-shm")]
        assert all(path.exists() for path in sidecars)
        assert {_mode(path) for path in sidecars} == {0o600}

    assert _mode(database) == 0o600
    assert _mode(database.with_name(database.name + ".migrate-lock")) == 0o600
    assert _mode(database.parent) == 0o700
    assert _mode(database.parent.parent) == 0o700


def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)

    with Storage.connect(sqlite_url(shared / "feedback.sqlite3")) as storage:
        storage.migrate()

    assert _mode(shared) == 0o755
    assert _mode(shared / "feedback.sqlite3") == 0o600
