"""Watches: the records of one kind as they are committed, from now, from a position or from a
list's token, resumable without gaps or repeats (like an etcd or Kubernetes watch).

A watch first sends a progress marker with its start position. If it starts in the past it
catches up from the change log in the database, at the pace its client reads; once it reaches
the tail's head it joins the fan-out (server.service.tail) and gets new records as the tail
reads them. Every message carries the position to resume from: its last record's, or after
progress_interval without records, the tail's head (so an idle watcher's position moves on).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic

from server.service import paging
from server.service.errors import OutOfRange, ResourceExhausted, Unavailable
from server.service.list_inputs import SelectionT
from server.service.tail import Tail, Watcher, read_after
from server.service.validation import Violations
from server.service.watch_matching import Match, match_of
from server.service.watch_positions import InvalidPosition, Position, Positions
from storage.records import LogState

POSITION_COMPACTED = "POSITION_COMPACTED"
"""ErrorInfo reason of OUT_OF_RANGE: the start is older than the change log still holds."""
WATCH_BUFFER_FULL = "WATCH_BUFFER_FULL"
"""ErrorInfo reason of RESOURCE_EXHAUSTED: the client read slower than its records came."""
SERVER_STOPPING = "SERVER_STOPPING"
"""ErrorInfo reason of UNAVAILABLE: the server is stopping; resume on another replica."""
POSITION = "position"
"""ErrorInfo metadata key of the position to resume from."""
OLDEST_POSITION = "oldest_position"
"""ErrorInfo metadata key of the oldest position a watch may start from."""

DEFAULT_PROGRESS_SECONDS = 10.0
MIN_PROGRESS_SECONDS = 1.0
MAX_PROGRESS_SECONDS = 3600.0
MESSAGE_RECORDS = 1000
MESSAGE_BYTES = 1024 * 1024
"""A message holds at most this many records and bytes (one record may be larger), far below
gRPC's default 4 MiB receive limit."""
CATCH_UP_ENTRIES = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchRequest(Generic[SelectionT]):
    """An untrusted Watch request, before validation."""

    selection: SelectionT
    start_position: str = ""
    start_page_token: str = ""
    progress_seconds: float | None = None
    """None: the default."""


@dataclass(frozen=True, slots=True)
class WatchMessage:
    """One message of a watch: records (as Encode made them) and the position after them."""

    records: list[bytes]
    position: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchLimits:
    """How much a watch may hold for a slow client."""

    buffer_bytes: int = 4 * 1024 * 1024
    """Records waiting for one live watcher; past it the watch ends with WATCH_BUFFER_FULL."""


Validate = Callable[[Any, Violations], Any]
"""A kind's filter rules (server.service.listing.Listing.validate)."""


