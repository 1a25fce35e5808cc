"""Every call's boundary, for every method the server hosts: admission, reading requests, writing
responses, answering failures, and one log line.

grpc-python releases a call's C object as soon as the call's task ends, and a ServicerContext
touched after that (an async-generator handler finalized late, a log line asking for the peer)
dereferences freed memory and kills the process. So the handlers built here keep all application
code inside the call's task and never touch the context once it can have ended:
- every response stream is driven here, written with `context.write` inside the task, and its
  producer is closed here, whether the call ends, fails or is cancelled;
- every request is read here: a unary request is read as a stream of one message, because gRPC's
  unary path never answers a message cut short and waits forever for one that never comes;
- what the log line needs (method, peer, start) is captured when the call starts.

Clients that stall are bounded too: a request message must arrive within `message_timeout`, and a
streaming client must take each response within `stall_timeout` (one watchdog task for all calls).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor_pool

from server.access import Access, MethodAccess
from server.admission import Admission, CallKind
from server.logs import AccessLog
from server.metrics.calls import CallMetrics, MethodStats, grpc_type
from server.service import ResourceExhausted
from server.service.background import BackgroundTask
from server.status import (
    abort,
    abort_with_status,
    malformed_request_status,
    message_timeout_status,
)

if TYPE_CHECKING:
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:  # not subscriptable at run time
    ServerInterceptor = grpc.aio.ServerInterceptor

EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
"""What context.read() returns once the client has sent its last message."""
SLOW_READER = "SLOW_READER"
"""ErrorInfo reason of a stream ended because its client stopped taking responses."""
WATCHDOG_TICK_SECONDS = 0.25
EOF_GRACE_SECONDS = 0.02
_MESSAGE = "message"


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """How long the server waits on a client."""

    message_seconds: float = 30.0
    """For a request message to arrive whole, once the call has started."""
    stall_seconds: float = 30.0
    """For a streaming client to take the next response."""


@dataclass(frozen=True, slots=True)
class MethodPolicy:
    """What a method's calls count against and ask of their caller."""

    kind: CallKind
    access: MethodAccess


@dataclass(slots=True, eq=False)
class Call:
    """One call in progress, as the boundary sees it; nothing in it refers to the context."""

    method: str
    peer: str
    caller: str
    """Whose limits the call counts against: its API key's prefix, or its peer's address."""
    task: asyncio.Task[Any] | None
    started: float = field(default_factory=time.perf_counter)
    admitted: bool = False
    expired: str | None = None
    """Why the watchdog cancelled the call's task (a client that stalled), if it did."""
    lost: bool = False
    """Whether gRPC failed to send on the call: its client went away (a reset connection)."""

    def expire(self, reason: str) -> None:
        """Cancel the call's task, noting why, so the wait it is in can answer for it."""
        self.expired = reason
        if self.task is not None:
            self.task.cancel()


class Watchdog:
    """Cancels calls whose client keeps them waiting too long; one timer task for all of them,
    so a bounded wait costs a dict entry rather than a timer per call."""

    def __init__(self) -> None:
        self._deadlines: dict[Call, tuple[float, str]] = {}
        self._timer = BackgroundTask(self._run, "call-watchdog")

    def expect(self, call: Call, seconds: float, reason: str) -> None:
        """The call now waits on its client for at most `seconds`."""
        self._deadlines[call] = (time.monotonic() + seconds, reason)

    def done(self, call: Call) -> None:
        """The call's wait ended."""
        self._deadlines.pop(call, None)

    def start(self) -> None:
        """Start the timer task on the running loop."""
        self._timer.start()

    async def stop(self) -> None:
        """Stop the timer task."""
        await self._timer.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_TICK_SECONDS)
            now = time.monotonic()
            expired = [
                (call, reason)
                for call, (deadline, reason) in self._deadlines.items()
                if deadline <= now
            ]
            for call, reason in expired:
                del self._deadlines[call]
                call.expire(reason)


