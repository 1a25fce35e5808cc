"""Prometheus metrics of one server (--metrics-address): its calls, its parts, and two hooks.

`Metrics` holds the registry that the /metrics endpoint (server.metrics.endpoint) renders: the
gRPC call families under go-grpc-prometheus's names (server.metrics.calls), counted by the call
boundary when metrics are on; the service's own feedback_* families (server.metrics.feedback),
read from existing state at scrape time; and the process's own (CPU, memory, file descriptors,
garbage collection). Two hooks take what later parts of the server report: the live tail's open
watchers (count_watchers_with) and webhook deliveries (count_webhook_delivery). They exist
whether the endpoint is on or not, so those parts call them unconditionally.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from server.metrics.calls import CallMetrics
from server.metrics.feedback import FeedbackCollector, FeedbackSources

__all__ = ["WEBHOOK_OUTCOMES", "CallMetrics", "FeedbackSources", "Metrics"]

WEBHOOK_OUTCOMES = ("delivered", "failed", "dropped")
"""Outcomes feedback_webhook_deliveries_total starts with at 0: delivered (the receiver answered
2xx), failed (an attempt failed and will be retried), dropped (given up after the last attempt).
Any other outcome passed to count_webhook_delivery gets a series of its own."""


def _no_watchers() -> Mapping[str, int]:
    return {}


class Metrics:
    """One server's metrics registry and the hooks that feed it."""

    def __init__(self, *, count_calls: bool) -> None:
        """`count_calls`: whether the call boundary counts every call (metrics on)."""
        self.registry = CollectorRegistry()
        """Every family but the gRPC calls' (which render() writes itself, see calls.py)."""
        self.calls = CallMetrics() if count_calls else None
        """What the call boundary counts into; None when metrics are off."""
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)
        self._watchers: Callable[[], Mapping[str, int]] = _no_watchers
        self._deliveries = dict.fromkeys(WEBHOOK_OUTCOMES, 0)
        self._deliveries_lock = threading.Lock()

    def render(self) -> bytes:
        """The whole exposition in the Prometheus text format (0.0.4)."""
        calls = "" if self.calls is None else self.calls.render()
        return calls.encode() + generate_latest(self.registry)

    def collect_from(self, sources: FeedbackSources) -> None:
        """Export the feedback_* metrics of these parts."""
        self.registry.register(FeedbackCollector(sources))

    # ---- hooks ----

    def count_watchers_with(self, watchers: Callable[[], Mapping[str, int]]) -> None:
        """Read feedback_watchers{kind} from `watchers()` at each scrape: open watch streams per
        record kind ("feedback", "interactions", "events"). It runs on the scrape's thread, so
        it must be quick and only read (say, the sizes of the live tail's subscriber sets).
        Until one is registered every kind reads 0."""
        self._watchers = watchers

    def watchers(self, kind: str) -> int:
        """Open watch streams of `kind`, as the registered source tells (0 without one)."""
        return int(self._watchers().get(kind, 0))

    def count_webhook_delivery(self, outcome: str) -> None:
        """Count one webhook delivery attempt in feedback_webhook_deliveries_total{outcome} (see
        WEBHOOK_OUTCOMES); safe from any thread."""
        with self._deliveries_lock:
            self._deliveries[outcome] = self._deliveries.get(outcome, 0) + 1

    def webhook_deliveries(self) -> dict[str, int]:
        """Webhook deliveries so far, by outcome."""
        with self._deliveries_lock:
            return dict(self._deliveries)

    def watchers_by_kind(self) -> Mapping[str, int]:
        """What the registered watcher source says now."""
        return self._watchers()
