"""The service's own metrics (feedback_*), read from the state its parts keep anyway.

Nothing here runs per call: the collector reads, when Prometheus scrapes, the write queue's depth
and its counters, the admission's refusals, the database's health, the stats cache's counts and
the rollups' totals, plus what the hooks of Metrics were fed (watchers, webhook deliveries).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from server.admission import Admission
from server.metrics.calls import bucket_labels
from server.service.group_commit import GroupCommitter
from server.service.histogram import Histogram
from storage import Storage, StorageError
from storage.aggregates.totals import KIND_NAMES

TOTALS_MAX_AGE_SECONDS = 1.0
"""How long one reading of the stored totals serves scrapes: a burst of scrapes costs the
database one query, and no two of them query at once."""


@dataclass(frozen=True, slots=True)
class FeedbackSources:
    """Where the feedback_* metrics come from."""

    write_queue: GroupCommitter
    admission: Admission
    storage: Storage
    database_up: Callable[[], bool]
    watchers: Callable[[], Mapping[str, int]]
    """Open watch streams per record kind (the live tail's)."""
    webhook_deliveries: Callable[[], Mapping[str, int]]
    """Webhook deliveries so far, by outcome."""


HELP = {
    "feedback_write_queue_depth": "Items (records) queued for group commit and not yet taken by "
    "the writer.",
    "feedback_write_queue_limit": "Items the write queue holds before it refuses writes "
    "(--write-queue-limit).",
    "feedback_write_queue_refusals_total": "Write calls the group-commit queue refused, by reason "
    "(WRITE_QUEUE_FULL: RESOURCE_EXHAUSTED with a retry delay; SHUTTING_DOWN: UNAVAILABLE).",
    "feedback_group_commit_batch_items": "Items (records) per committed group-commit batch.",
    "feedback_group_commit_seconds": "Seconds per group-commit batch, from its first transaction "
    "to its commit (busy retries included).",
    "feedback_database_up": "1 when this replica's last write or probe found the database taking "
    "writes (health SERVING), 0 when not.",
    "feedback_stored_rows": "Records stored in the database, by kind, from the rollups' total "
    "cells (the same on every replica; read at most once a second).",
    "feedback_watchers": "Watch (live tail) streams open on this replica, by kind.",
    "feedback_webhook_deliveries_total": "Webhook deliveries attempted by this replica, by "
    "outcome.",
    "feedback_stats_cache_hits_total": "GetStats cache hits on this replica: whole answers "
    "reused unchanged (cache=answer), rollup cells found at their stamp (cache=cell).",
    "feedback_stats_cache_misses_total": "GetStats cache misses on this replica: cacheable "
    "answers read again (cache=answer), rollup cells read from the database (cache=cell).",
    "feedback_admission_refusals_total": "Calls admission refused before reading them, by "
    "reason (TOO_MANY_CALLS, TOO_MANY_EXPORTS, OVER_MEMORY_BUDGET: RESOURCE_EXHAUSTED; "
    "SHUTTING_DOWN: UNAVAILABLE).",
    "feedback_calls_in_progress": "Calls admitted and not yet ended (health checks aside).",
}
"""Every feedback_* family and what it counts (the families collect() yields)."""


class FeedbackCollector:
    """Yields the feedback_* families from their sources at each scrape."""

    def __init__(self, sources: FeedbackSources) -> None:
        self._sources = sources
        self._totals_lock = threading.Lock()
        self._totals: dict[str, int] | None = None
        self._totals_read = -TOTALS_MAX_AGE_SECONDS

    def collect(self) -> Iterator[Metric]:
        """Every family; feedback_stored_rows has no samples while the database is down."""
        sources = self._sources
        queue = sources.write_queue
        yield _gauge("feedback_write_queue_depth", queue.pending)
        yield _gauge("feedback_write_queue_limit", queue.limit)
        yield _counter("feedback_write_queue_refusals_total", "reason", dict(queue.refusals))
        yield _histogram("feedback_group_commit_batch_items", queue.batch_items)
        yield _histogram("feedback_group_commit_seconds", queue.commit_seconds)
        up = sources.database_up()
        yield _gauge("feedback_database_up", 1 if up else 0)
        stored = GaugeMetricFamily(
            "feedback_stored_rows", HELP["feedback_stored_rows"], labels=["kind"]
        )
        totals = self._stored_totals() if up else None
        for kind, count in (totals or {}).items():
            stored.add_metric([kind], count)
        yield stored
        watchers = dict(sources.watchers())
        yield _gauge_by(
            "feedback_watchers", "kind", {kind: watchers.get(kind, 0) for kind in KIND_NAMES}
        )
        yield _counter("feedback_webhook_deliveries_total", "outcome", sources.webhook_deliveries())
        counts = sources.storage.stats_cache_counts
        hits = {"answer": counts.answer_hits, "cell": counts.cell_hits}
        misses = {"answer": counts.answer_misses, "cell": counts.cell_misses}
        yield _counter("feedback_stats_cache_hits_total", "cache", hits)
        yield _counter("feedback_stats_cache_misses_total", "cache", misses)
        admission = sources.admission
        yield _counter("feedback_admission_refusals_total", "reason", dict(admission.refusals))
        yield _gauge("feedback_calls_in_progress", admission.calls_in_progress)

    def _stored_totals(self) -> dict[str, int] | None:
        """The stored records per kind, read again when the last reading is over a second old;
        None when the database cannot answer."""
        with self._totals_lock:
            now = time.monotonic()
            if now - self._totals_read >= TOTALS_MAX_AGE_SECONDS:
                try:
                    self._totals = self._sources.storage.record_totals()
                except StorageError:
                    self._totals = None
                self._totals_read = time.monotonic()
            return self._totals


def _gauge(name: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, HELP[name], value=value)


def _gauge_by(name: str, label: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, HELP[name], labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def _counter(name: str, label: str, values: Mapping[str, float]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, HELP[name], labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def _histogram(name: str, histogram: Histogram) -> HistogramMetricFamily:
    cumulative, total = histogram.snapshot()
    bounds = bucket_labels(histogram.bounds)
    return HistogramMetricFamily(
        name, HELP[name], buckets=list(zip(bounds, cumulative, strict=True)), sum_value=total
    )
