"""Exports read one chunk ahead of the caller, never more, whatever the export's size."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from server.service.list_inputs import EventSelection, ExportRequest
from server.service.listing import EVENTS, EXPORT_CHUNK_SIZE, export
from storage import Repository, Storage
from storage.records import NewEvent

T = TypeVar("T")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    with Storage.connect(f"sqlite:///{tmp_path}/feedback.sqlite3") as connected:
        connected.migrate()
        events = [
            NewEvent(user_id="u", event_type="e", event_time=NOW, receive_time=NOW)
            for _ in range(5 * EXPORT_CHUNK_SIZE)
        ]
        connected.write(lambda repository: repository.insert_events(events))
        yield connected


class CountedReads:
    """Runs read units on a thread like FeedbackService does, counting them."""

    def __init__(self, storage: Storage, executor: ThreadPoolExecutor) -> None:
        self._storage = storage
        self._executor = executor
        self.count = 0

    async def __call__(self, work: Callable[[Repository], T]) -> T:
        self.count += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._storage.read, work)


def test_a_paused_reader_holds_the_export_at_one_chunk_ahead(storage: Storage) -> None:
    async def scenario() -> tuple[int, int, int]:
        with ThreadPoolExecutor(2) as executor:
            reads = CountedReads(storage, executor)
            chunks = export(EVENTS, ExportRequest(selection=EventSelection()), reads)
            first = await anext(chunks)
            await asyncio.sleep(0.3)  # a slow client: nothing more is asked for meanwhile
            paused = reads.count
            async for _ in chunks:
                pass
            return len(first.items), paused, reads.count

    first_size, reads_while_paused, reads_in_all = asyncio.run(scenario())

    assert first_size == EXPORT_CHUNK_SIZE
    assert reads_while_paused == 2  # the chunk sent and the one read ahead
    assert reads_in_all == 6  # five full chunks, then one read that finds nothing


def test_closing_an_export_early_drops_its_read_ahead(storage: Storage) -> None:
    async def scenario() -> tuple[int, list[object]]:
        errors: list[object] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        with ThreadPoolExecutor(2) as executor:
            reads = CountedReads(storage, executor)
            chunks = export(EVENTS, ExportRequest(selection=EventSelection()), reads)
            await anext(chunks)
            await chunks.aclose()
            await asyncio.sleep(0.3)
            return reads.count, errors

    reads, errors = asyncio.run(scenario())

    assert reads <= 2  # the read ahead may be cancelled before it even starts
    assert errors == []
