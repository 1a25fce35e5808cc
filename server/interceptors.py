"""Server interceptors: one structured log line per RPC with method, status and duration."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

log = logging.getLogger("server.rpc")


if TYPE_CHECKING:
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # not subscriptable at run time
    ServerInterceptor = grpc.aio.ServerInterceptor


class RpcLogInterceptor(ServerInterceptor):
    """Logs every call once it ends, whatever its kind and however it ends."""

    def __init__(self) -> None:
        # A method's handler never changes, so each is wrapped once, not on every call.
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Wrap the handler of the called method."""
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED
                return handler
            wrapped = self._wrapped[method] = _logged(method, handler)
        return wrapped


def _logged(
    method: str, handler: grpc.RpcMethodHandler[Any, Any]
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler, logging each call when it ends."""
    behavior = (
        handler.unary_unary or handler.stream_unary or handler.unary_stream or handler.stream_stream
    )
    wrap = _stream_response if handler.response_streaming else _unary_response
    return same_kind(handler, wrap(method, behavior))


def same_kind(
    handler: grpc.RpcMethodHandler[Any, Any], behavior: Any
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of `handler`'s kind and serializers that runs `behavior` instead."""
    make: Any = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    rebuilt: grpc.RpcMethodHandler[Any, Any] = make(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    return rebuilt


def _unary_response(method: str, behavior: Any) -> Any:
    async def logged(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as raised:
            error = raised
            raise
        finally:
            _log_call(method, context, start, error)

    return logged


def _stream_response(method: str, behavior: Any) -> Any:
    if not inspect.isasyncgenfunction(behavior):
        # Handlers that write with context.write() and return nothing (health's Watch) must
        # stay coroutines: an async generator around them breaks the call.
        return _unary_response(method, behavior)

    async def logged(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            async for response in behavior(request, context):
                yield response
        except BaseException as raised:
            error = raised
            raise
        finally:
            _log_call(method, context, start, error)

    return logged


def _log_call(
    method: str,
    context: grpc.aio.ServicerContext[Any, Any],
    start: float,
    error: BaseException | None,
) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    code = context.code()
    if code is None:
        if isinstance(error, asyncio.CancelledError):
            code = grpc.StatusCode.CANCELLED
        else:
            code = grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN
    elif not isinstance(code, grpc.StatusCode):  # set_code may have been given the raw int value
        code = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    log.info(
        "rpc",
        extra={
            "method": method,
            "code": code.name,
            "duration_ms": round((time.perf_counter() - start) * 1000, 3),
            "peer": context.peer(),
        },
    )
