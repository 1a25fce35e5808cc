"""Server memory from /proc: the largest resident set a phase drove the server process to."""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

SAMPLE_INTERVAL_SECONDS = 0.02


def status_kib(pid: int, field: str) -> int | None:
    """A kB field of /proc/PID/status (VmRSS, VmHWM), or None once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    return None


class RssSampler:
    """Polls VmRSS of a process in a thread while a phase runs; VmHWM is read at the end.

    VmHWM is the process's lifetime peak, so it is exact but includes earlier phases; the sampled
    VmRSS maximum belongs to this phase alone.
    """

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self.peak_rss_kib = 0
        self.high_water_mark_kib: int | None = None

    def _sample(self) -> None:
        while True:
            rss = status_kib(self._pid, "VmRSS")
            if rss is not None:
                self.peak_rss_kib = max(self.peak_rss_kib, rss)
            if self._stop.wait(SAMPLE_INTERVAL_SECONDS):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.high_water_mark_kib = status_kib(self._pid, "VmHWM")
        rss = status_kib(self._pid, "VmRSS")
        if rss is not None:
            self.peak_rss_kib = max(self.peak_rss_kib, rss)
