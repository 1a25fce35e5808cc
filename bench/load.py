"""Python load client for what h2load cannot do: read gRPC statuses, send batches and streams.

It checks the gRPC status of unary calls, sends LogEvents batches from several concurrent callers
and one long Ingest stream. Requests are serialized once and sent as bytes, so the client spends
its core on the calls, not on protobuf.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import grpc

from bench import payloads
from bench.percentiles import percentile
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb

UNAVAILABLE = "unavailable"
OK = "ok"
ERROR = "error"


@dataclass(slots=True)
class StatusCheckRun:
    """How many unary calls ended with each gRPC status code."""

    requests: int
    codes: Counter[str] = field(default_factory=Counter)

    @property
    def acknowledged(self) -> int:
        """Calls answered OK: writes the server promised to keep."""
        return self.codes["OK"]


@dataclass(slots=True)
class IngestionRun:
    """Outcome of a batch or stream phase: items sent, items acknowledged, wall time."""

    status: str = OK
    """"ok", "unavailable" (the server answers UNIMPLEMENTED) or "error"."""
    detail: str = ""
    items_sent: int = 0
    acknowledged: int = 0
    """Items the server reported stored (accepted_count) in OK responses."""
    rejected: int = 0
    seconds: float = 0.0
    call_latencies_ms: list[float] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float | None:
        """Acknowledged items per second of the whole phase."""
        if self.status == UNAVAILABLE or self.seconds <= 0:
            return None
        return self.acknowledged / self.seconds

    def latency_ms(self, fraction: float) -> float | None:
        """A percentile of per-call latency, None without calls."""
        if not self.call_latencies_ms:
            return None
        return percentile(sorted(self.call_latencies_ms), fraction)

    def fail(self, error: grpc.RpcError) -> None:
        """Record the first failure; UNIMPLEMENTED means the server lacks the RPC."""
        if self.status != OK:
            return
        code = error.code()
        self.status = UNAVAILABLE if code == grpc.StatusCode.UNIMPLEMENTED else ERROR
        self.detail = f"{code.name}: {error.details()}"


async def status_check(
    address: str,
    call: payloads.UnaryCall,
    *,
    requests: int,
    concurrency: int,
    metadata: Sequence[tuple[str, str]] = (),
) -> StatusCheckRun:
    """Send h2load's exact request `requests` times and count the gRPC status of every answer;
    `metadata` (an authorization, say) goes with every call, as h2load's extra headers do."""
    body = call.request.SerializeToString()
    call_metadata = tuple(metadata)
    run = StatusCheckRun(requests=requests)
    remaining = iter(range(requests))
    async with grpc.aio.insecure_channel(address) as channel:
        method = channel.unary_unary(call.path, None, None)

        async def caller() -> None:
            for _ in remaining:
                try:
                    await method(body, timeout=30, metadata=call_metadata)
                except grpc.RpcError as error:
                    run.codes[error.code().name] += 1
                else:
                    run.codes["OK"] += 1

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return run


async def log_events_batches(
    address: str, *, batch_size: int, batches: int, callers: int, timeout_seconds: float
) -> IngestionRun:
    """`callers` concurrent callers send `batches` LogEvents calls of `batch_size` events in all."""
    body = payloads.log_events_request(batch_size).SerializeToString()
    run = IngestionRun()
    remaining = iter(range(batches))
    async with grpc.aio.insecure_channel(address) as channel:
        method = channel.unary_unary(
            payloads.LOG_EVENTS_PATH, None, pb.LogEventsResponse.FromString
        )

        async def caller() -> None:
            for _ in remaining:
                if run.status != OK:
                    return
                run.items_sent += batch_size
                sent = time.perf_counter()
                try:
                    response: pb.LogEventsResponse = await method(body, timeout=timeout_seconds)
                except grpc.RpcError as error:
                    run.fail(error)
                    return
                run.call_latencies_ms.append((time.perf_counter() - sent) * 1000)
                run.acknowledged += response.accepted_count
                run.rejected += response.rejected_count

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        run.seconds = time.perf_counter() - start
    return run


async def ingest_stream(address: str, *, events: int, timeout_seconds: float) -> IngestionRun:
    """One Ingest stream of `events` events; the answer says how many the server stored."""
    per_message = payloads.INGEST_ITEMS_PER_MESSAGE
    full = payloads.ingest_message(per_message).SerializeToString()
    run = IngestionRun()

    async def items() -> AsyncIterator[bytes]:
        while run.items_sent < events:
            count = min(per_message, events - run.items_sent)
            run.items_sent += count
            yield (
                full if count == per_message else payloads.ingest_message(count).SerializeToString()
            )

    async with grpc.aio.insecure_channel(address) as channel:
        method = channel.stream_unary(payloads.INGEST_PATH, None, pb.IngestResponse.FromString)
        start = time.perf_counter()
        try:
            response: pb.IngestResponse = await method(items(), timeout=timeout_seconds)
        except grpc.RpcError as error:
            run.fail(error)
        else:
            run.acknowledged = response.accepted_count
            run.rejected = response.rejected_count
            if response.received_count != events:
                run.status = ERROR
                run.detail = f"server received {response.received_count} of {events} items"
        run.seconds = time.perf_counter() - start
        run.call_latencies_ms.append(run.seconds * 1000)
    return run
