"""The server's per-RPC log lines, counted per method and status code within a window.

The server writes one JSON object per ended call ({"message": "rpc", "method": ..., "code":
...}). A phase marks the log's size before it abandons calls and counts the lines after the
mark, so "every abandoned call is logged exactly once" is checked against the server's own word.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Collection
from pathlib import Path

SETTLE_QUIET_SECONDS = 1.0
"""A count that has not changed for this long is taken as final."""


class RpcLog:
    """Reads the rpc lines of one server log file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        """The log's current size: lines after it belong to what happens next."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def codes(self, since: int, methods: Collection[str] | None = None) -> Counter[str]:
        """Status code names of the calls logged after `since`, for the given full method names
        ("/feedback.v1.FeedbackService/ExportEvents"), or for every method."""
        counted: Counter[str] = Counter()
        for entry in self._entries(since):
            if methods is None or entry.get("method") in methods:
                counted[str(entry.get("code"))] += 1
        return counted

    def peers(self, since: int, methods: Collection[str]) -> Counter[str]:
        """How many calls of `methods` each peer ("ipv4:127.0.0.1:port") had logged after
        `since`."""
        return Counter(
            str(entry.get("peer"))
            for entry in self._entries(since)
            if entry.get("method") in methods
        )

    def settle(
        self, since: int, methods: Collection[str], *, expected: int, timeout: float
    ) -> Counter[str]:
        """Wait until at least `expected` calls of `methods` were logged after `since` and the
        count stayed put for SETTLE_QUIET_SECONDS (so a second line for a call is seen too), or
        `timeout` passes; returns the codes then."""
        deadline = time.monotonic() + timeout
        last = self.codes(since, methods)
        changed = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.codes(since, methods)
            if now != last:
                last, changed = now, time.monotonic()
            elif last.total() >= expected and time.monotonic() - changed >= SETTLE_QUIET_SECONDS:
                break
        return last

    def _entries(self, since: int) -> list[dict[str, object]]:
        try:
            with self.path.open("rb") as log:
                log.seek(since)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return []
        entries: list[dict[str, object]] = []
        for line in text.splitlines():
            if '"rpc"' not in line:
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash, or one that is not JSON
            if isinstance(entry, dict) and entry.get("message") == "rpc":
                entries.append(entry)
        return entries
