"""The hostile phases in the order they run, and the `hostile` reliability scenario over them.

tests/hostile runs each phase alone at CI_PLAN's sizes; `python -m reliability --scenarios
hostile` runs them all at FULL_PLAN's (or CI_PLAN's with --quick) and adds a summary row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reliability.hostile import abandon, pressure
from reliability.hostile.dataset import Dataset, seed
from reliability.hostile.phase import Phase, run_phase
from reliability.hostile.plan import HostilePlan
from reliability.results import ScenarioResult

HOSTILE = "hostile"
SUMMARY = "hostile: summary"


@dataclass(frozen=True, slots=True)
class HostilePhase:
    """One phase: its title, what it does, and the FEEDBACK_* settings its server runs with."""

    title: str
    body: Callable[[Phase, HostilePlan], Awaitable[None]]
    environment: Mapping[str, str] = field(default_factory=dict)

    async def run(self, dataset: Dataset, workdir: Path, plan: HostilePlan) -> ScenarioResult:
        """Run it on a fresh server; the result carries a one-line summary for the table."""

        async def body(phase: Phase) -> None:
            await self.body(phase, plan)

        result = await run_phase(self.title, dataset, workdir, body, self.environment)
        result.figures["summary"] = _summary(result.figures)
        return result


KILLED_CLIENTS = HostilePhase(
    "killed export clients", abandon.killed_clients, abandon.ABANDON_ENVIRONMENT
)
DEADLINE_EXPORTS = HostilePhase(
    "exports past their deadline", abandon.deadline_exports, abandon.ABANDON_ENVIRONMENT
)
CANCELLED_EXPORTS = HostilePhase(
    "cancelled exports", abandon.cancelled_exports, abandon.ABANDON_ENVIRONMENT
)
RESET_EXPORTS = HostilePhase(
    "TCP-reset exports", abandon.reset_exports, abandon.ABANDON_ENVIRONMENT
)
STOPPED_READERS = HostilePhase(
    "readers that stop reading", abandon.stopped_readers, abandon.ABANDON_ENVIRONMENT
)
ABANDONED_INGESTS = HostilePhase("abandoned Ingest streams", abandon.abandoned_ingests)
IDLE_CONNECTIONS = HostilePhase(
    "idle connections", pressure.idle_connections, pressure.IDLE_ENVIRONMENT
)
SLOW_READERS = HostilePhase("slow readers", pressure.slow_readers)
STALLED_EXPORTS = HostilePhase(
    "stalled exports", pressure.stalled_exports, pressure.STALL_ENVIRONMENT
)
ONE_CALLER_CAP = HostilePhase("one caller's export cap", pressure.one_caller_cap)
FLOOD = HostilePhase("write flood", pressure.flood)
COSTLY_TEXTS = HostilePhase("costly texts to redact", pressure.costly_texts)
HALF_SENT = HostilePhase(
    "half-sent messages", pressure.half_sent_messages, pressure.HALF_SENT_ENVIRONMENT
)
PHASES = (
    KILLED_CLIENTS,
    DEADLINE_EXPORTS,
    CANCELLED_EXPORTS,
    RESET_EXPORTS,
    STOPPED_READERS,
    ABANDONED_INGESTS,
    IDLE_CONNECTIONS,
    SLOW_READERS,
    STALLED_EXPORTS,
    ONE_CALLER_CAP,
    FLOOD,
    COSTLY_TEXTS,
    HALF_SENT,
)


def seed_dataset(workdir: Path, plan: HostilePlan) -> Dataset:
    """The seeded file every phase copies."""
    return seed(workdir / "seed", events=plan.seed_events, feedback=plan.seed_feedback)


async def hostile_scenario(
    workdir: Path, plan: HostilePlan, progress: Callable[[str], None]
) -> list[ScenarioResult]:
    """Every phase on SQLite, each on its own server, then the summary row."""
    started = time.monotonic()
    progress(f"{HOSTILE}: seeding {plan.seed_events:,} events and {plan.seed_feedback:,} feedback")
    dataset = await asyncio.to_thread(seed_dataset, workdir, plan)
    results: list[ScenarioResult] = []
    for phase in PHASES:
        progress(f"{HOSTILE}: {phase.title}")
        results.append(await phase.run(dataset, workdir, plan))
    summary = summarize(results)
    summary.seconds = time.monotonic() - started
    return [*results, summary]


def summarize(results: list[ScenarioResult]) -> ScenarioResult:
    """The counts the scenario reports, with its two must-be-zero checks: server deaths and
    acknowledged writes missing."""
    summary = ScenarioResult(SUMMARY, "sqlite")
    figures = {result.scenario.removeprefix("hostile: "): result.figures for result in results}
    abandoned = {
        title: values.get("abandoned_mid_stream", 0)
        for title, values in figures.items()
        if "abandoned_mid_stream" in values
    }
    refused = sum(
        int(values.get("refused", {}).get("RESOURCE_EXHAUSTED", 0))
        + int(values.get("codes", {}).get("RESOURCE_EXHAUSTED", 0))
        for values in figures.values()
    )
    deaths = sum(int(values.get("server_deaths", 0)) for values in figures.values())
    missing = sum(result.missing or 0 for result in results)
    peak = max((float(values.get("peak_rss_mb", 0)) for values in figures.values()), default=0.0)
    p99 = figures.get(SLOW_READERS.title, {}).get("get_stats_p99_ms_with_slow_readers")
    summary.acknowledged = sum(result.acknowledged or 0 for result in results)
    summary.missing = missing
    summary.figures.update(
        abandoned_mid_stream=abandoned,
        resource_exhausted=refused,
        peak_rss_mb=peak,
        get_stats_p99_ms_with_slow_readers=p99,
        server_deaths=deaths,
        phases_failed=[r.scenario for r in results if r.failures],
    )
    summary.figures["summary"] = (
        f"{sum(abandoned.values())} streams abandoned mid-stream; {refused} RESOURCE_EXHAUSTED; "
        f"peak RSS {peak:.0f} MB; GetStats p99 beside slow readers {p99} ms; "
        f"{deaths} server deaths; {len(summary.figures['phases_failed'])} phases failed"
    )
    summary.check(deaths == 0, f"the server died {deaths} times")
    summary.check(missing == 0, f"{missing} acknowledged writes are missing")
    return summary


def _summary(figures: Mapping[str, Any]) -> str:
    """A phase's figures in a few words for the reliability table."""
    parts: list[str] = []
    for key, label in (
        ("abandoned_mid_stream", "mid-stream"),
        ("admitted", "admitted"),
        ("resource_exhausted", "RESOURCE_EXHAUSTED"),
        ("idle_connections", "idle connections"),
        ("flood_calls", "flood calls"),
        ("get_stats_p99_ms_with_slow_readers", "GetStats p99 ms"),
        ("get_stats_p99_ms_with_idle_connections", "GetStats p99 ms"),
        ("rss_growth_mb", "RSS growth MB"),
    ):
        if key in figures:
            parts.append(f"{label} {figures[key]}")
    if "logged" in figures:
        parts.append(f"logged {figures['logged']}")
    if "codes" in figures:
        parts.append(f"codes {figures['codes']}")
    parts.append(f"peak RSS {figures.get('peak_rss_mb', '?')} MB")
    parts.append(f"deaths {figures.get('server_deaths', 0)}")
    return "; ".join(parts)