class WatchService:
    """Runs watches over the tail; one per server."""

    def __init__(self, tail: Tail, *, limits: WatchLimits) -> None:
        self._tail = tail
        self._limits = limits

    async def watch(
        self, kind: str, validate: Validate, request: WatchRequest[Any]
    ) -> AsyncGenerator[WatchMessage, None]:
        """The messages of one watch of `kind`; raises InvalidArgument, OutOfRange,
        ResourceExhausted (a full buffer) or Unavailable (the database, or a stopping server),
        the last two with the position to resume from."""
        check = Violations()
        selection = validate(request.selection, check)
        progress = _progress_seconds(check, request.progress_seconds)
        if request.start_position and request.start_page_token:
            check.add("start_page_token", "must not be set together with start_position")
        cursor = None
        if request.start_page_token:
            fingerprint = paging.filters_fingerprint(selection, False)
            try:
                cursor = paging.decode_page_token(request.start_page_token, fingerprint)
            except paging.InvalidPageToken as error:
                check.add(
                    "start_page_token",
                    f"{error} (a watch takes the tokens of oldest-first lists and exports with "
                    "the same filters and no time range)",
                )
        check.raise_if_any()
        tail = self._tail
        tail.begin(kind)
        try:
            if request.start_position or cursor is not None:
                positions, start = await self._past_start(kind, request.start_position, cursor)
            else:
                head = await tail.ensure_current()
                positions, start = Positions(kind, tail.epoch), Position(head)
            yield WatchMessage([], positions.encode(start))
            follow = self._follow(kind, positions, match_of(kind, selection), start, progress)
            async for message in follow:
                yield message
        finally:
            tail.end(kind)

    async def _past_start(
        self, kind: str, token: str, cursor: int | None
    ) -> tuple[Positions, Position]:
        """Where a watch from a position or a list token starts; raises InvalidArgument or
        OutOfRange."""
        state, first_after = await self._tail.read(partial(_start_state, kind=kind, cursor=cursor))
        positions = Positions(kind, state.epoch)
        horizon = state.horizons[kind]
        oldest = {OLDEST_POSITION: positions.encode(Position(horizon.seq))}
        check = Violations()
        if cursor is not None:
            if cursor < horizon.last_id:
                raise OutOfRange(
                    POSITION_COMPACTED,
                    "start_page_token is older than the watch history this server keeps; list "
                    "again, or start from oldest_position",
                    oldest,
                )
            start = Position(state.head) if first_after is None else Position(first_after, cursor)
            return positions, start
        try:
            start = positions.decode(token)
        except InvalidPosition as error:
            check.add("start_position", str(error))
            check.raise_if_any()
            raise
        if start.seq > state.head:
            check.add("start_position", "is ahead of the database's change log")
            check.raise_if_any()
        if start.seq < horizon.seq or (start.seq == horizon.seq and not start.whole):
            raise OutOfRange(
                POSITION_COMPACTED,
                "start_position is older than the watch history this server keeps; list "
                "again, or start from oldest_position",
                oldest,
            )
        return positions, start

    async def _follow(
        self,
        kind: str,
        positions: Positions,
        match: Match,
        start: Position,
        progress_seconds: float,
    ) -> AsyncGenerator[WatchMessage, None]:
        """Catch up from the database to the tail's head, then follow the tail."""
        tail = self._tail
        loop = asyncio.get_running_loop()
        position = start
        sent_at = loop.time()
        while True:
            head = await tail.ensure_current()
            if tail.stopping:
                raise _stopping(positions, position)
            if position.seq > head or (position.whole and position.seq == head):
                break
            after = position.seq if position.whole else position.seq - 1
            entries, rows, more = await tail.read(
                partial(read_after, seq=after, kinds=[kind], limit=CATCH_UP_ENTRIES, through=head)
            )
            records: list[tuple[Position, bytes]] = []
            found = rows.get(kind, {})
            for entry in entries:
                if entry.kind != kind:
                    continue
                for row_id in entry.ids:
                    row = found.get(row_id)
                    here = Position(entry.seq, row_id)
                    if row is not None and here > position and match.accepts(row):
                        records.append((here, tail.encode(kind, positions.encode(here), row)))
            reached = Position(entries[-1].seq) if entries else Position(head)
            if not more:
                reached = max(reached, Position(head))
            for message in _messages(records, positions):
                yield message
            position = max(reached, position)
            if records or loop.time() - sent_at >= progress_seconds:
                yield WatchMessage([], positions.encode(position))
                sent_at = loop.time()
        watcher = Watcher(kind, match, position, self._limits.buffer_bytes)
        tail.register(watcher)
        try:
            while True:
                if not watcher.pending and not watcher.overflowed and not tail.stopping:
                    # A timer rather than wait_for: thousands of idle watches wait at once.
                    remaining = progress_seconds - (loop.time() - sent_at)
                    timer = loop.call_later(max(remaining, 0.0), watcher.ready.set)
                    try:
                        await watcher.ready.wait()
                    finally:
                        timer.cancel()
                watcher.ready.clear()
                if watcher.overflowed:
                    raise ResourceExhausted(
                        f"the client read slower than its records came: more than "
                        f"{self._limits.buffer_bytes // 1024} KiB waited for it, so the watch "
                        "ended; resume from the position",
                        1.0,
                        reason=WATCH_BUFFER_FULL,
                        metadata={POSITION: positions.encode(position)},
                    )
                if tail.stopping:
                    raise _stopping(positions, position)
                if watcher.pending:
                    taken = watcher.take(MESSAGE_RECORDS, MESSAGE_BYTES)
                    position = taken[-1][0]
                    yield WatchMessage([frame for _, frame in taken], positions.encode(position))
                    sent_at = loop.time()
                elif loop.time() - sent_at >= progress_seconds:
                    assert tail.head is not None
                    position = max(position, Position(tail.head))
                    yield WatchMessage([], positions.encode(position))
                    sent_at = loop.time()
        finally:
            tail.unregister(watcher)


def _start_state(unit: Any, kind: str, cursor: int | None) -> tuple[LogState, int | None]:
    state = unit.change_state()
    return state, None if cursor is None else unit.first_change_after_id(kind, cursor)


def _messages(records: list[tuple[Position, bytes]], positions: Positions) -> list[WatchMessage]:
    """Records cut into messages of at most MESSAGE_RECORDS and MESSAGE_BYTES."""
    messages: list[WatchMessage] = []
    batch: list[bytes] = []
    size = 0
    for index, (position, frame) in enumerate(records):
        batch.append(frame)
        size += len(frame)
        last = index == len(records) - 1
        full = len(batch) >= MESSAGE_RECORDS
        if last or full or size + len(records[index + 1][1]) > MESSAGE_BYTES:
            messages.append(WatchMessage(batch, positions.encode(position)))
            batch, size = [], 0
    return messages


def _stopping(positions: Positions, position: Position) -> Unavailable:
    return Unavailable(
        "the server is stopping; resume from the position on another replica",
        0.1,
        reason=SERVER_STOPPING,
        metadata={POSITION: positions.encode(position)},
    )


def _progress_seconds(check: Violations, value: float | None) -> float:
    if value is None:
        return DEFAULT_PROGRESS_SECONDS
    if not MIN_PROGRESS_SECONDS <= value <= MAX_PROGRESS_SECONDS:
        check.add(
            "progress_interval",
            f"must be from {MIN_PROGRESS_SECONDS:g} s to {MAX_PROGRESS_SECONDS:g} s",
        )
    return value
