"""The goals the service is held to, evaluated on a run's phases."""

from __future__ import annotations

from collections.abc import Sequence

from bench.results import OK, PhaseResult, TargetResult

TARGET_CONCURRENCY = 64
MEMORY_CONCURRENCY = 256
MIN_THROUGHPUT_RATIO = 0.8
MAX_P99_RATIO = 1.5
MIN_INGESTION_RATIO = 1.0
MAX_RSS_MB = 200.0
MIN_AUTH_THROUGHPUT_RATIO = 0.95
"""Authentication may cost durable writes at most 5 %."""
MIN_METRICS_THROUGHPUT_RATIO = 0.97
"""Prometheus metrics may cost durable writes at most 3 %."""


def evaluate_targets(phases: Sequence[PhaseResult]) -> list[TargetResult]:
    """Each target with what this run measured (None when the phase did not run)."""
    submit = _find(phases, "unary", "SubmitFeedback", TARGET_CONCURRENCY)
    ingestion = [
        phase.throughput_ratio
        for phase in phases
        if phase.phase in ("batch", "ingest")
        and phase.status == OK
        and phase.throughput_ratio is not None
    ]
    memory = [
        phase.rss_high_water_mb
        for phase in phases
        if phase.phase == "unary"
        and phase.concurrency == MEMORY_CONCURRENCY
        and phase.rss_high_water_mb is not None
    ]
    checks = [phase.rows for phase in phases if phase.rows is not None]
    toggled = [phase for phase in phases if phase.phase == "auth-toggle" and phase.status == OK]
    metered = [phase for phase in phases if phase.phase == "metrics-toggle" and phase.status == OK]
    return [
        TargetResult(
            "unary-throughput",
            f"durable SubmitFeedback at c={TARGET_CONCURRENCY}: req/s over the ceiling's",
            None if submit is None else submit.throughput_ratio,
            MIN_THROUGHPUT_RATIO,
            ">=",
        ),
        TargetResult(
            "unary-p99",
            f"durable SubmitFeedback at c={TARGET_CONCURRENCY}: p99 over the ceiling's p99",
            None if submit is None else submit.p99_ratio,
            MAX_P99_RATIO,
            "<=",
        ),
        TargetResult(
            "ingestion-throughput",
            "best of LogEvents batches and Ingest stream: rows/s over raw executemany rows/s",
            max(ingestion) if ingestion else None,
            MIN_INGESTION_RATIO,
            ">=",
        ),
        TargetResult(
            "peak-rss",
            f"server peak RSS (VmHWM) in MB after the c={MEMORY_CONCURRENCY} unary phases",
            max(memory) if memory else None,
            MAX_RSS_MB,
            "<=",
        ),
        TargetResult(
            "auth-throughput",
            f"durable SubmitFeedback at c={TARGET_CONCURRENCY}, req/s with an ingest key over "
            "without, one server with its key check switched on and off: median of alternating "
            "rounds (the two-server auth pair above is reported, not judged: its noise is larger)",
            toggled[0].throughput_ratio if toggled else None,
            MIN_AUTH_THROUGHPUT_RATIO,
            ">=",
        ),
        TargetResult(
            "metrics-throughput",
            f"durable SubmitFeedback at c={TARGET_CONCURRENCY}, req/s with metrics on (every call "
            "counted, /metrics scraped each second) over off, one server: median of alternating "
            "rounds",
            metered[0].throughput_ratio if metered else None,
            MIN_METRICS_THROUGHPUT_RATIO,
            ">=",
        ),
        TargetResult(
            "rows-acknowledged",
            "phases where rows stored != writes acknowledged (0 required)",
            float(sum(not check.exact for check in checks)) if checks else None,
            0.0,
            "<=",
        ),
    ]


WRITE_CPU_SIDES = (("quiet", "unary"), ("INFO logs", "unary-logging"), ("ceiling", "ceiling"))
"""The phases whose server CPU per durable SubmitFeedback the report prints beside the ratios."""


def write_cpu_us(phases: Sequence[PhaseResult]) -> dict[str, float | None]:
    """Server CPU µs per durable SubmitFeedback at the target concurrency: the real server with
    logs quiet and with its default INFO logs, and the empty ceiling; None where not measured.

    Unlike req/s ratios, this barely moves with other work on a shared machine."""
    figures: dict[str, float | None] = {}
    for side, phase in WRITE_CPU_SIDES:
        found = _find(phases, phase, "SubmitFeedback", TARGET_CONCURRENCY)
        figures[side] = None if found is None else found.cpu_us_per_call
    return figures


def _find(
    phases: Sequence[PhaseResult], phase: str, method: str, concurrency: int
) -> PhaseResult | None:
    return next(
        (
            result
            for result in phases
            if result.phase == phase
            and result.method == method
            and result.concurrency == concurrency
            and result.status == OK
        ),
        None,
    )
