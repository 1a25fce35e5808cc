"""Every call's metrics under go-grpc-prometheus's names, labels and help texts.

grpc_server_started_total, grpc_server_handled_total (with grpc_code), grpc_server_msg_received_
total, grpc_server_msg_sent_total and the grpc_server_handling_seconds histogram, labelled by
grpc_type (unary, client_stream, server_stream, bidi_stream), grpc_service and grpc_method, so
the dashboards and alerts written for Go and Java servers work unchanged. Codes are Go's names
(codes.Code.String(): "OK", "Canceled", "InvalidArgument", ...).

The call boundary (server.call_handlers) counts into one MethodStats per method with plain integer
additions on the event loop: it already knows each call's final code for its access log, and a
second interceptor would cost every call another coroutine and handler wrapper.

At scrape time CallMetrics.render writes these families in the text format itself, from label
strings made once per method: they are most of a scrape (17 codes and 12 buckets for each of ~30
methods, 900 samples), and prometheus_client's generate_latest formats each sample anew (escaping,
sorting and joining its labels), 10 ms a scrape on an idle machine and about three times that on a
busy one, beside the event loop. The rest of the exposition is prometheus_client's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import grpc

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
METRIC_NAMES = tuple(name for name, _ in (_STARTED, _HANDLED, _RECEIVED, _SENT, _HANDLING))
"""The families render() writes (counters with their _total)."""
_PLAIN = re.compile(r"[A-Za-z0-9_.]+")
"""What a service or method name is made of: nothing a label value needs escaped."""


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

    __slots__ = (
        *("bucket_labels", "code_labels", "handled", "labels", "latency", "received", "sent"),
        "started",
    )

    def __init__(self, kind: str, service: str, method: str) -> None:
        for name in (service, method):
            if not _PLAIN.fullmatch(name):
                raise ValueError(f"not a gRPC service or method name: {name!r}")
        inner = f'grpc_method="{method}",grpc_service="{service}",grpc_type="{kind}"'
        self.labels = f"{{{inner}}}"
        """The exposition's label set of the method (names sorted, as prometheus_client)."""
        self.code_labels = {
            code: f'{{grpc_code="{name}",{inner}}}' for code, name in CODE_NAMES.items()
        }
        self.bucket_labels = [f'{{{inner},le="{le}"}}' for le in bucket_labels(GO_DEFAULT_BUCKETS)]
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
    """The MethodStats of every method called or declared, and their exposition."""

    def __init__(self) -> None:
        self._methods: dict[str, MethodStats] = {}

    def method(self, path: str, kind: str) -> MethodStats:
        """The stats of "/package.Service/Method" of grpc_type `kind` (made on first use)."""
        stats = self._methods.get(path)
        if stats is None:
            service, _, name = path.lstrip("/").partition("/")
            stats = self._methods[path] = MethodStats(kind, service, name or "unknown")
        return stats

    def declare(self, services: Iterable[ServiceDescriptor]) -> None:
        """Export every method of these services at zero before its first call, as
        go-grpc-prometheus's InitializeMetrics does, so rate() works from the first scrape."""
        for service in services:
            for method in service.methods:
                self.method(f"/{service.full_name}/{method.name}", _kind_of(method))

    def render(self) -> str:
        """The five families in the Prometheus text format (0.0.4), one series per method (and
        per method and code for handled, per bucket for the histogram)."""
        methods = list(self._methods.values())  # one step under the GIL
        lines: list[str] = []
        for (name, text), attribute in zip(
            (_STARTED, _RECEIVED, _SENT), ("started", "received", "sent"), strict=True
        ):
            lines.append(f"# HELP {name} {text}\n# TYPE {name} counter\n")
            lines.extend(f"{name}{stats.labels} {getattr(stats, attribute)}\n" for stats in methods)
        name, text = _HANDLED
        lines.append(f"# HELP {name} {text}\n# TYPE {name} counter\n")
        for stats in methods:
            labels = stats.code_labels
            lines.extend(
                f"{name}{labels[code]} {count}\n" for code, count in dict(stats.handled).items()
            )
        name, text = _HANDLING
        lines.append(f"# HELP {name} {text}\n# TYPE {name} histogram\n")
        for stats in methods:
            cumulative, total = stats.latency.snapshot()
            lines.extend(
                f"{name}_bucket{labels} {count}\n"
                for labels, count in zip(stats.bucket_labels, cumulative, strict=True)
            )
            lines.append(f"{name}_count{stats.labels} {cumulative[-1]}\n")
            lines.append(f"{name}_sum{stats.labels} {total!r}\n")
        return "".join(lines)


def _kind_of(method: MethodDescriptor) -> str:
    return grpc_type(method.client_streaming, method.server_streaming)
