"""Duplicate-retry storms: the same write, same request_id, sent many times at once and in turn.

AIP-155 idempotency promises one stored row per request_id however often it is retried. Each
distinct request writes a unique user_id, so counting rows per user_id in the database tells how
many times the server stored it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from llmfeedback.proto.feedback.v1 import batch_pb2
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1 import feedback_service_pb2_grpc as pb_grpc
from reliability.databases import Database
from reliability.results import ScenarioResult
from reliability.server_process import ServerProcess

STORM = "retry storm"
CALL_TIMEOUT_SECONDS = 30.0
IN_FLIGHT = 64
"""Copies in flight at once across all requests of a storm."""
STORED_OUTCOMES = frozenset({batch_pb2.ITEM_OUTCOME_ACCEPTED, batch_pb2.ITEM_OUTCOME_DUPLICATE})

SendCopy = Callable[[int], Awaitable[set[str]]]
"""Sends one copy of request number n; returns the markers it acknowledged, raises RpcError."""


@dataclass(frozen=True, slots=True)
class StormPlan:
    """How big a storm is."""

    requests: int
    """Distinct requests (each its own request_id), or distinct batches."""
    concurrent: int
    """Copies of each request sent at the same moment."""
    sequential: int
    """Copies sent one after another once the concurrent ones were answered."""
    batch_items: int = 20
    """Items per LogEvents batch."""


async def retry_storms(database: Database, workdir: Path, plan: StormPlan) -> list[ScenarioResult]:
    """Unary LogEvent, unary SubmitFeedback and batch LogEvents storms on one server."""
    prefix = f"storm-{secrets.token_hex(3)}"
    server = ServerProcess(database.url, workdir / f"{prefix}.log")
    results: list[ScenarioResult] = []
    try:
        server.start()
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.FeedbackServiceStub(channel)
            for name, table, send, markers in (
                ("LogEvent", "events", *_log_event(stub, f"{prefix}-ev", plan)),
                ("SubmitFeedback", "feedback", *_submit_feedback(stub, f"{prefix}-fb", plan)),
                ("LogEvents batch", "events", *_log_events(stub, f"{prefix}-bt", plan)),
            ):
                started = time.monotonic()
                result = ScenarioResult(f"{STORM} {name}", database.kind)
                codes, acknowledged = await _storm(send, plan)
                stored = database.values_with_prefix(table, "user_id", markers)
                _judge(result, plan, codes, acknowledged, stored)
                if table == "events" and name.endswith("batch"):
                    result.figures["batches"] = plan.requests
                result.seconds = time.monotonic() - started
                results.append(result)
    finally:
        server.stop()
    return results


async def _storm(send: SendCopy, plan: StormPlan) -> tuple[Counter[str], set[str]]:
    """Every request's copies: `concurrent` at once, then `sequential` in turn."""
    codes: Counter[str] = Counter()
    acknowledged: set[str] = set()
    gate = asyncio.Semaphore(max(1, IN_FLIGHT // plan.concurrent))

    async def copy(number: int) -> None:
        try:
            acknowledged.update(await send(number))
        except grpc.RpcError as error:
            codes[error.code().name] += 1
        else:
            codes["OK"] += 1

    async def one_request(number: int) -> None:
        async with gate:
            await asyncio.gather(*(copy(number) for _ in range(plan.concurrent)))
            for _ in range(plan.sequential):
                await copy(number)

    await asyncio.gather(*(one_request(number) for number in range(plan.requests)))
    return codes, acknowledged


def _judge(
    result: ScenarioResult,
    plan: StormPlan,
    codes: Counter[str],
    acknowledged: set[str],
    stored: Counter[str],
) -> None:
    """One row per acknowledged request: more is a duplicate, none is a loss."""
    duplicates = sum(rows - 1 for rows in stored.values() if rows > 1)
    missing = acknowledged - stored.keys()
    result.acknowledged = len(acknowledged)
    result.missing = len(missing)
    result.figures["distinct_requests"] = len(acknowledged | stored.keys())
    result.figures["copies_each"] = plan.concurrent + plan.sequential
    result.figures["rows_stored"] = sum(stored.values())
    result.figures["duplicates_stored"] = duplicates
    result.figures["max_rows_per_request"] = max(stored.values(), default=0)
    result.figures["codes"] = dict(codes)
    result.check(not missing, f"{len(missing)} acknowledged requests have no row")
    result.check(duplicates == 0, f"{duplicates} duplicate rows stored for retried request_ids")
    result.check(bool(acknowledged), "no copy of any request was acknowledged")


def _log_event(
    stub: pb_grpc.FeedbackServiceAsyncStub, marker: str, plan: StormPlan
) -> tuple[SendCopy, str]:
    requests = [
        pb.LogEventRequest(
            user_id=f"{marker}{number}", event_type="storm.retry", request_id=str(uuid.uuid4())
        )
        for number in range(plan.requests)
    ]

    async def send(number: int) -> set[str]:
        await stub.LogEvent(requests[number], timeout=CALL_TIMEOUT_SECONDS)
        return {requests[number].user_id}

    return send, marker


def _submit_feedback(
    stub: pb_grpc.FeedbackServiceAsyncStub, marker: str, plan: StormPlan
) -> tuple[SendCopy, str]:
    requests = [
        pb.SubmitFeedbackRequest(
            conversation_id=f"{marker}-c{number}",
            user_id=f"{marker}{number}",
            score=4,
            request_id=str(uuid.uuid4()),
        )
        for number in range(plan.requests)
    ]

    async def send(number: int) -> set[str]:
        await stub.SubmitFeedback(requests[number], timeout=CALL_TIMEOUT_SECONDS)
        return {requests[number].user_id}

    return send, marker


def _log_events(
    stub: pb_grpc.FeedbackServiceAsyncStub, marker: str, plan: StormPlan
) -> tuple[SendCopy, str]:
    batches = [
        pb.LogEventsRequest(
            events=[
                pb.LogEventRequest(
                    user_id=f"{marker}{number}-{item}",
                    event_type="storm.batch",
                    event_id=f"{marker}{number}-{item}",
                    request_id=str(uuid.uuid4()),
                )
                for item in range(plan.batch_items)
            ]
        )
        for number in range(plan.requests)
    ]

    async def send(number: int) -> set[str]:
        batch = batches[number]
        response = await stub.LogEvents(batch, timeout=CALL_TIMEOUT_SECONDS)
        return {
            batch.events[result.index].user_id
            for result in response.results
            if result.outcome in STORED_OUTCOMES
        }

    return send, marker
