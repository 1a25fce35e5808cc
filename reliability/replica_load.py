"""Mixed interaction and feedback writes against several replicas of one PostgreSQL database.

Every writer shares a handful of conversations, models and users, and votes on the same recent
messages, so the group-commit batches of different replicas touch the same rollup cells, key
spans and vote rows at the same time: the load under which a lock-order inversion deadlocks.
Every write carries its own request_id, which is what the database is checked for afterwards.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2

from llmfeedback.proto.feedback.v1 import batch_pb2, feedback_pb2
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1 import feedback_service_pb2_grpc as pb_grpc
from reliability.databases import libpq_url

CONVERSATIONS = 4
MODELS = 3
USERS = 4
RECENT_MESSAGES = 40
"""Votes go to one of the newest messages, so both replicas replace the same votes."""
HOURS_BACK = 5
"""Interactions happen up to this many hours ago: a batch touches several hour cells."""
MAX_BATCH_ITEMS = 20
CALL_TIMEOUT_SECONDS = 10.0
STORED_OUTCOMES = frozenset({batch_pb2.ITEM_OUTCOME_ACCEPTED, batch_pb2.ITEM_OUTCOME_DUPLICATE})

T = TypeVar("T")


@dataclass(slots=True)
class MixedLog:
    """What the writers saw: request ids acknowledged per table, and every failed write."""

    interactions: set[str] = field(default_factory=set)
    feedback: set[str] = field(default_factory=set)
    failures: Counter[str] = field(default_factory=Counter)
    """Status code of every write (a call, or one item of a batch) that was not stored."""
    calls: int = 0


@dataclass(frozen=True, slots=True)
class StoredWrites:
    """What the database holds, counted with psycopg around the service."""

    interactions: Counter[str]
    """Rows per request_id in interactions."""
    feedback: Counter[str]
    """Rows per request_id in feedback and feedback_history together (a replaced vote moves)."""
    rollup_totals: dict[str, tuple[int, int]]
    """Per raw table: (its row count, the all-time count its rollup holds); equal when exact."""


class MixedLoad:
    """`writers_per_address` writers per replica sending mixed single and batch writes."""

    def __init__(self, addresses: Sequence[str], *, writers_per_address: int, seed: int) -> None:
        self.addresses = list(addresses)
        self.writers_per_address = writers_per_address
        self.log = MixedLog()
        self._random = random.Random(seed)
        self._messages: list[str] = []

    async def run(self, seconds: float) -> MixedLog:
        """Write from every writer for `seconds`, then let each finish its call in flight."""
        stop_at = time.monotonic() + seconds
        channels = [grpc.aio.insecure_channel(address) for address in self.addresses]
        try:
            stubs = [pb_grpc.FeedbackServiceStub(channel) for channel in channels]
            await asyncio.gather(
                *(
                    self._writer(stub, stop_at)
                    for stub in stubs
                    for _ in range(self.writers_per_address)
                )
            )
        finally:
            for channel in channels:
                await channel.close(None)
        return self.log

    async def _writer(self, stub: pb_grpc.FeedbackServiceAsyncStub, stop_at: float) -> None:
        while time.monotonic() < stop_at:
            self.log.calls += 1
            choice = self._random.random()
            if choice < 0.3:
                await self._interactions(stub, [self._interaction()], batch=False)
            elif choice < 0.45:
                await self._interactions(stub, self._many(self._interaction), batch=True)
            elif choice < 0.75:
                await self._feedback(stub, [self._rating()], batch=False)
            else:
                await self._feedback(stub, self._many(self._rating), batch=True)

    def _many(self, make: Callable[[], T]) -> list[T]:
        return [make() for _ in range(self._random.randint(2, MAX_BATCH_ITEMS))]

    def _interaction(self) -> pb.RecordInteractionRequest:
        pick = self._random
        occur_time = Timestamp()
        occur_time.FromDatetime(
            datetime.now(UTC) - timedelta(minutes=pick.uniform(0, HOURS_BACK * 60))
        )
        return pb.RecordInteractionRequest(
            conversation_id=f"conversation-{pick.randrange(CONVERSATIONS)}",
            message_id=f"message-{uuid.uuid4()}",
            user_id=f"user-{pick.randrange(USERS)}",
            model=f"model-{pick.randrange(MODELS)}",
            input_text="question",
            output_text="answer",
            latency_ms=pick.uniform(10, 2000),
            total_tokens=pick.randint(1, 4000),
            occur_time=occur_time,
            request_id=str(uuid.uuid4()),
        )

    def _rating(self) -> pb.SubmitFeedbackRequest:
        """Half votes on a recent message (replacing the user's last vote on it), half ratings
        of a whole conversation; the user and model come from the rated interaction."""
        pick = self._random
        request_id = str(uuid.uuid4())
        if self._messages and pick.random() < 0.5:
            return pb.SubmitFeedbackRequest(
                message_id=pick.choice(self._messages[-RECENT_MESSAGES:]),
                thumb=pick.choice((feedback_pb2.THUMB_UP, feedback_pb2.THUMB_DOWN)),
                latency_ms=pick.uniform(10, 2000),
                request_id=request_id,
            )
        return pb.SubmitFeedbackRequest(
            conversation_id=f"conversation-{pick.randrange(CONVERSATIONS)}",
            score=pick.randint(1, 5),
            text=pick.choice(("", "helpful")),
            tokens_used=pick.randint(1, 4000),
            request_id=request_id,
        )

    async def _interactions(
        self,
        stub: pb_grpc.FeedbackServiceAsyncStub,
        requests: Sequence[pb.RecordInteractionRequest],
        *,
        batch: bool,
    ) -> None:
        try:
            if batch:
                response = await stub.RecordInteractions(
                    pb.RecordInteractionsRequest(interactions=requests),
                    timeout=CALL_TIMEOUT_SECONDS,
                )
                stored = self._settle(requests, response.results)
            else:
                await stub.RecordInteraction(requests[0], timeout=CALL_TIMEOUT_SECONDS)
                stored = list(requests)
        except grpc.RpcError as error:
            self.log.failures[error.code().name] += len(requests)
            return
        for request in stored:
            self.log.interactions.add(request.request_id)
            self._messages.append(request.message_id)

    async def _feedback(
        self,
        stub: pb_grpc.FeedbackServiceAsyncStub,
        requests: Sequence[pb.SubmitFeedbackRequest],
        *,
        batch: bool,
    ) -> None:
        try:
            if batch:
                response = await stub.SubmitFeedbackBatch(
                    pb.SubmitFeedbackBatchRequest(feedback=requests), timeout=CALL_TIMEOUT_SECONDS
                )
                stored = self._settle(requests, response.results)
            else:
                await stub.SubmitFeedback(requests[0], timeout=CALL_TIMEOUT_SECONDS)
                stored = list(requests)
        except grpc.RpcError as error:
            self.log.failures[error.code().name] += len(requests)
            return
        self.log.feedback.update(request.request_id for request in stored)

    def _settle(
        self, requests: Sequence[T], results: Sequence[batch_pb2.BatchItemResult]
    ) -> list[T]:
        """The items a batch stored; the others count as failures by their status code."""
        stored = []
        for result in results:
            if result.outcome in STORED_OUTCOMES:
                stored.append(requests[result.index])
            else:
                self.log.failures[code_pb2.Code.Name(result.error.code)] += 1
        return stored


def postgres_deadlocks(database_url: str, *, settle_seconds: float = 0.0) -> int:
    """Deadlocks PostgreSQL has detected in this database since it was created.

    A session may hold its counts back for a while and reports them when it ends at the latest,
    so with `settle_seconds` this first waits (up to that long) for every other session to end.
    """
    with psycopg.connect(libpq_url(database_url), connect_timeout=5, autocommit=True) as connection:
        give_up_at = time.monotonic() + settle_seconds
        while time.monotonic() < give_up_at:
            others = connection.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            if others is None or others[0] == 0:
                break
            time.sleep(0.05)
        connection.execute("SELECT pg_stat_clear_snapshot()")
        row = connection.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row is not None else 0


def stored_writes(database_url: str) -> StoredWrites:
    """Count rows per request id, and compare each raw table with its all-time rollup."""
    with psycopg.connect(libpq_url(database_url), connect_timeout=5) as connection:
        interactions: Counter[str] = Counter(
            dict(
                connection.execute(
                    "SELECT request_id, count(*) FROM interactions GROUP BY request_id"
                ).fetchall()
            )
        )
        feedback: Counter[str] = Counter(
            dict(
                connection.execute(
                    "SELECT request_id, count(*) FROM (SELECT request_id FROM feedback"
                    " UNION ALL SELECT request_id FROM feedback_history) AS stored"
                    " GROUP BY request_id"
                ).fetchall()
            )
        )
        totals: dict[str, tuple[int, int]] = {}
        for raw, rollup in (
            ("feedback", "feedback_rollups"),
            ("interactions", "interaction_rollups"),
        ):
            # Level 3 is all time, dimension 0 is "all": one cell that counts every row.
            (rows,) = connection.execute(f"SELECT count(*) FROM {raw}").fetchone() or (0,)
            (counted,) = connection.execute(
                f"SELECT coalesce(sum(total_count), 0) FROM {rollup}"
                " WHERE level = 3 AND dimension = 0"
            ).fetchone() or (0,)
            totals[raw] = (int(rows), int(counted))
    return StoredWrites(interactions, feedback, totals)
