"""Time of a ListFeedback page bounded by end_time, 10, 50 and 90 % back, after a bulk load.

Rows loaded within one minute of times (an import) used to make such a page cost in proportion
to the rows newer than its end; it must cost the same at any depth. Run before and after a
change to storage.rows.listing:
`python -m bench.list_depth [--rows N] [--postgres URL_OF_AN_EMPTY_DATABASE]`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from storage import Storage
from storage.records import FeedbackFilter, Keyset, NewFeedback, Score

if TYPE_CHECKING:
    from storage.rows.repository import Repository

T0 = datetime(2026, 12, 1, tzinfo=UTC)
SPAN = timedelta(minutes=1)
"""Every row's time falls within this much of T0."""
CHUNK = 5_000
"""Rows per write transaction while loading."""
DEPTHS = (0.1, 0.5, 0.9)
"""How far back from the newest row each page's end_time lies, as a share of the rows."""
PAGE = 50
ROUNDS = 31


def _time(index: int, rows: int) -> datetime:
    return T0 + SPAN * index / rows


def load(storage: Storage, rows: int) -> None:
    """Insert `rows` feedback entries whose times grow with their ids over SPAN."""
    for start in range(0, rows, CHUNK):
        news = [
            NewFeedback(
                conversation_id=f"conv-{index % 997}",
                user_id=f"user-{index % 113}",
                model=f"model-{index % 3}",
                rating=Score(index % 5 + 1),
                create_time=_time(index, rows),
            )
            for index in range(start, min(rows, start + CHUNK))
        ]
        storage.write(partial(_insert, news))


def _insert(news: list[NewFeedback], repository: Repository) -> None:
    repository.insert_feedback_entries(news)


def page_milliseconds(storage: Storage, end_time: datetime) -> float:
    """p50 over ROUNDS of one newest-first page of PAGE entries created before `end_time`."""
    selection, keyset = FeedbackFilter(end_time=end_time), Keyset(limit=PAGE)
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        page = storage.read(lambda repository: repository.feedback_entries(selection, keyset))
        samples.append((time.perf_counter() - started) * 1000)
        assert len(page) == PAGE
    return statistics.median(samples)


def measure(url: str, rows: int) -> None:
    """Load `rows` into the (empty) database at `url` and print the page times."""
    storage = Storage.connect(url)
    try:
        storage.migrate()
        started = time.perf_counter()
        load(storage, rows)
        print(f"{url.split(':')[0]}: loaded {rows:,} rows in {time.perf_counter() - started:.0f} s")
        for depth in DEPTHS:
            end_time = _time(round(rows * (1 - depth)), rows)
            milliseconds = page_milliseconds(storage, end_time)
            print(f"  {depth:4.0%} back by end_time: p50 {milliseconds:7.2f} ms per {PAGE} rows")
    finally:
        storage.close()


def main() -> None:
    """Measure on a scratch SQLite file, and on PostgreSQL if given."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--postgres", help="also measure on this empty PostgreSQL database")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        measure(f"sqlite:///{directory}/list_depth.db", arguments.rows)
    if arguments.postgres:
        measure(arguments.postgres, arguments.rows)


if __name__ == "__main__":
    main()
