"""`python -m bench.pii_eval [--count N] [--seed S] [--json PATH]`: a PII detector on labelled text.

Runs the detector's `find` over bench.pii_cases and prints precision, recall and F1 per entity
against the targets, its speed, start-up time and memory. Exit status: 0 when every targeted
entity meets its targets, 1 when one does not (PERSON never fails it), 2 when the detector
cannot be loaded.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.percentiles import percentile
from bench.pii_cases import DEFAULT_COUNT, DEFAULT_SEED, Case, generate
from bench.pii_report import Timing, all_passed, render, to_json
from bench.pii_score import Detector, Prediction, predictions, score

DETECTORS = {
    "native": "server.service.pii.detector:Detector",
    "presidio": "bench.pii_presidio:PresidioDetector",
}
"""Names for --detector; any other value is read as module:attribute of a zero-argument factory."""
HINTS = {
    "native": "the detector has not landed in this tree (merge main, or try --detector presidio)",
    "presidio": "Presidio is not a project dependency: run this with /tmp/pvenv/bin/python",
}
WARM_UP_TEXT = "Mail jane.doe@example.com or call +1 415-555-2671 from 10.0.0.1."
CHUNK = 100
"""Texts per process_time reading: its clock is too coarse for one text."""


class DetectorUnavailableError(RuntimeError):
    """The detector's module or class cannot be imported or built."""


class Loaded:
    """A built detector and what building it cost."""

    def __init__(self, detector: Detector, import_ms: float, startup_ms: float, rss_mib: float):
        self.detector = detector
        self.import_ms = import_ms
        self.startup_ms = startup_ms
        self.rss_growth_mib = rss_mib


def load_detector(spec: str) -> Loaded:
    """Import, construct and first call the detector named by `spec`, timing each step.

    It runs before the cases are generated, so that the peak RSS growth is the detector's own:
    ru_maxrss only moves once a new peak is reached.
    """
    module_name, _, attribute = DETECTORS.get(spec, spec).partition(":")
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        factory: Callable[[], Detector] = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        hint = f"; {HINTS[spec]}" if spec in HINTS else ""
        raise DetectorUnavailableError(
            f"cannot import {module_name}:{attribute} ({error}){hint}"
        ) from error
    imported = time.perf_counter()
    detector = factory()
    detector.find(WARM_UP_TEXT)
    ready = time.perf_counter()
    after_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return Loaded(
        detector,
        import_ms=(imported - started) * 1000,
        startup_ms=(ready - imported) * 1000,
        rss_mib=(after_kib - before_kib) / 1024,
    )


def run(loaded: Loaded, cases: Sequence[Case]) -> tuple[list[list[Prediction]], Timing]:
    """Every case through `find`, timed per text (wall) and per CHUNK texts (CPU)."""
    raw: list[Sequence[tuple[int, int, str]]] = []
    wall: list[float] = []
    cpu: list[float] = []
    find = loaded.detector.find
    perf_counter = time.perf_counter
    started = perf_counter()
    for chunk_start in range(0, len(cases), CHUNK):
        chunk = cases[chunk_start : chunk_start + CHUNK]
        cpu_started = time.process_time()
        for case in chunk:
            text_started = perf_counter()
            raw.append(find(case.text))
            wall.append(perf_counter() - text_started)
        cpu.append((time.process_time() - cpu_started) / len(chunk))
    total = perf_counter() - started
    found = [predictions(result) for result in raw]
    timing = Timing(
        texts=len(cases),
        median_wall_us=statistics.median(wall) * 1e6 if wall else 0.0,
        p99_wall_us=percentile(sorted(wall), 0.99) * 1e6 if wall else 0.0,
        median_cpu_us=statistics.median(cpu) * 1e6 if cpu else 0.0,
        total_wall_seconds=total,
        import_ms=loaded.import_ms,
        startup_ms=loaded.startup_ms,
        rss_growth_mib=loaded.rss_growth_mib,
    )
    return found, timing


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate, print the table and return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.pii_eval", description=__doc__)
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="texts to generate")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--detector",
        default="native",
        help="native (server.service.pii), presidio, or module:factory (default: native)",
    )
    parser.add_argument("--quiet", action="store_true", help="hide missed and false examples")
    args = parser.parse_args(argv)
    try:
        loaded = load_detector(args.detector)
    except DetectorUnavailableError as error:
        print(f"bench.pii_eval: {error}", file=sys.stderr)
        return 2
    cases = generate(args.count, args.seed)
    found, timing = run(loaded, cases)
    result = score(cases, found)
    name = DETECTORS.get(args.detector, args.detector)
    shown = args.detector if name == args.detector else f"{args.detector} ({name})"
    title = f"PII evaluation of {shown}, seed {args.seed}"
    print(render(result, cases, timing, title, quiet=args.quiet))
    if args.json:
        settings = {"count": args.count, "seed": args.seed, "detector": name}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(result, timing, settings), indent=2) + "\n")
    return 0 if all_passed(result) else 1


if __name__ == "__main__":
    sys.exit(main())
