"""Composition root: builds storage, service, servicers, health and reflection into one server."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection_pb2

from llmfeedback.proto.feedback.v1 import access_pb2, feedback_service_pb2
from server import mapping
from server.access import OPEN, Access, MethodAccess
from server.admission import Admission, CallKind, Limits
from server.call_handlers import CallInterceptor, MethodPolicy, Timeouts, Watchdog
from server.config import Settings, auth_mode, pii_entities, redaction_modes
from server.metrics import FeedbackSources, Metrics
from server.metrics.calls import BIDI_STREAM
from server.metrics.endpoint import MetricsEndpoint
from server.reflection import V1_SERVICE, enable_reflection
from server.request_parsing import add_feedback_service
from server.service import FeedbackService, Rules
from server.service.api_keys import ApiKeyService, KeyRing
from server.service.change_history import ChangeHistory
from server.service.database_health import UP_PROBE_SECONDS, DatabaseHealth
from server.service.erasure import ErasureService
from server.service.opt_out import OptOutService
from server.service.pii.detector import Detector
from server.service.pii.redaction import MIN_KEY_BYTES, Mode, Redactor, TextHasher
from server.service.privacy import Privacy
from server.service.rate_limits import RateLimiter, parse_rates
from server.service.retention import RetentionSweeper, retention_periods
from server.service.subjects import Subjects
from server.service.tail import Tail
from server.service.watch import WatchLimits, WatchService
from server.servicer import FeedbackServicer
from storage import Storage

if TYPE_CHECKING:
    from server.call_handlers import Handler

FEEDBACK_SERVICE = feedback_service_pb2.DESCRIPTOR.services_by_name["FeedbackService"]
FEEDBACK_SERVICE_NAME = FEEDBACK_SERVICE.full_name
FEEDBACK_METHODS = {f"/{FEEDBACK_SERVICE_NAME}/{m.name}": m for m in FEEDBACK_SERVICE.methods}
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]
HEALTH_SERVICE_NAME = HEALTH_SERVICE.full_name
REFLECTION_SERVICE = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
REFUSAL_QUIET_SECONDS = 0.1
"""A stopping server answers new calls UNAVAILABLE until none came for this long, before gRPC
stops taking any: calls already on their way are answered rather than cancelled (see
Admission.refuse_new_calls)."""
REFUSAL_MAX_SECONDS = 1.0
"""The longest the refusing lasts when callers keep coming (never more than half the grace)."""
HEALTH_CHECKED_SERVICES = ("", FEEDBACK_SERVICE_NAME)
"""The whole server and the feedback service: both depend on the database alone."""
CALLS_WAITING_LIMIT = 30_000
"""Calls gRPC itself holds before the event loop takes them (and admission answers them with
RESOURCE_EXHAUSTED and RetryInfo), in all and per connection. Only past it does gRPC shed load on
its own, with CANCELLED or REFUSED_STREAM and no hint; a waiting call costs a few kB."""
CONNECTION_AGE_GRACE_SECONDS = 300.0
"""How long calls in flight on a connection past its maximum age may still run (a long export
resumes from its last token after that)."""

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
        boundary: CallInterceptor,
        keys: ApiKeyService,
        erasures: ErasureService,
        retention: RetentionSweeper,
        tail: Tail,
        change_history: ChangeHistory,
        *,
        database_probe_seconds: float = UP_PROBE_SECONDS,
        metrics: Metrics | None = None,
        metrics_endpoint: MetricsEndpoint | None = None,
    ) -> None:
        self.grpc_server = server
        self._boundary = boundary
        self._keys = keys
        self._erasures = erasures
        self.retention = retention
        self.tail = tail
        self.change_history = change_history
        self._health = health
        self._service = service
        self._storage = storage
        self._executor = executor
        self.database_health = DatabaseHealth(
            storage.check_writable, self._report_database, up_seconds=database_probe_seconds
        )
        storage.on_unavailable(self.database_health.report_failure)
        self.metrics = metrics or Metrics(count_calls=False)
        """The registry and the hooks later parts feed (watchers, webhook deliveries)."""
        self.metrics.collect_from(
            FeedbackSources(
                write_queue=service.write_queue,
                admission=boundary.admission,
                storage=storage,
                database_up=lambda: self.database_health.up,
                watchers=self.metrics.watchers_by_kind,
                webhook_deliveries=self.metrics.webhook_deliveries,
            )
        )
        self._metrics_endpoint = metrics_endpoint
        self.metrics.count_watchers_with(tail.watches_by_kind)

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on, or None when metrics are off."""
        return None if self._metrics_endpoint is None else self._metrics_endpoint.port

    @property
    def database_url(self) -> str:
        """The database URL with any password masked, for logs."""
        return self._storage.url

    async def start(self) -> None:
        """Start serving, report SERVING to health checks, and let the database's state drive it."""
        await self.grpc_server.start()
        self._boundary.admission.start()
        self._boundary.watchdog.start()
        self._keys.start()
        self.retention.start()
        self.tail.start()
        self.change_history.start()
        await self._report_database(up=True)
        self.database_health.start()
        if self._metrics_endpoint is not None:
            self._metrics_endpoint.start()

    async def stop(self, grace_seconds: float | None) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight calls finish, then release all."""
        await self._health.enter_graceful_shutdown()
        await self.database_health.stop()
        started = time.monotonic()
        at_most = REFUSAL_MAX_SECONDS if grace_seconds is None else grace_seconds / 2
        await self._boundary.admission.refuse_new_calls(
            quiet_seconds=REFUSAL_QUIET_SECONDS,
            at_most_seconds=min(REFUSAL_MAX_SECONDS, at_most),
        )
        # Watches never end on their own: each is told to resume elsewhere, with its position.
        await self.tail.stop()
        if grace_seconds is not None:
            grace_seconds = max(0.0, grace_seconds - (time.monotonic() - started))
        await self.grpc_server.stop(grace_seconds)
        await self._boundary.watchdog.stop()
        await self._boundary.admission.stop()
        await self._keys.stop()
        await self.retention.stop()
        await self.change_history.stop()
        await self._erasures.close()  # between two batches: each resumes when run again
        # Anything still queued for group commit is committed before the database closes.
        loop = asyncio.get_running_loop()
        if self._metrics_endpoint is not None:  # scraped while draining; not once storage closes
            await loop.run_in_executor(None, self._metrics_endpoint.stop)
        await loop.run_in_executor(None, self._service.close)
        await loop.run_in_executor(None, self._executor.shutdown, True)
        self._storage.close()

    async def _report_database(self, up: bool) -> None:
        """Health follows the database: a server that cannot write should get no traffic."""
        for service in HEALTH_CHECKED_SERVICES:
            await self._health.set(service, SERVING if up else NOT_SERVING)

    async def wait_for_termination(self) -> None:
        """Block until the server stops."""
        await self.grpc_server.wait_for_termination()


async def create_server(settings: Settings) -> tuple[FeedbackServer, int]:
    """Build a server for `settings` with its database migrated; returns it and the bound port."""
    requires_keys = auth_mode(settings.auth, settings.address) == "keys"  # before any resource
    privacy = privacy_of(settings)
    storage = Storage.connect(
        settings.database_url,
        sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        sqlite_synchronous=settings.sqlite_synchronous,
        pool_size=settings.storage_threads,
    )
    try:
        await asyncio.get_running_loop().run_in_executor(None, storage.migrate)
    except BaseException:
        storage.close()
        raise
    executor = ThreadPoolExecutor(settings.storage_threads, thread_name_prefix="storage")
    metrics = Metrics(count_calls=bool(settings.metrics_address))
    if metrics.calls is not None:
        # Every method at zero from the first scrape, as go-grpc-prometheus's InitializeMetrics.
        metrics.calls.declare([FEEDBACK_SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE])
        metrics.calls.method(f"/{V1_SERVICE}/{REFLECTION_SERVICE.methods[0].name}", BIDI_STREAM)
    service = FeedbackService(
        storage,
        executor,
        Rules(
            accept_unknown_conversations=settings.accept_unknown_conversations,
            allowed_labels=settings.allowed_labels,
        ),
        max_pending_writes=settings.write_queue_limit,
        privacy=privacy,
    )
    key_ring = KeyRing()
    keys = ApiKeyService(storage, executor, key_ring)
    if requires_keys:
        await keys.load()
    access = Access(
        key_ring if requires_keys else None,
        RateLimiter(parse_rates(settings.rate_limits)),
    )
    boundary = CallInterceptor(
        access,
        Admission(
            Limits(
                max_calls=settings.max_concurrent_calls,
                max_calls_per_connection=settings.max_calls_per_connection,
                max_exports=settings.max_exports,
                max_exports_per_caller=settings.max_exports_per_caller,
                max_watches=settings.max_watches,
                max_watches_per_caller=settings.max_watches_per_caller,
                memory_limit_bytes=settings.memory_limit_mb * 1024 * 1024,
            ),
            refusable_services=(FEEDBACK_SERVICE_NAME,),
        ),
        Watchdog(),
        Timeouts(
            message_seconds=settings.message_timeout_seconds,
            stall_seconds=settings.stream_stall_timeout_seconds,
        ),
        method_policy,
        calls=metrics.calls,
    )
    server = grpc.aio.server(
        interceptors=[boundary],
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
            # Calls wait in gRPC's own queue until the loop takes them and admission answers them
            # precisely; gRPC sheds only beyond this bound (CANCELLED, or REFUSED_STREAM).
            ("grpc.max_concurrent_streams", CALLS_WAITING_LIMIT),
            ("grpc.server.max_pending_requests", CALLS_WAITING_LIMIT),
            ("grpc.server.max_pending_requests_hard_limit", CALLS_WAITING_LIMIT),
            ("grpc.max_allowed_incoming_connections", settings.max_connections),
            ("grpc.max_connection_idle_ms", _ms(settings.connection_idle_timeout_seconds)),
            ("grpc.max_connection_age_ms", _ms(settings.connection_max_age_seconds)),
            ("grpc.max_connection_age_grace_ms", _ms(CONNECTION_AGE_GRACE_SECONDS)),
        ],
    )
    erasures = ErasureService(storage, executor, Subjects(privacy.subject_hasher))
    tail = Tail(storage, executor, mapping.watched_record)
    watches = WatchService(tail, limits=WatchLimits(buffer_bytes=settings.watch_buffer_kb * 1024))
    servicer = FeedbackServicer(service, keys, access, erasures, OptOutService(erasures), watches)
    add_feedback_service(servicer, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, GenericHandlersOnly(server))
    enable_reflection([FEEDBACK_SERVICE_NAME, HEALTH_SERVICE_NAME], server)
    credentials = server_credentials(settings)
    port = (
        server.add_insecure_port(settings.address)
        if credentials is None
        else server.add_secure_port(settings.address, credentials)
    )
    metrics_endpoint = None
    try:
        if port == 0:
            raise OSError(f"cannot listen on {settings.address}")
        if settings.metrics_address:
            metrics_endpoint = MetricsEndpoint(settings.metrics_address, metrics.render)
    except OSError:
        service.close()
        executor.shutdown()
        storage.close()
        raise
    feedback_server = FeedbackServer(
        server,
        health,
        service,
        storage,
        executor,
        boundary,
        keys,
        erasures,
        RetentionSweeper(
            storage,
            executor,
            retention_periods(settings.retention),
            interval_seconds=settings.retention_interval_seconds,
        ),
        tail,
        ChangeHistory(storage, executor, timedelta(hours=settings.watch_history_hours)),
        database_probe_seconds=settings.database_probe_seconds,
        metrics=metrics,
        metrics_endpoint=metrics_endpoint,
    )
    return feedback_server, port


class GenericHandlersOnly:
    """The server as generated `add_*_to_server` functions see it: their handlers are added as
    generic ones, and their registered methods are dropped.

    grpc.aio's serving loop keeps one request future per registered method and, for every call
    it takes, runs asyncio.wait over all of them (a done-callback added to and removed from each):
    the 24 methods of the feedback service, health and reflection cost every call about 10 µs of
    CPU. Calls to a method that is not registered wait on the one generic future instead, and
    their handler is found by a dict lookup. Clients see no difference.
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(
        self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        """Add the handlers to the server."""
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Any]) -> None:
        """Drop them: the generic handlers added beside them serve the same methods."""


