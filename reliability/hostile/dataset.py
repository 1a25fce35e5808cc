"""The seeded SQLite file every hostile phase starts from: enough rows that an export streams
for a while (chunks of 1000), loaded once through Ingest and copied for each server."""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from llmfeedback import EventItem, FeedbackClient, FeedbackItem
from reliability.databases import Database
from reliability.hostile.server import HostileServer

SEED_USER_PREFIX = "seed-"
"""user_id prefix of seeded rows, so rows a phase writes are told apart from them."""


@dataclass(frozen=True, slots=True)
class Dataset:
    """A seeded SQLite file and what it holds."""

    path: Path
    events: int
    feedback: int

    def copy_to(self, directory: Path, name: str) -> str:
        """A private copy of the file for one server; returns its SQLAlchemy URL."""
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{name}.sqlite3"
        shutil.copyfile(self.path, target)
        return f"sqlite:///{target}"


def seed(directory: Path, *, events: int, feedback: int) -> Dataset:
    """Start a server on a new file in `directory`, Ingest the rows, stop it cleanly."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "seeded.sqlite3"
    server = HostileServer(f"sqlite:///{path}", directory / "seed.log").start()
    try:
        client = FeedbackClient(server.address, timeout=120)
        items: list[EventItem | FeedbackItem] = [
            EventItem(f"{SEED_USER_PREFIX}u{number % 500}", "view") for number in range(events)
        ]
        items += [
            FeedbackItem(
                conversation_id=f"seed-c{number}",
                message_id=f"seed-m{number}",
                user_id=f"{SEED_USER_PREFIX}f{number}",
                score=1 + number % 5,
            )
            for number in range(feedback)
        ]
        with client:
            result = client.ingest(items, timeout=300)
        if result.accepted_count != events + feedback:
            raise RuntimeError(f"seeding stored {result.accepted_count} of {events + feedback}")
    finally:
        exit_code = server.stop()
    if exit_code != 0:
        raise RuntimeError(f"the seeding server exited with {exit_code}")
    # A clean stop checkpoints the WAL into the file; make sure, so a plain copy is complete.
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return Dataset(path, events, feedback)


def count_rows_with_prefix(database_url: str, table: str, prefix: str) -> dict[str, int]:
    """Rows per user_id starting with `prefix`, straight from the file with sqlite3."""
    counted = Database("sqlite", database_url).values_with_prefix(table, "user_id", prefix)
    return dict(counted)
