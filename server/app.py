"""Composition root: builds storage, service, servicers, health and reflection into one server."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from llmfeedback._proto.feedback.v1 import feedback_service_pb2
from server.config import Settings
from server.interceptors import RpcLogInterceptor
from server.reflection import enable_reflection
from server.request_parsing import add_feedback_service
from server.service import FeedbackService, Rules
from server.servicer import FeedbackServicer
from storage import Storage

FEEDBACK_SERVICE_NAME = feedback_service_pb2.DESCRIPTOR.services_by_name[
    "FeedbackService"
].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING

log = logging.getLogger(__name__)


class FeedbackServer:
    """A started-or-not gRPC server that owns its storage and threads and stops gracefully."""

    def __init__(
        self,
        server: grpc.aio.Server,
        health: HealthServicer,
        service: FeedbackService,
        storage: Storage,
        executor: ThreadPoolExecutor,
    ) -> None:
        self.grpc_server = server
        self._health = health
        self._service = service
        self._storage = storage
        self._executor = executor

    @property
    def database_url(self) -> str:
        """The database URL with any password masked, for logs."""
        return self._storage.url

    async def start(self) -> None:
        """Start serving and report SERVING to health checks."""
        await self.grpc_server.start()
        for service in ("", FEEDBACK_SERVICE_NAME):
            await self._health.set(service, SERVING)

    async def stop(self, grace_seconds: float | None) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight calls finish, then release all."""
        await self._health.enter_graceful_shutdown()
        await self.grpc_server.stop(grace_seconds)
        # Anything still queued for group commit is committed before the database closes.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._service.close)
        await loop.run_in_executor(None, self._executor.shutdown, True)
        self._storage.close()

    async def wait_for_termination(self) -> None:
        """Block until the server stops."""
        await self.grpc_server.wait_for_termination()


async def create_server(settings: Settings) -> tuple[FeedbackServer, int]:
    """Build a server for `settings` with its database migrated; returns it and the bound port."""
    storage = Storage.connect(
        settings.database_url,
        sqlite_synchronous=settings.sqlite_synchronous,
        pool_size=settings.storage_threads,
    )
    try:
        await asyncio.get_running_loop().run_in_executor(None, storage.migrate)
    except BaseException:
        storage.close()
        raise
    executor = ThreadPoolExecutor(settings.storage_threads, thread_name_prefix="storage")
    service = FeedbackService(
        storage,
        executor,
        Rules(
            accept_unknown_conversations=settings.accept_unknown_conversations,
            allowed_labels=settings.allowed_labels,
        ),
        max_pending_writes=settings.write_queue_limit,
    )
    # The per-RPC log line is an INFO record; below that level the interceptor would only cost.
    rpc_logging = logging.getLogger("server.rpc").isEnabledFor(logging.INFO)
    server = grpc.aio.server(
        interceptors=[RpcLogInterceptor()] if rpc_logging else [],
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    add_feedback_service(FeedbackServicer(service), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection([FEEDBACK_SERVICE_NAME, HEALTH_SERVICE_NAME], server)
    port = server.add_insecure_port(settings.address)
    if port == 0:
        service.close()
        executor.shutdown()
        storage.close()
        raise OSError(f"cannot listen on {settings.address}")
    return FeedbackServer(server, health, service, storage, executor), port
