"""Rounds of durable SubmitFeedback at c=64 against one server in this process, with one feature
switched off and on between them: what the feature costs, everything else equal.

Two server processes on two databases differ from each other on this shared machine by more than
a small feature costs, so `bench.auth_toggle` and `bench.redaction_toggle` switch the feature in
one server between alternating rounds (h2load on the other core) and compare the medians of the
per-round ratios and of the process CPU per call.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench.cores import choose_pinning, pin_this_thread
from bench.h2load import run_h2load
from server.__main__ import event_loop_factory
from server.app import FeedbackServer, create_server
from server.config import parse_settings

SIDES = ("without", "with")


@dataclass(frozen=True)
class Toggle:
    """One feature to measure: how to start the server and switch the feature."""

    arguments: Sequence[str]
    """Server flags beyond the data directory and address."""
    prepare: Callable[[Path], None]
    """Run on the data directory before the server starts (say, create a key)."""
    switch: Callable[[FeedbackServer, bool], None]
    """Switch the feature on (True) or off in the running server."""
    headers: Callable[[bool], list[str]]
    """h2load headers of a round with the feature on or off."""
    body: bytes
    """The gRPC body every call sends."""
    path: str


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(
    toggle: Toggle, rounds: int, requests: int
) -> dict[str, list[tuple[float, float]]]:
    """(req/s, CPU µs per call) of every round but the warm-up one, per side."""
    pinning = choose_pinning()
    pin_this_thread(pinning.server_core)
    results: dict[str, list[tuple[float, float]]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        data = work / "data"
        data.mkdir()
        toggle.prepare(data)
        _, settings = parse_settings(
            [*("--data-dir", str(data), "--address", "127.0.0.1:0"), *toggle.arguments]
        )
        server, port = await create_server(settings)
        await server.start()
        body = work / "body"
        body.write_bytes(toggle.body)
        loop = asyncio.get_running_loop()
        try:
            for number in range(rounds + 1):
                for side in SIDES if number % 2 == 0 else SIDES[::-1]:
                    toggle.switch(server, side == "with")
                    before = _cpu_seconds()
                    run = await loop.run_in_executor(
                        None,
                        partial(
                            run_h2load,
                            f"http://127.0.0.1:{port}{toggle.path}",
                            body,
                            requests=requests,
                            concurrency=64,
                            log_file=work / "h2load.log",
                            pinning=pinning,
                            timeout_seconds=120,
                            headers=toggle.headers(side == "with"),
                        ),
                    )
                    cpu_us = (_cpu_seconds() - before) / run.summary.status_2xx * 1e6
                    if number > 0:  # the first round warms up both sides
                        results[side].append((run.requests_per_second, cpu_us))
                        print(
                            f"round {number} {side}: {run.requests_per_second:,.0f} req/s, "
                            f"{cpu_us:.0f} µs CPU/call",
                            flush=True,
                        )
        finally:
            await server.stop(1.0)
    return results


def summarize(results: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
    """Medians over the rounds: req/s per side, the per-round req/s ratio, CPU µs per call."""
    pairs = list(zip(results["without"], results["with"], strict=True))
    return {
        "rounds": float(len(pairs)),
        "without_rps": statistics.median(without[0] for without, _ in pairs),
        "with_rps": statistics.median(with_[0] for _, with_ in pairs),
        "ratio": statistics.median(with_[0] / without[0] for without, with_ in pairs),
        "without_cpu_us": statistics.median(without[1] for without, _ in pairs),
        "with_cpu_us": statistics.median(with_[1] for _, with_ in pairs),
        "extra_cpu_us": statistics.median(with_[1] - without[1] for without, with_ in pairs),
    }


def parse_arguments(
    prog: str, description: str | None, rounds: int, argv: Sequence[str] | None
) -> argparse.Namespace:
    """The options every toggle takes: rounds per side, calls per round, a JSON file."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--rounds", type=int, default=rounds, help=f"rounds per side (default {rounds})"
    )
    parser.add_argument("--requests", type=int, default=4000, help="calls per round")
    parser.add_argument("--json", type=Path, help="also write the medians here")
    return parser.parse_args(argv)


def run(toggle: Toggle, rounds: int, requests: int) -> dict[str, float]:
    """The medians of `rounds` alternating rounds per side, on uvloop as the server runs."""
    with asyncio.Runner(loop_factory=event_loop_factory("uvloop")) as runner:
        return summarize(runner.run(measure(toggle, rounds, requests)))


def cost(summary: dict[str, float], requests: int) -> str:
    """The CPU the feature adds per call, and what the medians are of."""
    extra, base = summary["extra_cpu_us"], summary["without_cpu_us"]
    return (
        f"CPU {extra:+.1f} µs/call over {base:.0f} ({extra / base:+.1%}); medians of "
        f"{summary['rounds']:.0f} alternating rounds of {requests} calls"
    )
