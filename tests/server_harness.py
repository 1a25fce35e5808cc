"""Runs a real FeedbackServer on a real port from synchronous tests."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from server.app import FeedbackServer, create_server
from server.config import Settings

T = TypeVar("T")

TEARDOWN_GRACE_SECONDS = 0.05
"""Grace of the stop at a test's end, when its calls are over. FeedbackServer.stop spends half
the grace (at most 0.1 s) refusing new calls until none comes; at the default 1 s that is a fixed
0.1 s on every one of a thousand servers. Tests of draining run real processes with their own."""


class ServerThread:
    """A FeedbackServer on its own event-loop thread, bound to a free port on 127.0.0.1."""

    def __init__(self, settings: Settings, *, address: str = "127.0.0.1:0") -> None:
        """Serve `settings` on `address` (by default a free port)."""
        self.settings = dataclasses.replace(settings, address=address)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: FeedbackServer | None = None

    @property
    def address(self) -> str:
        """host:port clients should dial."""
        return f"127.0.0.1:{self.port}"

    @property
    def feedback_server(self) -> FeedbackServer:
        """The running server, for what a test reads off it directly."""
        assert self._server is not None, "the server is not running"
        return self._server

    def start(self) -> ServerThread:
        """Build, migrate and start the server; returns once it accepts calls."""
        self._thread.start()
        self._server, self.port = self._call(create_server(self.settings))
        self._call(self._server.start())
        return self

    def stop(self, grace_seconds: float = TEARDOWN_GRACE_SECONDS) -> None:
        """Stop gracefully and end the loop thread."""
        if self._server is not None:
            self._call(self._server.stop(grace_seconds))
            self._server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop (to drive its parts directly) and wait for it."""
        return self._call(coroutine)

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
