"""One hostile phase: a fresh server over a copy of the seeded file, the damage, the checks.

Each phase gets its own server so a phase that kills it cannot hide what the next would find,
and records everything in a reliability ScenarioResult, so the tests and the `hostile` scenario
judge with the same code.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reliability.hostile.checkup import checkup
from reliability.hostile.dataset import Dataset
from reliability.hostile.rpc_log import RpcLog
from reliability.hostile.server import HostileServer, exit_description
from reliability.results import ScenarioResult

SERVICE = "/feedback.v1.FeedbackService/"
EXPORT_METHODS = frozenset({SERVICE + "ExportEvents", SERVICE + "ExportFeedback"})
ABANDONED_CODES = frozenset({"CANCELLED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})
"""What the server may log for a call its client abandoned (or that it refused first)."""
BASE_ENVIRONMENT = {
    "FEEDBACK_GRACE_PERIOD": "2",
    "FEEDBACK_MAX_CONCURRENT_CALLS": "1000",
    "FEEDBACK_MAX_STREAMS_PER_CONNECTION": "100",
    "FEEDBACK_MAX_EXPORTS": "16",
    "FEEDBACK_MAX_EXPORTS_PER_CALLER": "4",
    "FEEDBACK_STREAM_STALL_TIMEOUT": "30",
    "FEEDBACK_MESSAGE_TIMEOUT": "30",
    "FEEDBACK_CONNECTION_IDLE_TIMEOUT": "300",
    "FEEDBACK_CONNECTION_MAX_AGE": "3600",
    "FEEDBACK_MEMORY_LIMIT_MB": "1024",
}
"""The limits the fixed server is to have, at their defaults (the current server ignores them);
phases override what makes them fast. A short grace keeps stops quick."""
LOG_SETTLE_SECONDS = 10.0
"""How long the log may lag behind the calls it reports."""


@dataclass(slots=True)
class Phase:
    """What a phase's body works with."""

    server: HostileServer
    result: ScenarioResult
    log: RpcLog
    workdir: Path
    database_url: str
    dataset: Dataset
    death_recorded: bool = False

    def alive(self) -> bool:
        """Whether the server still runs; a death is recorded by the next checkup."""
        return self.server.alive()

    async def checkup(self, after: str) -> bool:
        """The checks that follow every step (see reliability.hostile.checkup); returns alive.
        A death is recorded once, by the first checkup after it."""
        if self.death_recorded:
            return False
        alive = await asyncio.to_thread(checkup, self.server, self.result, after)
        self.death_recorded = not alive
        return alive


@dataclass(slots=True)
class Tally:
    """What the clients of one kind of abandonment saw."""

    started: int = 0
    """Calls started (their headers may or may not have reached the server)."""
    mid_stream: int = 0
    """Abandoned after the server had sent them something: certainly seen by the server."""
    completed: int = 0
    """Exports that ended OK before they could be abandoned."""
    refused: Counter[str] = field(default_factory=Counter)
    """Status codes the server answered instead of streaming (RESOURCE_EXHAUSTED...)."""
    refusal_details: Counter[str] = field(default_factory=Counter)
    """Detail messages of the RESOURCE_EXHAUSTED answers: RetryInfo, QuotaFailure..."""
    refused_without_retry_info: int = 0
    unexpected: Counter[str] = field(default_factory=Counter)
    """Anything else a client saw (UNAVAILABLE, INTERNAL, connection errors...)."""

    def refusal(self, code: str, details: Collection[str]) -> None:
        """Count an answer that came instead of a stream."""
        self.refused[code] += 1
        self.refusal_details.update(details)
        if code == "RESOURCE_EXHAUSTED" and "RetryInfo" not in details:
            self.refused_without_retry_info += 1

    def figures(self) -> dict[str, object]:
        """The tally as result figures."""
        return {
            "started": self.started,
            "abandoned_mid_stream": self.mid_stream,
            "completed_before_abandoned": self.completed,
            "refused": dict(self.refused),
            "refusal_details": dict(self.refusal_details),
            "unexpected": dict(self.unexpected),
        }


