"""Every call's metrics under go-grpc-prometheus's names, labels and help texts.

grpc_server_started_total, grpc_server_handled_total (with grpc_code), grpc_server_msg_received_
total, grpc_server_msg_sent_total and the grpc_server_handling_seconds histogram, labelled by
grpc_type (unary, client_stream, server_stream, bidi_stream), grpc_service and grpc_method, so
the dashboards and alerts written for Go and Java servers work unchanged. Codes are Go's names
(codes.Code.String(): "OK", "Canceled", "InvalidArgument", ...).

The call boundary (server.call_handlers) counts into one MethodStats per method with plain integer
additions on the event loop: it already knows each call's final code for its access log, and a
second interceptor would cost every call another coroutine and handler wrapper. prometheus_client
is met only at scrape time, when CallMetrics.collect turns the counts into metric families.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import grpc
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from server.service.histogram import Histogram

if TYPE_CHECKING:
    from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

GO_DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""prometheus/client_golang's DefBuckets: go-grpc-prometheus's handling-time buckets."""

UNARY, CLIENT_STREAM, SERVER_STREAM, BIDI_STREAM = (
    "unary",
    "client_stream",
    "server_stream",
    "bidi_stream",
)
"""go-grpc-prometheus's grpc_type values."""


def _go_name(code: grpc.StatusCode) -> str:
    """Go's codes.Code.String(): CamelCase, with OK as is and CANCELLED spelt Canceled."""
    if code is grpc.StatusCode.OK:
        return "OK"
    if code is grpc.StatusCode.CANCELLED:
        return "Canceled"
    return "".join(part.capitalize() for part in code.name.split("_"))


CODE_NAMES = {code: _go_name(code) for code in grpc.StatusCode}
"""grpc_code label values, in the order of the codes' numbers."""

_STARTED = ("grpc_server_started_total", "Total number of RPCs started on the server.")
_HANDLED = (
    "grpc_server_handled_total",
    "Total number of RPCs completed on the server, regardless of success or failure.",
)
_RECEIVED = (
    "grpc_server_msg_received_total",
    "Total number of RPC stream messages received on the server.",
)
_SENT = ("grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.")
_HANDLING = (
    "grpc_server_handling_seconds",
    "Histogram of response latency (seconds) of gRPC that had been application-level handled "
    "by the server.",
)
_LABELS = ["grpc_type", "grpc_service", "grpc_method"]
METRIC_NAMES = tuple(name for name, _ in (_STARTED, _HANDLED, _RECEIVED, _SENT, _HANDLING))
"""The families collect() yields (counters with their _total)."""


def bucket_labels(bounds: Iterable[float]) -> list[str]:
    """The le labels of these bounds and +Inf, as Go's client writes them ("1", not "1.0")."""
    return [f"{bound:g}" for bound in bounds] + ["+Inf"]


def grpc_type(request_streaming: bool, response_streaming: bool) -> str:
    """The grpc_type label of a method with these streaming sides."""
    if request_streaming:
        return BIDI_STREAM if response_streaming else CLIENT_STREAM
    return SERVER_STREAM if response_streaming else UNARY


class MethodStats:
    """One method's counts; written on the event loop only, read by scrapes on another thread."""

    __slots__ = ("handled", "labels", "latency", "received", "sent", "started")

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels
        """grpc_type, grpc_service, grpc_method."""
        self.started = 0
        self.received = 0
        """Request messages read whole (a client stream's every message; not its end)."""
        self.sent = 0
        """Responses sent: a unary call's when it ends OK, each message of a response stream."""
        self.handled = dict.fromkeys(grpc.StatusCode, 0)
        """Calls ended, by final code (every code present from the start)."""
        self.latency = Histogram(GO_DEFAULT_BUCKETS)

    def finish(self, code: grpc.StatusCode, seconds: float) -> None:
        """Count a call that ended with `code` after `seconds`."""
        self.handled[code] += 1
        self.latency.observe(seconds)


class CallMetrics:
    """The MethodStats of every method called or declared, and the collector that exports them."""

    def __init__(self) -> None:
        self._methods: dict[str, MethodStats] = {}

    def method(self, path: str, kind: str) -> MethodStats:
        """The stats of "/package.Service/Method" of grpc_type `kind` (made on first use)."""
        stats = self._methods.get(path)
        if stats is None:
            service, _, name = path.lstrip("/").partition("/")
            stats = self._methods[path] = MethodStats([kind, service, name or "unknown"])
        return stats

    def declare(self, services: Iterable[ServiceDescriptor]) -> None:
        """Export every method of these services at zero before its first call, as
        go-grpc-prometheus's InitializeMetrics does, so rate() works from the first scrape."""
        for service in services:
            for method in service.methods:
                self.method(f"/{service.full_name}/{method.name}", _kind_of(method))

    def collect(self) -> Iterator[Metric]:
        """The five families, one series per method (and per method and code when handled)."""
        started = CounterMetricFamily(*_STARTED, labels=_LABELS)
        handled = CounterMetricFamily(*_HANDLED, labels=[*_LABELS, "grpc_code"])
        received = CounterMetricFamily(*_RECEIVED, labels=_LABELS)
        sent = CounterMetricFamily(*_SENT, labels=_LABELS)
        handling = HistogramMetricFamily(*_HANDLING, labels=_LABELS)
        bounds = bucket_labels(GO_DEFAULT_BUCKETS)
        for stats in list(self._methods.values()):  # one step under the GIL
            labels = stats.labels
            started.add_metric(labels, stats.started)
            received.add_metric(labels, stats.received)
            sent.add_metric(labels, stats.sent)
            for code, count in dict(stats.handled).items():
                handled.add_metric([*labels, CODE_NAMES[code]], count)
            cumulative, total = stats.latency.snapshot()
            handling.add_metric(labels, list(zip(bounds, cumulative, strict=True)), total)
        yield from (started, handled, received, sent, handling)


def _kind_of(method: MethodDescriptor) -> str:
    return grpc_type(method.client_streaming, method.server_streaming)
