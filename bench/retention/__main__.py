"""`python -m bench.retention [--quick]`: durable SubmitFeedback at c=16 while the retention
sweep expires 1M rows, against the same writes alone, in one run.

The file is prepared once (bench.retention.dataset) and copied for every round, so rounds start
equal. Rounds of writes alone and rounds with the sweep alternate (A B, B A, ...), each on a
fresh server process pinned to one core with h2load on the other, for a fixed window; the
verdict is the median of each round's own ratio against the issue's 0.8. Then one round per
kind, its period alone in --retention, gives each kind's expiry rate under the writes and so an
estimate of how long the whole expiry takes, which on 1M rows is far longer than a window.

Writes the table to stdout and bench-results/bench-retention.json. Exit status: 0 when every
check passed (the verdict only prints FAIL), 1 when one failed (an acknowledged write missing,
a server that did not exit 0, rows expired without --retention, a sweep that expired nothing),
2 when the bench could not run (h2load missing, a server that would not start, h2load failing).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bench.cores import Pinning, choose_pinning, pin_this_thread, running_on
from bench.machine import machine_info
from bench.retention.dataset import KIND_TABLES, RETENTION, TIME_COLUMNS, kind_retention, prepare
from bench.retention.report import ALONE, SWEEP, Report, render
from bench.retention.rounds import CONCURRENCY, Round, RoundResult, RoundSettings
from bench.runner import QUIET_LOGGING
from bench.scratch import COULD_NOT_RUN, h2load_missing, progress_printer, run_in_scratch
from bench.server_process import REPOSITORY_ROOT

NAME = "bench-retention"
DEFAULT_OUTPUT = Path(f"bench-results/{NAME}.json")
_progress = progress_printer(NAME)


@dataclass(frozen=True, slots=True)
class Profile:
    """How big a run is."""

    name: str
    rows: int
    """Expirable rows in the prepared file."""
    rounds: int
    """Rounds per side."""
    window_seconds: int
    warm_up_requests: int


FULL = Profile("full", rows=1_000_000, rounds=3, window_seconds=30, warm_up_requests=1000)
QUICK = Profile("quick", rows=60_000, rounds=2, window_seconds=2, warm_up_requests=100)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; see the module docstring for the exit status."""
    args = _parser().parse_args(argv)
    if h2load_missing(NAME):
        return COULD_NOT_RUN
    profile = QUICK if args.quick else FULL
    profile = replace(
        profile,
        rows=args.rows or profile.rows,
        rounds=args.rounds or profile.rounds,
        window_seconds=args.seconds or profile.window_seconds,
    )
    every_core = os.sched_getaffinity(0)
    pinning = choose_pinning()
    report = Report(
        mode=profile.name,
        machine=machine_info(pinning, REPOSITORY_ROOT),
        settings={
            **asdict(profile),
            "concurrency": CONCURRENCY,
            "retention": RETENTION,
            "server_flags": list(QUIET_LOGGING),
            "pinning": pinning.describe(),
        },
    )
    started = time.monotonic()
    if not run_in_scratch(
        NAME,
        args.output,
        args.keep,
        lambda workdir: _run(report, profile, workdir, pinning, every_core),
        report.machine,
    ):
        return COULD_NOT_RUN
    report.duration_seconds = time.monotonic() - started
    report.write(args.output)
    print(render(report))
    print(f"wrote {args.output}")
    return 0 if report.passed_checks else 1


def _run(
    report: Report, profile: Profile, workdir: Path, pinning: Pinning, every_core: set[int]
) -> None:
    """Prepare the file, alternate the two sides, then sweep each kind alone."""
    # The orchestrator, its counting thread and h2load share the load core; the loader does not.
    pin_this_thread(pinning.load_core)
    with running_on(every_core):
        prepared = prepare(workdir / "prepared.sqlite3", profile.rows, _progress)
    report.dataset = {
        "expirable": prepared.expirable,
        "cutoff": prepared.cutoff.isoformat(),
        "load_seconds": prepared.load_seconds,
        "rollup_seconds": prepared.rollup_seconds,
        "file_bytes": prepared.database.stat().st_size,
    }
    rounds = Round(
        prepared,
        RoundSettings(profile.window_seconds, profile.warm_up_requests),
        pinning,
        workdir / "round",
    )
    every_table = tuple(TIME_COLUMNS)
    for number in range(1, profile.rounds + 1):
        for side in (ALONE, SWEEP) if number % 2 else (SWEEP, ALONE):
            result = rounds.run(number, None if side == ALONE else RETENTION, every_table)
            (report.alone if side == ALONE else report.sweep).append(result)
            _progress(f"round {number} {side}: {_described(result)}")
    for number, (kind, tables) in enumerate(KIND_TABLES.items(), profile.rounds + 1):
        result = rounds.run(number, kind_retention(kind), tables)
        report.kinds[kind] = result
        _progress(f"round {number} sweeping {kind} alone: {_described(result)}")


def _described(result: RoundResult) -> str:
    text = (
        f"{result.requests_per_second:,.0f} writes/s, p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms"
    )
    if result.retention is not None:
        rate = result.expired_rows_per_second
        text += f"; {result.expired_in_window:,} rows expired ({rate:,.0f}/s)"
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK.rows:,} rows, {QUICK.rounds} rounds per side of {QUICK.window_seconds} s: "
        "a smoke test",
    )
    parser.add_argument(
        "--rows", type=int, help=f"expirable rows to prepare (default {FULL.rows:,})"
    )
    parser.add_argument(
        "--rounds", type=int, help=f"rounds per side (default {FULL.rounds}, at least 1)"
    )
    parser.add_argument(
        "--seconds", type=int, help=f"write window of a round (default {FULL.window_seconds})"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to write the JSON report (default {DEFAULT_OUTPUT}); scratch files go next "
        "to it",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the prepared file and the last server log"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