class CallInterceptor(ServerInterceptor):
    """Wraps each method's handler once into one that runs every call through the boundary."""

    def __init__(
        self,
        access: Access,
        admission: Admission,
        watchdog: Watchdog,
        timeouts: Timeouts,
        policy_of: Callable[[str, Handler], MethodPolicy],
        *,
        calls: CallMetrics | None = None,
    ) -> None:
        """`policy_of(method, handler)` says what a method's calls count against and need;
        `calls`, when metrics are on, what every call is counted into."""
        self.access = access
        self.admission = admission
        self.watchdog = watchdog
        self.timeouts = timeouts
        self.calls = calls
        self._policy_of = policy_of
        self._wrapped: dict[str, Handler] = {}
        self._boundaries: dict[str, _Boundary] = {}
        self.access_log = AccessLog()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        """The method's handler, wrapped (unknown methods stay None: gRPC answers UNIMPLEMENTED)."""
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return handler
            boundary = _Boundary(self, method, self._policy_of(method, handler), handler)
            self._boundaries[method] = boundary
            wrapped = self._wrapped[method] = boundary.handler()
        return wrapped


class _Boundary:
    """The boundary of one method: what all its calls share."""

    def __init__(
        self, owner: CallInterceptor, method: str, policy: MethodPolicy, handler: Handler
    ) -> None:
        self._access = owner.access
        self._method_access = policy.access
        self._admission = owner.admission
        self._watchdog = owner.watchdog
        self._timeouts = owner.timeouts
        self._access_log = owner.access_log
        self._method = method
        self._kind = policy.kind
        self._handler = handler
        self._request_type = _request_type(method)
        # Counting is a few integer additions on this loop's thread; None when metrics are off.
        self._stats: MethodStats | None = (
            None
            if owner.calls is None
            else owner.calls.method(
                method, grpc_type(handler.request_streaming, handler.response_streaming)
            )
        )

    def handler(self) -> Handler:
        """A handler of the wire kind that lets the boundary read every request itself."""
        handler = self._handler
        make = (
            grpc.stream_stream_rpc_method_handler
            if handler.response_streaming
            else grpc.stream_unary_rpc_method_handler
        )
        run = self._streaming_response if handler.response_streaming else self._unary_response
        wrapped: Handler = make(
            run,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        return wrapped

    async def _unary_response(self, _requests: object, context: Context) -> Any:
        call = self._start(context)
        try:
            self._admit(call, context)
            request = await self._request(call, context)
            behavior: Any = self._handler.unary_unary or self._handler.stream_unary
            return await behavior(request, context)
        except BaseException as error:
            await self._fail(call, context, error)
        finally:
            self._end(call, context)

    async def _streaming_response(self, _requests: object, context: Context) -> None:
        call = self._start(context)
        try:
            self._admit(call, context)
            request = await self._request(call, context)
            behavior: Any = self._handler.unary_stream or self._handler.stream_stream
            responses = behavior(request, context)
            if not hasattr(responses, "__aiter__"):
                await responses  # a handler that writes with context.write itself (health Watch)
                return
            async with aclosing(responses):
                async for response in responses:
                    self._watchdog.expect(call, self._timeouts.stall_seconds, SLOW_READER)
                    try:
                        await context.write(response)
                        if self._stats is not None:
                            self._stats.sent += 1
                    except grpc.aio.AbortError:
                        raise
                    except grpc.aio.BaseError:
                        # gRPC could not send (ExecuteBatchError when a reset cut a message
                        # short): the client went away; nobody to answer, nothing to report.
                        call.lost = True
                        return
                    finally:
                        self._watchdog.done(call)
        except BaseException as error:
            await self._fail(call, context, error)
        finally:
            self._end(call, context)

    def _start(self, context: Context) -> Call:
        peer = context.peer()
        if self._stats is not None:
            self._stats.started += 1
        return Call(self._method, peer, _caller(peer), asyncio.current_task())

    def _admit(self, call: Call, context: Context) -> None:
        """Identify the caller, then take the call within the limits; raises why not."""
        call.caller = self._access.identify(context, call.caller, self._method_access).name
        refusal = self._admission.admit(self._method, self._kind, call.caller, call.peer)
        if refusal is not None:
            raise refusal
        call.admitted = True
        if not (self._method_access.open or self._handler.request_streaming):
            self._access.charge(1)  # a client stream charges its items as they come, waiting

    async def _request(self, call: Call, context: Context) -> Any:
        """The request message, or for client-streaming methods the stream of them."""
        if self._handler.request_streaming:
            return _RequestStream(self, call, context)
        request = await self.read(call, context)
        if request is EOF:
            raise _Truncated()
        return request

    async def read(self, call: Call, context: Context) -> Any:
        """The next request message (EOF at the end), which must arrive in time."""
        self._watchdog.expect(call, self._timeouts.message_seconds, _MESSAGE)
        try:
            message = await context.read()
        finally:
            self._watchdog.done(call)
        if message is EOF:
            # gRPC also reads EOF when the client vanished: give its cancellation the moment it
            # needs to arrive, so a cut-off stream is not taken for a finished one.
            await asyncio.sleep(EOF_GRACE_SECONDS)
        elif self._stats is not None:
            self._stats.received += 1
        return message

    async def _fail(self, call: Call, context: Context, error: BaseException) -> None:
        """Answer the call for `error` while it is alive, or let a call nobody waits for go."""
        if isinstance(error, asyncio.CancelledError):
            if call.expired is None:
                raise error  # the client went away, or gRPC is stopping: nobody to answer
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            # The status waits in gRPC behind the message the client does not take, and the
            # abort below returns only when the client reads or leaves: the call's slot is
            # given back now, so a stalled client holds its stream and no more.
            self._release(call)
            if call.expired == _MESSAGE:
                timeout = message_timeout_status(self._timeouts.message_seconds)
                await abort_with_status(context, timeout)
            error = ResourceExhausted(
                f"the client took no response for {self._timeouts.stall_seconds:g} s, so the "
                "stream is ended (an export resumes from the last chunk's resume_token)",
                1.0,
                reason=SLOW_READER,
            )
        if isinstance(error, grpc.aio.AbortError | grpc.aio.BaseError):
            # Aborted already, or gRPC's own failure: the call or the server has ended.
            raise error
        if isinstance(error, _Truncated):
            await abort_with_status(
                context,
                malformed_request_status(
                    self._request_type, "the request message is missing or cut short"
                ),
            )
        if isinstance(error, Exception):
            await abort(context, error)
        raise error

    def _release(self, call: Call) -> None:
        if call.admitted:
            call.admitted = False
            self._admission.release(self._kind, call.caller, call.peer)

    def _end(self, call: Call, context: Context) -> None:
        self._release(call)
        stats = self._stats
        access_log = self._access_log
        logged = access_log.enabled()
        if stats is None and not logged:
            return
        code = _code(call, context)
        seconds = time.perf_counter() - call.started
        if stats is not None:
            stats.finish(code, seconds)
            if code is grpc.StatusCode.OK and not self._handler.response_streaming:
                stats.sent += 1  # the unary response (go-grpc-prometheus counts it on success)
        if logged:
            access_log.write(call.method, code.name, round(seconds * 1000, 3), call.peer)


class _RequestStream:
    """A client stream's messages, each of which must arrive within the message timeout."""

    def __init__(self, boundary: _Boundary, call: Call, context: Context) -> None:
        self._boundary = boundary
        self._call = call
        self._context = context

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        message = await self._boundary.read(self._call, self._context)
        if message is EOF:
            raise StopAsyncIteration
        return message


class _Truncated(Exception):
    """The client ended its side before sending a whole request message."""


def _request_type(method: str) -> str:
    """The full name of the method's request message ("/pkg.Service/Method" → "pkg.Request")."""
    service, _, name = method.lstrip("/").partition("/")
    try:
        found = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
    except KeyError:
        return f"request of {method}"
    return str(found.input_type.full_name)


def _caller(peer: str) -> str:
    """Whose limits a call counts against: its peer's address without the port."""
    host, _, _port = peer.rpartition(":")
    return host or peer


def _code(call: Call, context: Context) -> grpc.StatusCode:
    """The status the call ended with, as far as the server knows it (still inside the call)."""
    if call.lost:
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if code is None:
        task = call.task
        if task is not None and task.cancelling():
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
        return grpc.StatusCode.OK
    if isinstance(code, grpc.StatusCode):
        return code
    return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
