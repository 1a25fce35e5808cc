"""Whether the database can take writes now: failures turn it down, a background probe turns it up.

Plain asyncio and callbacks, so the composition root can drive gRPC health with it and tests can
drive anything else. Failures are reported from any thread; the probe is a blocking callable run
off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

from server.service.background import BackgroundTask
from storage.errors import StorageError

log = logging.getLogger(__name__)

DOWN_PROBE_SECONDS = 0.5
"""How often the probe runs while the database is down, so recovery is noticed quickly."""

UP_PROBE_SECONDS = 5.0
"""How often the probe runs while the database is up, so an idle server notices an outage too."""


class DatabaseHealth:
    """Tracks one database's state and tells a listener each time it changes.

    It starts up (a server starts only after migrating its database). report_failure() turns
    it down at once; while down, `probe` runs every `down_seconds` and the first success turns
    it up. While up, `probe` runs every `up_seconds`.
    """

    def __init__(
        self,
        probe: Callable[[], None],
        on_change: Callable[[bool], Awaitable[None]],
        *,
        down_seconds: float = DOWN_PROBE_SECONDS,
        up_seconds: float = UP_PROBE_SECONDS,
    ) -> None:
        """`probe` raises StorageError when the database cannot take writes; `on_change(up)` is
        awaited on the event loop after every change."""
        self._probe = probe
        self._on_change = on_change
        self._down_seconds = down_seconds
        self._up_seconds = up_seconds
        self._up = True
        self._failed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher = BackgroundTask(self._watch, "database-health")

    @property
    def up(self) -> bool:
        """Whether the database was taking writes at the last report or probe."""
        return self._up

    def start(self) -> None:
        """Start watching on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._watcher.start()

    async def stop(self) -> None:
        """Stop watching; no change is reported afterwards."""
        await self._watcher.stop()

    def report_failure(self) -> None:
        """Note that an operation found the database unavailable; safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._failed.set)

    async def _watch(self) -> None:
        while True:
            if self._up:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._failed.wait(), self._up_seconds)
                if self._failed.is_set():
                    self._failed.clear()
                    await self._change(up=False, reason="an operation failed")
                    continue
            else:
                # Reports while down change nothing; only the probe can bring it back.
                await asyncio.sleep(self._down_seconds)
                self._failed.clear()
            up = await self._probe_once()
            if up != self._up:
                await self._change(up=up, reason="probe")

    async def _probe_once(self) -> bool:
        try:
            await _in_daemon_thread(self._probe)
        except StorageError as error:
            if self._up:
                log.warning("database probe failed", extra={"error": str(error)})
            return False
        except Exception:
            log.exception("database probe crashed")
            return False
        return True

    async def _change(self, *, up: bool, reason: str) -> None:
        self._up = up
        if up:
            log.info("database available", extra={"reason": reason})
        else:
            log.warning("database unavailable", extra={"reason": reason})
        try:
            await self._on_change(up)
        except Exception:
            log.exception("database health listener failed")


async def _in_daemon_thread(work: Callable[[], None]) -> None:
    """Run `work` on a thread of its own that never holds the process open.

    A probe of an unreachable database can wait out a connect timeout; in the loop's default
    executor it would keep a stopping server from exiting until then.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            work()
        except BaseException as failure:  # handed to the awaiting task
            error = failure
        with contextlib.suppress(RuntimeError):  # the loop closed while the probe ran
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name="database-probe", daemon=True).start()
    await done
