"""Polls the server's gRPC health (service "") in the background and remembers every answer."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

POLL_SECONDS = 0.05
SERVING = "SERVING"


@dataclass(frozen=True, slots=True)
class HealthAnswer:
    """One health check: when it was answered and the status (or the RPC error code)."""

    time: float
    status: str


class HealthWatch:
    """Background Check("") calls every POLL_SECONDS until `stop()`."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.answers: list[HealthAnswer] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        """Start polling on the running event loop."""
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        """Stop polling and wait for the last check."""
        self._stopping.set()
        if self._task is not None:
            await self._task

    def statuses_between(self, start: float, end: float) -> Counter[str]:
        """How often each status was seen in [start, end]."""
        return Counter(a.status for a in self.answers if start <= a.time <= end)

    def first_after(self, moment: float, status: str) -> float | None:
        """Monotonic time of the first `status` answer after `moment`, if any."""
        return next((a.time for a in self.answers if a.time > moment and a.status == status), None)

    async def _poll(self) -> None:
        async with grpc.aio.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="")
            while not self._stopping.is_set():
                try:
                    reply = await health.Check(request, timeout=1)
                except grpc.RpcError as error:
                    status = f"error {error.code().name}"
                else:
                    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                self.answers.append(HealthAnswer(time.monotonic(), status))
                await asyncio.sleep(POLL_SECONDS)
