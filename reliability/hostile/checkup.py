"""What must hold after every hostile phase: the process lives, an ordinary client is answered
(fast), and the server's memory stays under a stated bound."""

from __future__ import annotations

import time
from collections import Counter

from bench.percentiles import percentile
from llmfeedback import FeedbackClient, FeedbackError, RetryPolicy
from reliability.hostile.server import HostileServer, wait_for_death
from reliability.results import ScenarioResult

RSS_LIMIT_MB = 500.0
"""The server's resident memory must stay below this through every phase (it starts near 90)."""
ORDINARY_TIMEOUT_SECONDS = 5.0
"""An ordinary call that takes longer than this counts as not answered."""
DYING_SECONDS = 1.0
"""A call that failed may have failed because the server is dying: give it this long to die."""
NO_RETRIES = RetryPolicy(max_attempts=1)
"""The ordinary client must be answered at the first attempt: a retry would hide a refusal."""


def ordinary_client(address: str) -> FeedbackClient:
    """A plain FeedbackClient as an application would hold one, without retries."""
    return FeedbackClient(address, timeout=ORDINARY_TIMEOUT_SECONDS, retry=NO_RETRIES)


def get_stats_latencies_ms(address: str, calls: int) -> tuple[list[float], Counter[str]]:
    """`calls` GetStats one after another on one fresh client (after one warm-up call that
    opens the connection): each one's milliseconds, and the codes of those that failed."""
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    with ordinary_client(address) as client:
        try:
            client.get_stats()
        except FeedbackError as error:
            failures[error.code.name] += 1
        for _ in range(calls):
            started = time.perf_counter()
            try:
                client.get_stats()
            except FeedbackError as error:
                failures[error.code.name] += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies, failures


def p99_ms(latencies: list[float]) -> float | None:
    """Nearest-rank p99 of the latencies; None when there are none."""
    return round(percentile(sorted(latencies), 0.99), 2) if latencies else None


def checkup(server: HostileServer, result: ScenarioResult, after: str) -> bool:
    """Record in `result` whether, after `after`, the server is alive, answers GetStats and
    ListFeedback to an ordinary client, and keeps its RSS under RSS_LIMIT_MB. Returns alive."""
    if not server.alive():
        return _dead(server, result, after)
    answered: list[str] = []
    try:
        with ordinary_client(server.address) as client:
            client.get_stats()
            answered.append("GetStats")
            client.list_feedback(page_size=10)
            answered.append("ListFeedback")
    except FeedbackError as error:
        wait_for_death(server, DYING_SECONDS)
        if not server.alive():
            return _dead(server, result, after)
        result.check(
            False, f"after {after}: an ordinary client got no answer ({error.code.name}: {error})"
        )
    rss = server.rss_mb()
    result.figures["rss_mb_after"] = None if rss is None else round(rss, 1)
    result.figures["peak_rss_mb"] = round(server.peak_rss_mb, 1)
    result.check(
        server.peak_rss_mb < RSS_LIMIT_MB,
        f"after {after}: server RSS peaked at {server.peak_rss_mb:.0f} MB (limit "
        f"{RSS_LIMIT_MB:.0f} MB)",
    )
    result.figures["ordinary_calls_answered"] = answered
    return server.alive() or _dead(server, result, after)


def _dead(server: HostileServer, result: ScenarioResult, after: str) -> bool:
    """Record the death (how, and the faulthandler's words); always False."""
    result.check(False, f"after {after}: {server.death()}")
    result.figures["server_deaths"] = result.figures.get("server_deaths", 0) + 1
    return False
