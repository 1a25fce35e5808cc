"""`python -m reliability [--quick]`: damage real servers, print one table, write the JSON.

Exit status: 0 when every scenario passed or was skipped, 1 when any failed.
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

from reliability.databases import DATABASE_KINDS
from reliability.postgres_instance import DEFAULT_BIN_DIR
from reliability.profiles import FULL, QUICK
from reliability.results import SuiteReport
from reliability.suite import SCENARIOS, Suite
from reliability.table import render

DEFAULT_OUTPUT = Path("bench-results/reliability.json")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; see the module docstring for the exit status."""
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="about 2,000 acknowledged writes per scenario"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from {','.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument(
        "--databases",
        default=",".join(DATABASE_KINDS),
        help=f"comma-separated, from {','.join(DATABASE_KINDS)} (default: both)",
    )
    parser.add_argument(
        "--postgres-url",
        default=None,
        help="run kill/term/storm on this PostgreSQL server (its own databases, created and "
        "left for inspection) instead of the suite's private cluster; the outage scenario always "
        "uses the private cluster",
    )
    parser.add_argument(
        "--postgres-bin-dir",
        type=Path,
        default=DEFAULT_BIN_DIR,
        help=f"where initdb and pg_ctl live (default {DEFAULT_BIN_DIR})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to write the JSON report (default {DEFAULT_OUTPUT})",
    )
    args = parser.parse_args(argv)
    scenarios = _choices(parser, args.scenarios, SCENARIOS, "--scenarios")
    databases = _choices(parser, args.databases, DATABASE_KINDS, "--databases")
    profile = QUICK if args.quick else FULL
    report = SuiteReport(
        mode=profile.name,
        settings={
            "profile": asdict(profile),
            "scenarios": scenarios,
            "databases": databases,
            "cpus": os.cpu_count(),
        },
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="feedback-reliability-") as workdir:
        suite = Suite(
            profile,
            Path(workdir),
            _progress,
            postgres_url=args.postgres_url,
            postgres_bin_dir=args.postgres_bin_dir,
        )
        report.results = suite.run(scenarios, databases)
    report.duration_seconds = time.monotonic() - started
    report.settings["load_average_at_end"] = list(os.getloadavg())
    report.write(args.output)
    print(render(report))
    print(f"wrote {args.output}")
    return 1 if report.failed else 0


def _choices(
    parser: argparse.ArgumentParser, value: str, allowed: Sequence[str], flag: str
) -> list[str]:
    chosen = [item.strip() for item in value.split(",") if item.strip()]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        parser.error(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return chosen


def _progress(message: str) -> None:
    print(f"reliability: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