async def judge_tally(
    phase: Phase,
    tally: Tally,
    *,
    since: int,
    methods: Collection[str],
    least_mid_stream: int,
    exact: bool,
) -> None:
    """The verdict on one kind of abandonment: enough streams were really abandoned mid-stream,
    refusals carry RetryInfo, clients saw nothing unexpected, and the server logged each call
    once. `exact`: every started call surely reached the server, so the count must match."""
    result = phase.result
    result.figures.update(tally.figures())
    if not phase.alive():
        return  # the death is the finding; what clients saw after it follows from it
    result.check(
        tally.mid_stream >= least_mid_stream,
        f"only {tally.mid_stream} of {tally.started} streams were abandoned mid-stream "
        f"(at least {least_mid_stream} must be, or the phase proves nothing)",
    )
    result.check(
        not tally.unexpected,
        f"clients saw {dict(tally.unexpected)} (only the abandonment, or RESOURCE_EXHAUSTED)",
    )
    other_refusals = {code: n for code, n in tally.refused.items() if code != "RESOURCE_EXHAUSTED"}
    result.check(not other_refusals, f"exports were refused with {other_refusals}")
    result.check(
        tally.refused_without_retry_info == 0,
        f"{tally.refused_without_retry_info} RESOURCE_EXHAUSTED answers carry no RetryInfo",
    )
    surely_logged = tally.mid_stream + tally.completed
    # A refusal may come before the logging interceptor, so refused calls may go unlogged.
    lowest = tally.started - tally.refused.total() if exact else surely_logged
    logged = await asyncio.to_thread(
        phase.log.settle, since, methods, expected=lowest, timeout=LOG_SETTLE_SECONDS
    )
    result.figures["logged"] = dict(logged)
    # gRPC completes a write once its transport buffers the message, several MB per stream, so
    # an export whose rows fit there has ended OK on the server before its client walks away:
    # OK is a truthful line for it, and the server cannot know better.
    allowed = ABANDONED_CODES | {"OK"}
    result.check(
        set(logged) <= allowed,
        f"the server logged {dict(logged)} for abandoned calls (expected only "
        f"{', '.join(sorted(allowed))})",
    )
    result.check(
        lowest <= logged.total() <= tally.started,
        f"the server logged {logged.total()} calls for {tally.started} started "
        f"({surely_logged} surely reached it): each must be logged exactly once",
    )


async def bounded(
    count: int, concurrency: int, one: Callable[[int], Awaitable[None]], phase: Phase
) -> None:
    """Run one(0..count-1), `concurrency` at a time, starting none once the server is dead."""
    gate = asyncio.Semaphore(concurrency)

    async def gated(number: int) -> None:
        async with gate:
            if not phase.alive():
                return
            try:
                await one(number)
            except Exception:
                if phase.alive():
                    raise
                # A client of a server that just died fails somehow; the death is the finding.

    await asyncio.gather(*(gated(number) for number in range(count)))


PhaseBody = Callable[[Phase], Awaitable[None]]


async def run_phase(
    title: str,
    dataset: Dataset,
    workdir: Path,
    body: PhaseBody,
    environment: Mapping[str, str] | None = None,
) -> ScenarioResult:
    """Start a server over a copy of `dataset` with BASE_ENVIRONMENT and `environment`, run
    `body`, check up on the server, stop it, and return what was found. Never raises."""
    result = ScenarioResult(f"hostile: {title}", "sqlite")
    result.figures["server_deaths"] = 0
    started = time.monotonic()
    name = "".join(c if c.isalnum() else "-" for c in title)
    database_url = dataset.copy_to(workdir, name)
    log_file = workdir / f"{name}.log"
    server = HostileServer(database_url, log_file, {**BASE_ENVIRONMENT, **(environment or {})})
    try:
        server.start()
        phase = Phase(server, result, RpcLog(log_file), workdir, database_url, dataset)
        try:
            await body(phase)
        except Exception as error:
            if server.alive():
                result.check(False, f"the phase could not finish: {type(error).__name__}: {error}")
        await phase.checkup("the phase")
    except Exception as error:
        result.check(False, f"the phase could not run: {type(error).__name__}: {error}")
    finally:
        was_alive = server.alive()
        exit_code = server.stop()
        result.figures["exit_code_at_stop"] = exit_code
        result.figures["peak_rss_mb"] = round(server.peak_rss_mb, 1)
        if was_alive and exit_code is not None:
            result.check(
                exit_code == 0,
                f"SIGTERM after the phase: {exit_description(exit_code)}, not a clean exit",
            )
        result.figures["log_file"] = str(log_file)
        result.seconds = time.monotonic() - started
    return result
