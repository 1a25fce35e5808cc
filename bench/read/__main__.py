"""`python -m bench.read [--quick] [--rows N ...]`: reads on a bulk-loaded SQLite file, next to SQL.

Loads the smallest size, measures, extends the same file to the next size, measures again. Writes
the table to stdout and bench-results/bench-read.json.

Exit status: 0 when every correctness check passed (performance targets only print FAIL), 1 when
one failed (GetStats differs from SQL, a page or an export is wrong, an acknowledged write is
missing), 2 when the bench could not run (h2load missing, a server that would not start).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bench.cores import Pinning, choose_pinning, pin_this_thread, running_on
from bench.machine import machine_info
from bench.read.dataset import BulkLoader, Shape, Year, create_database
from bench.read.phases import FULL, QUICK, ReadPhases, ReadProfile
from bench.read.report import (
    STATS_PHASES,
    UNAVAILABLE,
    WRITES_PHASE,
    Comparison,
    ReadReport,
    evaluate_targets,
    render,
)
from bench.runner import QUIET_LOGGING, REAL_SERVER_FLAGS
from bench.scratch import COULD_NOT_RUN, h2load_missing, progress_printer, run_in_scratch
from bench.server_process import REPOSITORY_ROOT, ServerProcess
from storage import Storage

NAME = "bench-read"
DEFAULT_OUTPUT = Path(f"bench-results/{NAME}.json")
_progress = progress_printer(NAME)
NO_ROLLUPS = "rollups not available in this checkout"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the read bench; see the module docstring for the exit status."""
    args = _parser().parse_args(argv)
    if h2load_missing(NAME):
        return COULD_NOT_RUN
    profile = QUICK if args.quick else FULL
    sizes = tuple(sorted(set(args.rows))) if args.rows else profile.sizes
    every_core = os.sched_getaffinity(0)
    pinning = choose_pinning()
    report = ReadReport(
        mode=profile.name,
        machine=machine_info(pinning, REPOSITORY_ROOT),
        settings={
            "profile": {**asdict(profile), "sizes": list(sizes)},
            "server_flags": [*REAL_SERVER_FLAGS, *QUIET_LOGGING],
            "pinning": pinning.describe(),
            "stats_without_rollups": args.stats_without_rollups,
        },
    )
    started = time.monotonic()
    if not run_in_scratch(
        NAME,
        args.output,
        args.keep,
        lambda workdir: _run(
            report, profile, sizes, workdir, pinning, every_core, args.stats_without_rollups
        ),
        report.machine,
    ):
        return COULD_NOT_RUN
    report.duration_seconds = time.monotonic() - started
    report.targets = evaluate_targets(report.comparisons)
    report.write(args.output)
    print(render(report))
    print(f"wrote {args.output}")
    return 1 if report.failed_checks else 0


def _run(
    report: ReadReport,
    profile: ReadProfile,
    sizes: Sequence[int],
    workdir: Path,
    pinning: Pinning,
    every_core: set[int],
    stats_without_rollups: bool,
) -> None:
    """Load each size in turn (extending the same file), then measure it on a fresh server."""
    # The orchestrator, the Python clients and h2load share the load core; the loader does not.
    pin_this_thread(pinning.load_core)
    database = workdir / "feedback.sqlite3"
    create_database(database)
    year = Year.ending_today()
    loader = BulkLoader(database, year)
    for size in sizes:
        shape = Shape(size)
        with running_on(every_core):
            rollups = _load(report, loader, database, shape)
        if not rollups:
            _note_no_rollups(report, size, stats_without_rollups)
        phases = ReadPhases(
            profile=profile,
            database=database,
            year=year,
            shape=shape,
            pinning=pinning,
            report=report,
            progress=_progress,
            workdir=workdir,
        )
        server_dir = workdir / f"server-{size}"
        server_dir.mkdir()
        _progress(f"starting the server on {size:,} rows")
        server = ServerProcess(
            "server",
            ["--database-url", f"sqlite:///{database}", *REAL_SERVER_FLAGS, *QUIET_LOGGING],
            log_file=server_dir / "server.log",
            pinning=pinning,
        )
        with server:
            phases.run_all(server, loader.newest_feedback, stats=rollups or stats_without_rollups)


def _load(report: ReadReport, loader: BulkLoader, database: Path, shape: Shape) -> bool:
    """Extend the file to `shape` and rebuild the rollups; False when there are no rollups."""
    _progress(
        f"loading {shape.feedback:,} feedback, {shape.interactions:,} interactions, "
        f"{shape.events:,} events ({shape.conversations:,} conversations, {shape.users:,} users)"
    )
    load = loader.extend_to(shape, _progress)
    rollup_seconds = rebuild_rollups(database)
    report.loads.append(
        {
            "rows": shape.feedback,
            "added": load.rows,
            "seconds": load.seconds,
            "insert_seconds": load.insert_seconds,
            "index_seconds": load.index_seconds,
            "rollup_seconds": rollup_seconds,
        }
    )
    _progress(
        f"loaded in {load.seconds:.0f} s ({load.rows_per_second:,.0f} rows/s); "
        + (NO_ROLLUPS if rollup_seconds is None else f"rollups rebuilt in {rollup_seconds:.0f} s")
    )
    return rollup_seconds is not None


def _note_no_rollups(report: ReadReport, size: int, stats_without_rollups: bool) -> None:
    """Say once why the stats phases are skipped (or measure the scanning GetStats)."""
    if not any(note.startswith(NO_ROLLUPS) for note in report.notes):
        report.notes.append(
            f"{NO_ROLLUPS}: Storage.rebuild_rollups() is missing, so the GetStats and "
            "writes-under-stats phases "
            + ("measure the scanning GetStats" if stats_without_rollups else "are skipped")
        )
    if not stats_without_rollups:
        report.comparisons.extend(_without_rollups(size))


def _without_rollups(size: int) -> list[Comparison]:
    """The phases that need rollups, shown as not available."""
    skipped = [Comparison(size, phase, "GetStats", "ms", "full scan") for phase in STATS_PHASES]
    skipped.append(Comparison(size, WRITES_PHASE, "SubmitFeedback", "req/s", "writes alone"))
    for comparison in skipped:
        comparison.status = UNAVAILABLE
        comparison.detail = NO_ROLLUPS
    return skipped


def rebuild_rollups(database: Path) -> float | None:
    """Recompute the rollup tables from the raw rows; the seconds it took, None without rollups."""
    with Storage.connect(f"sqlite:///{database}") as storage:
        # Looked up at run time: Storage gains rebuild_rollups() with the rollup-based GetStats.
        rebuild = getattr(storage, "rebuild_rollups", None)
        if rebuild is None:
            _progress(NO_ROLLUPS)
            return None
        started = time.perf_counter()
        rebuild()
        return time.perf_counter() - started


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.read", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="20k rows and few calls: a smoke test under a minute"
    )
    parser.add_argument(
        "--rows",
        type=int,
        nargs="+",
        metavar="N",
        help="feedback rows of each size to measure, ascending (default 1,000,000 10,000,000)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to write the JSON report (default {DEFAULT_OUTPUT}); scratch files go next "
        "to it",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the database and server logs after the run"
    )
    parser.add_argument(
        "--stats-without-rollups",
        action="store_true",
        help="run the GetStats phases even when this checkout has no rollups (GetStats then "
        "scans: slow on large tables; for testing the bench itself)",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
