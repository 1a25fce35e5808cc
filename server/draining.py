"""Refuses new calls with UNAVAILABLE while a stopping server drains, so none is cut off unseen.

gRPC's own stop cancels the calls that reached the server but not yet the application, and a
client cannot tell a CANCELLED write from one that was stored. Refusing them ourselves first
answers them UNAVAILABLE, which promises nothing was written and invites a retry elsewhere.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from server.interceptors import same_kind
from server.service import Unavailable
from server.status import abort

if TYPE_CHECKING:
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # not subscriptable at run time
    ServerInterceptor = grpc.aio.ServerInterceptor

SHUTTING_DOWN = "the server is shutting down; nothing was written, retry on another replica"


class DrainInterceptor(ServerInterceptor):
    """Passes calls through until refuse_new_calls(); then answers those of one service
    UNAVAILABLE (health and reflection keep answering, so probes see NOT_SERVING)."""

    def __init__(self, refused_service: str) -> None:
        """Refuse calls to `refused_service` (a full name such as feedback.v1.FeedbackService)."""
        self._prefix = f"/{refused_service}/"
        self._refusing = False
        self._last_refusal = 0.0
        self._refusals: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def refuse_new_calls(self, *, quiet_seconds: float, at_most_seconds: float) -> None:
        """Answer every new call to the service UNAVAILABLE from now on, and return once none
        has come for `quiet_seconds` (callers gone, or retrying elsewhere), or after
        `at_most_seconds`."""
        self._refusing = True
        started = self._last_refusal = time.monotonic()
        while True:
            now = time.monotonic()
            quiet_until = self._last_refusal + quiet_seconds
            if now >= quiet_until or now >= started + at_most_seconds:
                return
            await asyncio.sleep(min(quiet_until, started + at_most_seconds) - now)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """The method's handler, or once refusing, one of the same kind that refuses."""
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if not self._refusing or handler is None or not method.startswith(self._prefix):
            return handler
        self._last_refusal = time.monotonic()
        refusal = self._refusals.get(method)
        if refusal is None:
            refusal = self._refusals[method] = same_kind(handler, _refuse)
        return refusal


async def _refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await abort(context, Unavailable(SHUTTING_DOWN))
