"""An empty grpc.aio FeedbackService: the most any server of this design can do on this machine.

Same mode as the real server (grpc.aio, async handlers, the same event loop and server options,
health checking on), but SubmitFeedback and LogEvent answer a canned response of the real size
without touching a database. Run as `python -m bench.ceiling_server --address HOST:PORT`.

`--handlers` says how the methods are registered: `generated` (the default) by the generated
code, every method of the service; `unary` and `stream-unary` only the two writes, by the same
code, as unary methods or as stream-unary ones whose handler reads its one request with
`context.read()`, as the real server's call boundary (server.call_handlers) registers every unary
method. The last two differ in nothing else, so the bench can price that boundary alone.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from bench import payloads
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1 import feedback_service_pb2_grpc
from server.config import Settings

Context = grpc.aio.ServicerContext[Any, Any]
Behavior = Callable[[Any, Context], Awaitable[Any]]
EOF_MARK: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
SERVICE_NAME = "feedback.v1.FeedbackService"
HANDLER_KINDS = ("generated", "unary", "stream-unary")


class CeilingServicer(feedback_service_pb2_grpc.FeedbackServiceServicer):
    """Answers the two unary writes at once with responses shaped like the real server's."""

    def __init__(self) -> None:
        self._feedback = payloads.submit_feedback_response()
        self._event = payloads.log_event_response()

    async def SubmitFeedback(  # noqa: N802 (generated method name)
        self, request: pb.SubmitFeedbackRequest, context: Context
    ) -> pb.SubmitFeedbackResponse:
        """A stored-looking rating, storing nothing."""
        return self._feedback

    async def LogEvent(  # noqa: N802 (generated method name)
        self, request: pb.LogEventRequest, context: Context
    ) -> pb.LogEventResponse:
        """A stored-looking event, storing nothing."""
        return self._event


def add_servicer(servicer: CeilingServicer, server: grpc.aio.Server, handlers: str) -> None:
    """Register the ceiling's methods the way `handlers` (one of HANDLER_KINDS) names."""
    if handlers == "generated":
        feedback_service_pb2_grpc.add_FeedbackServiceServicer_to_server(servicer, server)
        return
    writes = (
        (
            "SubmitFeedback",
            servicer.SubmitFeedback,
            pb.SubmitFeedbackRequest,
            pb.SubmitFeedbackResponse,
        ),
        ("LogEvent", servicer.LogEvent, pb.LogEventRequest, pb.LogEventResponse),
    )
    methods = {
        name: (
            grpc.stream_unary_rpc_method_handler(
                read_request_first(behavior),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
            if handlers == "stream-unary"
            else grpc.unary_unary_rpc_method_handler(
                behavior,
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
        )
        for name, behavior, request, response in writes
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, methods),))
    # As the generated code does: stubs call registered methods, found without a search.
    server.add_registered_method_handlers(SERVICE_NAME, methods)  # type: ignore[attr-defined]


def read_request_first(behavior: Behavior) -> Callable[[object, Context], Awaitable[Any]]:
    """`behavior` as a stream-unary handler that reads its one request message itself."""

    async def handle(_requests: object, context: Context) -> Any:
        request = await context.read()
        if request is EOF_MARK:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no request message")
        return await behavior(request, context)

    return handle


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    """The channel options server.app.create_server gives the real server."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]


def event_loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop the real server runs by default: uvloop when it chooses it and it is here."""
    if str(getattr(settings, "event_loop", "asyncio")) != "uvloop":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def serve(address: str, settings: Settings, *, handlers: str = "generated") -> None:
    """Serve until SIGTERM or SIGINT."""
    server = grpc.aio.server(options=server_options(settings))
    # The generated base class answers UNIMPLEMENTED for every method not overridden here.
    servicer = CeilingServicer()  # type: ignore[abstract]
    add_servicer(servicer, server, handlers)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    host = address.rsplit(":", 1)[0]
    print(json.dumps({"message": "serving", "address": f"{host}:{port}"}), file=sys.stderr)
    await stop.wait()
    await server.stop(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m bench.ceiling_server`."""
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling_server", description=__doc__)
    parser.add_argument("--address", default="127.0.0.1:0", help="host:port to listen on")
    parser.add_argument(
        "--handlers",
        choices=HANDLER_KINDS,
        default="generated",
        help="generated: every method, by the generated code (default); unary or stream-unary: "
        "only the two writes, stream-unary reading the request with context.read()",
    )
    args = parser.parse_args(argv)
    settings = Settings()
    with asyncio.Runner(loop_factory=event_loop_factory(settings)) as runner:
        runner.run(serve(args.address, settings, handlers=args.handlers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
