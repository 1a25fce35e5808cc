"""One Ingest stream's estimate of its client's clock error, by NTP's minimum-delay rule."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from server.service.inputs import EventInput, InteractionInput
from server.service.validation import MIN_TIME


class StreamClock:
    """The offset of a stream's client clock: the smallest (receive time - sent_time) seen on it.

    Why not each item's own difference: a client stamps sent_time when it hands an item to its
    send buffers (gRPC pulls a request iterator ahead of the network; other clients stamp when
    they enqueue), and a stream the server drains slowly keeps items there for seconds. Each
    difference is the clock offset plus the network and buffering delays, and delays only add,
    so the smallest difference on the stream is the closest to the offset (NTP keeps the sample
    of least delay for the same reason). All items of a stream come from one clock, so each chunk
    is corrected by the estimate as it stands when the chunk is written: a synchronized clock
    keeps exact times however long items waited, and a skewed one is corrected from its first
    item on.
    """

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self.offset: timedelta | None = None
        """The smallest receive time - sent_time so far; None before any item had a sent_time."""

    def observe(self, items: Iterable[object]) -> None:
        """Take the sent_times of items received just now into the estimate."""
        now = self._clock()
        for item in items:
            if not isinstance(item, InteractionInput | EventInput) or item.sent_time is None:
                continue
            if item.sent_time < MIN_TIME:  # rejected by the write rules; no clock reading
                continue
            difference = now - item.sent_time
            if self.offset is None or difference < self.offset:
                self.offset = difference