def method_policy(method: str, handler: Handler) -> MethodPolicy:
    """What a method's calls count against (server.admission) and need (server.access).

    FeedbackService methods need the scope their required_scope option names in the contract; a
    method without one is closed to every key. Health checking and reflection are open.
    """
    if method.startswith(f"/{HEALTH_SERVICE_NAME}/"):
        return MethodPolicy(CallKind.PROBE, OPEN)
    feedback_method = FEEDBACK_METHODS.get(method)
    if feedback_method is None:
        kind = (
            CallKind.STREAM
            if handler.request_streaming or handler.response_streaming
            else CallKind.CALL
        )
        return MethodPolicy(kind, OPEN)
    scope = mapping.scope_of(feedback_method.GetOptions().Extensions[access_pb2.required_scope])
    if feedback_method.name.startswith("Watch"):
        kind = CallKind.WATCH
    elif handler.response_streaming:
        kind = CallKind.EXPORT
    elif handler.request_streaming:
        kind = CallKind.STREAM
    else:
        kind = CallKind.CALL
    return MethodPolicy(kind, MethodAccess(open=False, scope=scope))


def privacy_of(settings: Settings) -> Privacy:
    """The redaction and text hashing the settings ask for; raises ValueError for a hash key
    that cannot be read or is too short (the server does not start)."""
    key = None
    if settings.hash_key_file is not None:
        try:
            key = Path(settings.hash_key_file).read_bytes().strip()
        except OSError as error:
            message = f"--hash-key-file: cannot read {settings.hash_key_file}: {error}"
            raise ValueError(message) from None
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"--hash-key-file must hold at least {MIN_KEY_BYTES} bytes")
    modes = redaction_modes(settings.redact)
    redactor = None
    if any(mode is not Mode.KEEP for mode in modes.values()):
        regions = [region.strip().upper() for region in settings.phone_regions.split(",")]
        detector = Detector(pii_entities(settings.pii_entities), phone_regions=regions)
        redactor = Redactor(detector, modes, key=key)
    return Privacy(
        redactor=redactor,
        text_hasher=TextHasher(key if settings.text_hash == "hmac" else None),
        subject_hasher=TextHasher(key, purpose=b"subject"),
        free_labels=settings.allowed_labels is None,
    )


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' PEM files (client certificates required when a client
    CA is given), or None for plaintext."""
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        if settings.tls_client_ca_file is not None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise ValueError("--tls-cert and --tls-key go together")
    pair = (Path(settings.tls_key_file).read_bytes(), Path(settings.tls_cert_file).read_bytes())
    client_ca = (
        None
        if settings.tls_client_ca_file is None
        else Path(settings.tls_client_ca_file).read_bytes()
    )
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
