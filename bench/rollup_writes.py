"""CPU the rollup upkeep costs per write batch, in one process, on an in-memory SQLite database.

The server's write path pays for RollupChanges.apply() in every transaction; this isolates that
cost from gRPC and the raw inserts, so a change to the rollups can be judged by two numbers:
process CPU per batch of one record and per extra record of a 64-record batch.

    .venv/bin/python -m bench.rollup_writes [--batches N]
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.pool import StaticPool

from storage.aggregates.kinds import FEEDBACK, INTERACTIONS
from storage.aggregates.sql import SqlTarget
from storage.aggregates.write import RollupChanges
from storage.records import FeedbackRecord, InteractionRecord, Score
from storage.schema.models import Base

_START = datetime(2026, 11, 30, 22, tzinfo=UTC)


def _feedback(rng: random.Random, record_id: int) -> FeedbackRecord:
    """One scored feedback entry with a latency and tokens, in one of a few hours."""
    return FeedbackRecord(
        id=record_id,
        conversation_id=f"c{rng.randrange(10_000)}",
        user_id=f"u{rng.randrange(500)}",
        model=rng.choice(("m1", "m2", "m3")),
        rating=Score(rng.randint(1, 5)),
        latency_ms=rng.uniform(50, 5_000),
        tokens_used=rng.randrange(10, 4_000),
        create_time=_START + timedelta(seconds=rng.randrange(4 * 3600)),
    )


def _interaction(rng: random.Random, record_id: int) -> InteractionRecord:
    """One interaction with a latency and tokens."""
    moment = _START + timedelta(seconds=rng.randrange(4 * 3600))
    return InteractionRecord(
        id=record_id,
        conversation_id=f"c{rng.randrange(10_000)}",
        user_id=f"u{rng.randrange(500)}",
        model=rng.choice(("m1", "m2", "m3")),
        latency_ms=rng.uniform(50, 5_000),
        total_tokens=rng.randrange(10, 4_000),
        occur_time=moment,
        create_time=moment,
    )


def cpu_per_batch(batch_size: int, batches: int, *, seed: int = 7) -> float:
    """Mean process CPU (microseconds) of applying one batch of feedback and interactions."""
    engine = create_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(engine)
    raw = engine.raw_connection().driver_connection
    assert raw is not None

    def execute(sql: str, parameters: tuple[object, ...]) -> list[Any]:
        return list(raw.execute(sql, parameters).fetchall())

    target = SqlTarget(execute, "sqlite")
    rng = random.Random(seed)
    next_id = 1
    elapsed = 0.0
    for _ in range(batches):
        changes = RollupChanges()
        feedback = [_feedback(rng, next_id + index) for index in range(batch_size)]
        interactions = [_interaction(rng, next_id + index) for index in range(batch_size)]
        next_id += batch_size
        raw.execute("BEGIN")
        started = time.process_time()
        changes.add(INTERACTIONS, interactions, 1)
        changes.add(FEEDBACK, feedback, 1)
        changes.apply(target)
        elapsed += time.process_time() - started
        raw.execute("COMMIT")
    engine.dispose()
    return elapsed / batches * 1e6


def main() -> None:
    """Print CPU per batch of 1 and of 64 records (of each kind), and the cost per extra row."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2_000)
    arguments = parser.parse_args()
    single = cpu_per_batch(1, arguments.batches)
    wide = cpu_per_batch(64, max(1, arguments.batches // 8))
    per_row = (wide - single) / 63
    print(f"batch of 1 feedback + 1 interaction: {single:8.1f} us CPU")
    print(f"batch of 64 + 64:                    {wide:8.1f} us CPU")
    print(f"per extra record pair:               {per_row:8.1f} us CPU")


if __name__ == "__main__":
    main()
