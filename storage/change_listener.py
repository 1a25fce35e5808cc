"""Hears other processes' commits on PostgreSQL: LISTEN on the change log's channel, on a
connection of its own in a thread, calling back for every NOTIFY (storage.rows.changes).

A hint only: the live tail reads the log itself and polls as well, so a notification lost while
the connection was down (it reconnects every second) delays records, never loses them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from storage.rows.changes import CHANNEL

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0
_WAIT_SECONDS = 0.5
"""How long one wait for notifications lasts, so close() is heard quickly."""


class ChangeListener:
    """A thread that calls `listener` whenever another transaction committed log entries."""

    def __init__(self, conninfo: str, listener: Callable[[], None]) -> None:
        self._conninfo = conninfo
        self._listener = listener
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="change-listener", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop listening and wait for the thread."""
        self._closed.set()
        self._thread.join()

    def _run(self) -> None:
        failing = False
        while not self._closed.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if failing:
                        log.info("listening for other replicas' commits again")
                        failing = False
                    # Whatever committed while this connection was down is read now.
                    self._listener()
                    while not self._closed.is_set():
                        for _ in conn.notifies(timeout=_WAIT_SECONDS, stop_after=1):
                            self._listener()
            except psycopg.Error as error:
                if not failing:  # once per outage, not once per retry
                    log.warning(
                        "cannot listen for other replicas' commits; polling until reconnected",
                        extra={"error": str(error)},
                    )
                    failing = True
                self._closed.wait(RECONNECT_SECONDS)
