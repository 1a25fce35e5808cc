"""Storage.connect accepts the URLs operators write and refuses the rest before any I/O."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from storage import Storage, StorageError
from tests.databases import sqlite_url

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://feedback:s3cret@db.example:5432/feedback",
        "postgres://feedback:s3cret@db.example:5432/feedback",
        "postgresql+psycopg://feedback:s3cret@db.example:5432/feedback",
    ],
)
def test_postgres_urls_use_psycopg_3_and_hide_the_password(url: str) -> None:
    with Storage.connect(url) as storage:
        assert storage.dialect == "postgresql"
        assert storage.url == "postgresql+psycopg://feedback:***@db.example:5432/feedback"
        assert "s3cret" not in repr(storage)


def test_sqlite_url_creates_the_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "data" / "nested" / "feedback.sqlite3"

    with Storage.connect(sqlite_url(path)) as storage:
        assert storage.dialect == "sqlite"
        assert storage.url == sqlite_url(path)
        storage.migrate()

    assert path.is_file()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/feedback", "unsupported"),
        ("postgresql+psycopg2://postgres@localhost/feedback", "unsupported"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite:///file:feedback?mode=memory&uri=true", "in-memory"),
    ],
)
def test_unsupported_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Storage.connect(url)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sqlite_synchronous": "SOMETIMES"}, "sqlite_synchronous"),
        ({"sqlite_busy_timeout_ms": -1}, "busy_timeout"),
        ({"pool_size": 0}, "pool_size"),
    ],
)
def test_invalid_options_are_refused(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Storage.connect(sqlite_url(tmp_path / "feedback.sqlite3"), **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("level", ["OFF", "NORMAL", "FULL", "EXTRA", "normal"])
def test_every_synchronous_level_works(tmp_path: Path, level: str) -> None:
    with Storage.connect(sqlite_url(tmp_path / "f.sqlite3"), sqlite_synchronous=level) as storage:
        storage.migrate()
        storage.ping()


def test_a_closed_storage_refuses_work(tmp_path: Path) -> None:
    storage = Storage.connect(sqlite_url(tmp_path / "feedback.sqlite3"))
    storage.migrate()
    storage.close()

    with pytest.raises(StorageError, match="closed"):
        storage.ping()
