"""Concurrent RecordInteraction writers that remember every write the server acknowledged.

Each write carries a unique message_id, so "acknowledged" is a set of ids the database must
hold afterwards, whatever happened to the server or the database in between.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc

from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1 import feedback_service_pb2_grpc as pb_grpc

CALL_TIMEOUT_SECONDS = 10.0
FAILURE_PAUSE_SECONDS = 0.02
"""A failed writer waits this long before its next write, so a dead server is not spun on."""


@dataclass(frozen=True, slots=True)
class Failure:
    """One write that did not end OK: when it was sent, when it ended, with which status code."""

    sent: float
    """time.monotonic() just before the call."""
    time: float
    """time.monotonic() when the answer came."""
    code: str


@dataclass(slots=True)
class WriteLog:
    """Everything the writers saw: ids acknowledged (with when), and every failure."""

    acknowledged: list[str] = field(default_factory=list)
    acknowledged_times: list[float] = field(default_factory=list)
    """time.monotonic() of each acknowledgement, in the order of `acknowledged`."""
    failures: list[Failure] = field(default_factory=list)
    sent: int = 0

    @property
    def codes(self) -> Counter[str]:
        """How many writes ended with each status code, OK included."""
        counted = Counter(failure.code for failure in self.failures)
        counted["OK"] = len(self.acknowledged)
        return counted

    def first_acknowledged_after(self, moment: float) -> float | None:
        """The monotonic time of the first acknowledgement after `moment`, if any."""
        return next((t for t in self.acknowledged_times if t > moment), None)

    def failures_between(self, start: float, end: float) -> Counter[str]:
        """Status codes of the writes that failed in [start, end]."""
        return Counter(f.code for f in self.failures if start <= f.time <= end)

    def failures_sent_before(self, moment: float, ended_after: float) -> Counter[str]:
        """Status codes of writes sent before `moment` that failed after `ended_after`."""
        return Counter(f.code for f in self.failures if f.sent < moment and f.time > ended_after)


class WriteLoad:
    """`concurrency` writers sending RecordInteraction to `address` until `stop()`."""

    def __init__(self, address: str, *, prefix: str, concurrency: int) -> None:
        self.address = address
        self.prefix = prefix
        self.concurrency = concurrency
        self.log = WriteLog()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._channel: grpc.aio.Channel | None = None

    def start(self) -> None:
        """Open the channel and start the writers on the running event loop."""
        self._channel = grpc.aio.insecure_channel(self.address)
        stub = pb_grpc.FeedbackServiceStub(self._channel)
        self._tasks = [
            asyncio.create_task(self._writer(stub, number)) for number in range(self.concurrency)
        ]

    async def wait_acknowledged(self, count: int, timeout: float) -> None:
        """Return once `count` writes were acknowledged; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.log.acknowledged) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(self.log.acknowledged)} of {count} writes acknowledged in {timeout} s; "
                    f"codes {dict(self.log.codes)}"
                )
            if all(task.done() for task in self._tasks):
                raise RuntimeError("every writer stopped")
            await asyncio.sleep(0.005)

    async def stop(self) -> WriteLog:
        """Let each writer finish its call in flight, then close the channel."""
        self._stopping.set()
        await asyncio.gather(*self._tasks)
        if self._channel is not None:
            await self._channel.close(None)
        return self.log

    async def _writer(self, stub: pb_grpc.FeedbackServiceAsyncStub, number: int) -> None:
        conversation = f"{self.prefix}-w{number}"
        sequence = 0
        while not self._stopping.is_set():
            sequence += 1
            message_id = f"{conversation}-{sequence}"
            request = pb.RecordInteractionRequest(
                conversation_id=conversation,
                message_id=message_id,
                model="reliability",
                input_text="question",
                output_text="answer",
            )
            self.log.sent += 1
            sent = time.monotonic()
            try:
                await stub.RecordInteraction(request, timeout=CALL_TIMEOUT_SECONDS)
            except grpc.RpcError as error:
                self.log.failures.append(Failure(sent, time.monotonic(), error.code().name))
                await asyncio.sleep(FAILURE_PAUSE_SECONDS)
            else:
                self.log.acknowledged.append(message_id)
                self.log.acknowledged_times.append(time.monotonic())
