"""`python -m bench.watch [--quick]`: durable SubmitFeedback at c=64 with 2,000 watchers of mixed
filters connected, against the same writes with none, in one run on one server.

The server process runs pinned to one core; h2load (four bodies, 16 connections each) and the
watchers' process (bench.watch.watchers) share the other. Rounds with and without watchers
alternate (A B, B A, ...) for a fixed window each, and the verdict is the median of the rounds'
own ratios against the issue's 0.8. Reported besides: delivery delay from the record's
create_time to receipt (p50, p99, over every record every watcher received), the server's
resident memory idle, with the watchers connected and at its peak, and a check that every
watcher of everything received every row the round stored.

Writes the table to stdout and bench-results/bench-watch.json. Exit status: 0 when every
check passed (the ratio only prints FAIL), 1 when one failed, 2 when the bench could not run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.cores import Pinning, choose_pinning, pin_this_thread
from bench.cpu import CpuMeter
from bench.h2load import run_h2load
from bench.machine import machine_info
from bench.memory import status_kib
from bench.percentiles import percentile
from bench.results import Check
from bench.row_counts import count_rows
from bench.runner import QUIET_LOGGING, REAL_SERVER_FLAGS
from bench.scratch import COULD_NOT_RUN, h2load_missing, progress_printer, run_in_scratch
from bench.server_process import REPOSITORY_ROOT, ServerProcess
from bench.watch.mix import write_bodies

NAME = "bench-watch"
DEFAULT_OUTPUT = Path(f"bench-results/{NAME}.json")
TARGET = 0.8
"""Writes with the watchers / writes alone, req/s: the issue's ">= 0.8x"."""
CONNECTIONS_PER_BODY = 16
DRAIN_SECONDS = 2.0
"""How long the watchers may take after the writes end to receive the last records."""
SUBMIT_PATH = "/feedback.v1.FeedbackService/SubmitFeedback"
_progress = progress_printer(NAME)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; see the module docstring for the exit status."""
    args = _parser().parse_args(argv)
    quick = args.quick
    args.watchers = args.watchers or (200 if quick else 2000)
    args.rounds = args.rounds or (2 if quick else 4)
    args.seconds = args.seconds or (3 if quick else 15)
    args.warm_up = 200 if quick else 2000
    if h2load_missing(NAME):
        return COULD_NOT_RUN
    pinning = choose_pinning()
    report: dict[str, Any] = {
        "machine": machine_info(pinning, REPOSITORY_ROOT),
        "settings": {
            "watchers": args.watchers,
            "rounds": args.rounds,
            "window_seconds": args.seconds,
            "concurrency": CONNECTIONS_PER_BODY * len(write_bodies()),
            "pinning": pinning.describe(),
        },
        "rounds": [],
    }
    if not run_in_scratch(
        NAME,
        args.output,
        args.keep,
        lambda workdir: _run(report, args, workdir, pinning),
        report["machine"],
    ):
        return COULD_NOT_RUN
    checks = _checks(report)
    report["checks"] = [asdict(check) for check in checks]
    args.output.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(_render(report, checks))
    print(f"wrote {args.output}")
    return 0 if all(check.passed for check in checks) else 1


def _run(report: dict[str, Any], args: argparse.Namespace, workdir: Path, pinning: Pinning) -> None:
    pin_this_thread(pinning.load_core)
    bodies = []
    for number, body in enumerate(write_bodies()):
        path = workdir / f"body-{number}.bin"
        path.write_bytes(body)
        bodies.append(path)
    data = workdir / "data"
    server = ServerProcess(
        "server",
        ["--data-dir", str(data), *REAL_SERVER_FLAGS, *QUIET_LOGGING],
        log_file=workdir / "server.log",
        pinning=pinning,
    )
    with server:
        database = data / "feedback.sqlite3"
        _writes(server, bodies, workdir, pinning, requests=args.warm_up)
        report["rss_idle_kib"] = status_kib(server.pid, "VmRSS")
        for number in range(1, args.rounds + 1):
            for watched in (False, True) if number % 2 else (True, False):
                result = _round(server, bodies, workdir, pinning, database, args, watched)
                result["number"] = number
                report["rounds"].append(result)
                _progress(_described(result))
        report["server_exit"] = server.stop()


def _round(
    server: ServerProcess,
    bodies: list[Path],
    workdir: Path,
    pinning: Pinning,
    database: Path,
    args: argparse.Namespace,
    watched: bool,
) -> dict[str, Any]:
    """One window of writes, with the watchers connected or without."""
    result: dict[str, Any] = {"watchers": args.watchers if watched else 0}
    watchers = None
    if watched:
        output = workdir / "watchers.json"
        watchers = subprocess.Popen(
            pinning.load_command(
                [
                    sys.executable,
                    "-m",
                    "bench.watch.watchers",
                    server.address,
                    str(args.watchers),
                    str(output),
                ]
            ),
            cwd=REPOSITORY_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert watchers.stdout is not None
        line = watchers.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the watchers did not start: {line!r}")
        result["rss_watchers_kib"] = status_kib(server.pid, "VmRSS")
    rows_before = count_rows(database, "feedback")
    peak = [0]
    client = CpuMeter(watchers.pid if watchers is not None else server.pid)
    with CpuMeter(server.pid) as server_cpu, client:
        runs = _writes(server, bodies, workdir, pinning, seconds=args.seconds, peak=peak)
    result["requests_per_second"] = sum(run.requests_per_second for run in runs)
    result["acknowledged"] = sum(run.summary.status_2xx for run in runs)
    result["rss_peak_kib"] = peak[0]
    result["server_cpu_us_per_write"] = (
        (server_cpu.seconds or 0) / max(result["acknowledged"], 1) * 1e6
    )
    if watchers is not None:
        time.sleep(DRAIN_SECONDS)
        result["stored"] = count_rows(database, "feedback") - rows_before
        assert watchers.stdin is not None
        watchers.stdin.close()
        watchers.wait(120)
        result["received"] = json.loads((workdir / "watchers.json").read_text(encoding="utf-8"))
    return result


def _writes(
    server: ServerProcess,
    bodies: list[Path],
    workdir: Path,
    pinning: Pinning,
    *,
    requests: int | None = None,
    seconds: int | None = None,
    peak: list[int] | None = None,
) -> list[Any]:
    """The four h2load runs at once; samples the server's RSS into `peak` meanwhile."""
    url = f"http://{server.address}{SUBMIT_PATH}"
    with ThreadPoolExecutor(len(bodies)) as pool:
        futures = [
            pool.submit(
                run_h2load,
                url,
                body,
                concurrency=CONNECTIONS_PER_BODY,
                log_file=workdir / f"h2load-{number}.log",
                pinning=pinning,
                requests=requests,
                duration_seconds=seconds,
            )
            for number, body in enumerate(bodies)
        ]
        while not all(future.done() for future in futures):
            if peak is not None:
                peak[0] = max(peak[0], status_kib(server.pid, "VmRSS") or 0)
            time.sleep(0.2)
        return [future.result() for future in futures]


