"""The real server's own per-RPC log lines, the one exact source of gRPC status for h2load calls.

h2load cannot see the grpc-status trailer; with default logging the server writes one JSON line
per call with its method and status code. It writes them in batches (server.logs.FLUSH_SECONDS
apart at most), so a count taken as a run ends waits for the last batch.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

SETTLE_TIMEOUT_SECONDS = 5.0


def logged_status_codes(log_file: Path, method_path: str) -> Counter[str]:
    """How many calls of `method_path` the server logged with each status code so far."""
    codes: Counter[str] = Counter()
    with log_file.open(errors="replace") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (
                isinstance(entry, dict)
                and entry.get("message") == "rpc"
                and entry.get("method") == method_path
            ):
                codes[str(entry.get("code"))] += 1
    return codes


def settled_status_codes(
    log_file: Path, method_path: str, before: Counter[str], expected: int
) -> Counter[str]:
    """The calls of `method_path` logged since `before`, once `expected` of them are (or once
    SETTLE_TIMEOUT_SECONDS have passed: a call answered but never logged shows as missing)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while True:
        codes = logged_status_codes(log_file, method_path) - before
        if codes.total() >= expected or time.monotonic() >= deadline:
            return codes
        time.sleep(0.05)
