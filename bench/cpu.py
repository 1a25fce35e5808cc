"""Server CPU time from /proc: what a phase cost the server process, on every thread, per call.

Throughput on a shared 2-core machine moves with whatever else runs; the CPU the server itself
spent per answered call barely does, so it resolves differences of a few percent that req/s hides.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
_UTIME = 14 - 3
"""Index of utime (field 14 of /proc/PID/stat) among the fields from the state (field 3) on;
stime (field 15) follows it."""


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of the process so far, all its threads (live or ended)
    included; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[_UTIME]), int(fields[_UTIME + 1])
    return (utime + stime) / _TICKS_PER_SECOND


class CpuMeter:
    """The CPU seconds a process spends inside a `with` block (clock-tick resolution, 10 ms)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._before: float | None = None
        self.seconds: float | None = None
        """Set on leaving the block; None when the process could not be read."""

    def __enter__(self) -> CpuMeter:
        self._before = cpu_seconds(self._pid)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        after = cpu_seconds(self._pid)
        if self._before is not None and after is not None:
            self.seconds = after - self._before

    def microseconds_per_call(self, calls: int) -> float | None:
        """The block's CPU per call in µs; None without calls or a reading."""
        if self.seconds is None or calls <= 0:
            return None
        return self.seconds * 1_000_000 / calls