def _checks(report: dict[str, Any]) -> list[Check]:
    checks = [Check("the server exited 0", report.get("server_exit") == 0)]
    for result in report["rounds"]:
        received = result.get("received")
        if received is None:
            continue
        everything = received["everything"]
        per_watcher = everything["records"] / max(everything["watches"], 1)
        errors = {kind: tally["errors"] for kind, tally in received.items() if tally["errors"]}
        checks.append(
            Check(
                f"round {result['number']}: every watcher of everything got every stored row",
                per_watcher == result["stored"],
                f"{per_watcher:.0f} each, {result['stored']} stored",
            )
        )
        checks.append(
            Check(f"round {result['number']}: no watch failed", not errors, json.dumps(errors))
        )
    return checks


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    rounds = report["rounds"]
    alone = {r["number"]: r for r in rounds if not r["watchers"]}
    watched = {r["number"]: r for r in rounds if r["watchers"]}
    ratios = [
        watched[n]["requests_per_second"] / alone[n]["requests_per_second"]
        for n in sorted(alone)
        if n in watched
    ]
    delays = sorted(
        delay
        for r in watched.values()
        for tally in r["received"].values()
        for delay in tally["delays_ms"]
    )
    return {
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "alone": statistics.median(r["requests_per_second"] for r in alone.values()),
        "watched": statistics.median(r["requests_per_second"] for r in watched.values()),
        "p50_ms": percentile(delays, 0.5) if delays else None,
        "p99_ms": percentile(delays, 0.99) if delays else None,
        "deliveries": len(delays),
        "rss_watchers_kib": max(r["rss_watchers_kib"] or 0 for r in watched.values()),
        "rss_peak_kib": max(r["rss_peak_kib"] for r in watched.values()),
    }


def _render(report: dict[str, Any], checks: list[Check]) -> str:
    summary = _summary(report)
    report["summary"] = summary
    settings = report["settings"]
    verdict = "PASS" if summary["ratio"] >= TARGET else "FAIL"
    lines = [
        f"{verdict}  with {settings['watchers']:,} watchers / without: {summary['ratio']:.2f}x "
        f"req/s (target >= {TARGET}); medians {summary['watched']:,.0f} vs "
        f"{summary['alone']:,.0f} req/s; rounds "
        + ", ".join(f"{ratio:.2f}" for ratio in summary["ratios"]),
        f"delivery from create_time to receipt: p50 {summary['p50_ms']:.1f} ms, p99 "
        f"{summary['p99_ms']:.1f} ms over {summary['deliveries']:,} deliveries",
        f"server RSS: {report['rss_idle_kib'] / 1024:.0f} MB idle, "
        f"{summary['rss_watchers_kib'] / 1024:.0f} MB with the watchers connected, "
        f"{summary['rss_peak_kib'] / 1024:.0f} MB at the peak of the writes",
    ]
    for check in checks:
        lines.append(f"{'ok  ' if check.passed else 'FAIL'} {check.name} {check.detail}")
    return "\n".join(lines)


def _described(result: dict[str, Any]) -> str:
    text = f"round {result['number']} with {result['watchers']} watchers: "
    text += f"{result['requests_per_second']:,.0f} writes/s, "
    text += f"{result['server_cpu_us_per_write']:,.0f} µs server CPU per write"
    if "watchers_cpu_share" in result:
        text += f", watchers' process {result['watchers_cpu_share']:.0%} of the load core"
    if result.get("received"):
        text += f", {sum(t['records'] for t in result['received'].values()):,} records delivered"
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.watch", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200 watchers, 2 rounds of 3 s")
    parser.add_argument("--watchers", type=int, help="watchers (default 2000)")
    parser.add_argument("--rounds", type=int, help="rounds per side (default 4)")
    parser.add_argument("--seconds", type=int, help="write window of a round (default 15)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return parser


if __name__ == "__main__":
    sys.exit(main())
