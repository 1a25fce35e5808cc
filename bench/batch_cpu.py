"""CPU per group-commit batch of ratings on SQLite and PostgreSQL: what one commit costs.

Group commit's single writer thread spends this much CPU per transaction, so it bounds the
writes a server can take; run before and after a change to the rows layer to see its cost.
`python -m bench.batch_cpu [--postgres URL]` prints microseconds of process time per batch.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

from server.service.group_commit import Job
from server.service.write_rules import FEEDBACK, INTERACTION, Rules, apply_batch
from storage import Storage
from storage.records import NewFeedback, NewInteraction, Score

if TYPE_CHECKING:
    from server.service.ports import BatchRepository

NOW = datetime(2026, 12, 1, tzinfo=UTC)
RULES = Rules(accept_unknown_conversations=True)


def _batches(loop: asyncio.AbstractEventLoop, run: str, size: int, rounds: int) -> list[list[Job]]:
    """`rounds` batches of `size` votes on recorded messages, half of them replacing a vote."""
    batches = []
    for number in range(rounds):
        items = [
            NewFeedback(
                conversation_id="c",
                message_id=f"{run}-m{index % 50}",
                user_id=f"u{number % 2}-{index}",
                rating=Score(1 + index % 5),
                create_time=NOW,
            )
            for index in range(size)
        ]
        batches.append([Job(FEEDBACK, items, loop.create_future())])
    return batches


def _apply(repository: BatchRepository, *, batch: list[Job]) -> None:
    apply_batch(repository, batch, RULES)


def measure(url: str, size: int, rounds: int) -> float:
    """Median microseconds of CPU to apply and commit one batch of `size` ratings."""
    loop = asyncio.new_event_loop()
    run = uuid.uuid4().hex[:8]  # fresh message ids, so a database need not be emptied
    storage = Storage.connect(url)
    storage.migrate()
    writer = storage.dedicated_writer()
    try:
        interactions = [
            NewInteraction(
                conversation_id="c", message_id=f"{run}-m{n}", occur_time=NOW, create_time=NOW
            )
            for n in range(50)
        ]
        setup = Job(INTERACTION, interactions, loop.create_future())
        setup.reset()
        writer.write(lambda repository: apply_batch(repository, [setup], RULES))
        spent = []
        for batch in _batches(loop, run, size, rounds):
            for job in batch:
                job.reset()
            started = time.process_time()
            writer.write(partial(_apply, batch=batch))
            spent.append(time.process_time() - started)
        return statistics.median(spent) * 1e6
    finally:
        writer.close()
        storage.close()
        loop.close()


def main() -> None:
    """Print the CPU per batch of 10 and of 500 ratings."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", help="also measure on this (emptied) PostgreSQL database")
    parser.add_argument("--rounds", type=int, default=200)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        for size in (10, 500):
            url = f"sqlite:///{directory}/batch-{size}.sqlite3"
            cpu = measure(url, size, arguments.rounds)
            print(f"sqlite   batch of {size:>3}: {cpu:8.0f} us CPU")
    if arguments.postgres:
        for size in (10, 500):
            cpu = measure(arguments.postgres, size, arguments.rounds)
            print(f"postgres batch of {size:>3}: {cpu:8.0f} us CPU")


if __name__ == "__main__":
    main()
