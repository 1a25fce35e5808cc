"""`python -m bench [--quick]`: run every phase, print the table, write bench-results/bench.json.

Exit status: 0 when every acknowledged write was stored (performance targets only print FAIL),
1 when an acknowledged write is missing, 2 when the bench could not run (h2load missing, a server
that would not start).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bench.cores import choose_pinning
from bench.h2load import H2loadMissingError, require_h2load
from bench.machine import machine_info
from bench.pairs import summarize_pairs
from bench.profiles import FULL, QUICK
from bench.results import BenchReport
from bench.runner import QUIET_LOGGING, REAL_SERVER_FLAGS, PhaseRunner
from bench.server_process import REPOSITORY_ROOT, ServerStartError
from bench.table import render
from bench.targets import evaluate_targets, write_cpu_us

DEFAULT_OUTPUT = Path("bench-results/bench.json")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; see the module docstring for the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="tiny request counts: a smoke test under 40 s"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to write the JSON report (default {DEFAULT_OUTPUT})",
    )
    args = parser.parse_args(argv)
    try:
        require_h2load()
    except H2loadMissingError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2

    profile = QUICK if args.quick else FULL
    pinning = choose_pinning()
    report = BenchReport(
        mode=profile.name,
        machine=machine_info(pinning, REPOSITORY_ROOT),
        settings={
            "profile": asdict(profile),
            "real_server_flags": [*REAL_SERVER_FLAGS, *QUIET_LOGGING],
            "pinning": pinning.describe(),
        },
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="feedback-bench-") as workdir:
        runner = PhaseRunner(profile, Path(workdir), pinning, _progress)
        try:
            runner.run_all()
        except ServerStartError as error:
            print(f"bench: a server did not start: {error}", file=sys.stderr)
            return 2
        finally:
            report.phases = runner.phases
    report.duration_seconds = time.monotonic() - started
    # Other work on the machine shows here; it shifts real and ceiling figures alike.
    report.machine["load_average_at_end"] = list(os.getloadavg())
    report.pairs = summarize_pairs(report.phases)
    report.targets = evaluate_targets(report.phases)
    report.write_cpu_us = write_cpu_us(report.phases)
    report.write(args.output)
    print(render(report))
    print(f"wrote {args.output}")
    return 1 if report.missing_rows else 0


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
