"""The real server's own per-RPC log lines, the one exact source of gRPC status for h2load calls.

h2load cannot see the grpc-status trailer; with default logging the server writes one JSON line
per call with its method and status code.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


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
