"""Admission: whether the server takes a call, decided when it starts and before any work.

Overload must cost little and say when to come back. A call over a limit is answered at once with
RESOURCE_EXHAUSTED, a RetryInfo delay and an ErrorInfo reason naming the limit (plus QuotaFailure
when the limit is one caller's), before its request is even read; gRPC's own shedding (cancelling
calls that waited too long, dropping streams) gives clients no such hint.

The limits, each bounding something a client controls:
- calls in progress at once, in all and per client connection (health checks are exempt, so
  probes still answer);
- exports in progress, in all and per caller (an export holds a chunk read ahead and one in the
  transport, about 2.5 MB, for as long as its client takes to read it);
- watches in progress, in all and per caller (a watch lives as long as its client wants, so it
  counts against these instead of the calls in progress; each holds a bounded buffer);
- a memory budget: over it, no new stream starts until the server is back under it.

A stopping server also refuses new calls here (UNAVAILABLE) until callers stop coming, so none is
cut off unanswered by gRPC's own stop (see refuse_new_calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from enum import Enum

from server.service import QuotaViolation, ResourceExhausted, ServiceError, Unavailable
from server.service.background import BackgroundTask

log = logging.getLogger(__name__)

SHUTTING_DOWN = "the server is shutting down; nothing was written, retry on another replica"
TOO_MANY_CALLS = "TOO_MANY_CALLS"
TOO_MANY_EXPORTS = "TOO_MANY_EXPORTS"
TOO_MANY_WATCHES = "TOO_MANY_WATCHES"
OVER_MEMORY_BUDGET = "OVER_MEMORY_BUDGET"
"""ErrorInfo reasons of the RESOURCE_EXHAUSTED answers given here."""
STOPPING = "SHUTTING_DOWN"
"""What refusals count a stopping server's UNAVAILABLE answers as."""
REFUSAL_REASONS = (TOO_MANY_CALLS, TOO_MANY_EXPORTS, OVER_MEMORY_BUDGET, STOPPING)

MEMORY_SAMPLE_SECONDS = 0.25
"""How often the resident set size is read (a /proc read of a few µs)."""


class CallKind(Enum):
    """What a method costs the server while it runs, which decides the limits it counts against."""

    PROBE = "probe"
    """Health checks: never refused for load, so orchestrators see the truth."""
    CALL = "call"
    """Unary calls: bounded in number; their memory is bounded by the message size."""
    STREAM = "stream"
    """Client-streaming or long-lived calls (Ingest, watches, reflection): also refused over the
    memory budget."""
    EXPORT = "export"
    """Server-streaming reads of stored rows: also bounded in all and per caller."""
    WATCH = "watch"
    """Live tails: bounded in all and per caller, not among the calls in progress."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The admission limits; see the module docstring."""

    max_calls: int = 1000
    max_calls_per_connection: int = 250
    max_exports: int = 16
    max_exports_per_caller: int = 4
    max_watches: int = 10_000
    max_watches_per_caller: int = 5_000
    memory_limit_bytes: int = 1024 * 1024 * 1024


class Admission:
    """Counts calls in progress against the limits; one per server, used on its event loop."""

    def __init__(self, limits: Limits, *, refusable_services: tuple[str, ...]) -> None:
        """`refusable_services` (full names) are the ones a stopping server refuses."""
        self._limits = limits
        self._refusable = tuple(f"/{service}/" for service in refusable_services)
        self._calls = 0
        self._calls_by_connection: Counter[str] = Counter()
        self._exports = 0
        self._exports_by_caller: Counter[str] = Counter()
        self._watches = 0
        self._watches_by_caller: Counter[str] = Counter()
        self._refusing = False
        self._last_refusal = 0.0
        self._over_budget = False
        self._completed = 0
        self._rate_started = time.monotonic()
        self._calls_per_second = 1000.0
        self._sampler = BackgroundTask(self._sample_memory, "memory-budget")
        self.refusals = dict.fromkeys(REFUSAL_REASONS, 0)
        """Calls refused here, by reason; counted on the event loop, read by metrics at scrape
        time (every key exists from the start, so the dict never grows while it is copied)."""

    def admit(
        self, method: str, kind: CallKind, caller: str, connection: str
    ) -> ServiceError | None:
        """Take the call (None; release() it when it ends) or say why not. `connection` is the
        peer address with its port, which names one client connection."""
        if self._refusing and method.startswith(self._refusable):
            self._last_refusal = time.monotonic()
            self.refusals[STOPPING] += 1
            return Unavailable(SHUTTING_DOWN)
        if kind is CallKind.PROBE:
            return None
        limits = self._limits
        if kind is CallKind.WATCH:
            return self._admit_watch(caller)
        if self._calls >= limits.max_calls:
            self.refusals[TOO_MANY_CALLS] += 1
            return ResourceExhausted(
                f"the server has {self._calls} calls in progress, its limit; retry later",
                self._calls_retry_seconds(),
                reason=TOO_MANY_CALLS,
            )
        if self._calls_by_connection[connection] >= limits.max_calls_per_connection:
            self.refusals[TOO_MANY_CALLS] += 1
            return ResourceExhausted(
                f"this connection has {limits.max_calls_per_connection} calls in progress, the "
                "limit per connection; retry later",
                self._calls_retry_seconds(),
                reason=TOO_MANY_CALLS,
                quota=QuotaViolation(
                    connection,
                    f"at most {limits.max_calls_per_connection} calls at once per connection",
                ),
            )
        if kind is not CallKind.CALL and self._over_budget:
            self.refusals[OVER_MEMORY_BUDGET] += 1
            return ResourceExhausted(
                "the server is over its memory budget and starts no stream until it is back "
                "under it; retry later",
                1.0,
                reason=OVER_MEMORY_BUDGET,
            )
        if kind is CallKind.EXPORT:
            refusal = self._export_refusal(caller)
            if refusal is not None:
                self.refusals[TOO_MANY_EXPORTS] += 1
                return refusal
            self._exports += 1
            self._exports_by_caller[caller] += 1
        self._calls += 1
        self._calls_by_connection[connection] += 1
        return None

    def release(self, kind: CallKind, caller: str, connection: str) -> None:
        """A call that admit() took has ended."""
        if kind is CallKind.PROBE:
            return
        if kind is CallKind.WATCH:
            self._watches -= 1
            _decrement(self._watches_by_caller, caller)
            return
        self._calls -= 1
        _decrement(self._calls_by_connection, connection)
        self._completed += 1
        if kind is CallKind.EXPORT:
            self._exports -= 1
            _decrement(self._exports_by_caller, caller)

    @property
    def calls_in_progress(self) -> int:
        """Calls taken and not yet ended (probes not counted)."""
        return self._calls

    @property
    def watches_in_progress(self) -> int:
        """Watches taken and not yet ended."""
        return self._watches

    def _admit_watch(self, caller: str) -> ServiceError | None:
        limits = self._limits
        if self._over_budget:
            return ResourceExhausted(
                "the server is over its memory budget and starts no stream until it is back "
                "under it; retry later",
                1.0,
                reason=OVER_MEMORY_BUDGET,
            )
        if self._watches_by_caller[caller] >= limits.max_watches_per_caller:
            return ResourceExhausted(
                f"{caller} has {limits.max_watches_per_caller} watches open, the limit per "
                "caller; end one first",
                5.0,
                reason=TOO_MANY_WATCHES,
                quota=QuotaViolation(
                    caller, f"at most {limits.max_watches_per_caller} watches at once per caller"
                ),
            )
        if self._watches >= limits.max_watches:
            return ResourceExhausted(
                f"the server has {self._watches} watches open, its limit; retry later or on "
                "another replica",
                5.0,
                reason=TOO_MANY_WATCHES,
            )
        self._watches += 1
        self._watches_by_caller[caller] += 1
        return None

    def _export_refusal(self, caller: str) -> ResourceExhausted | None:
        limits = self._limits
        if self._exports_by_caller[caller] >= limits.max_exports_per_caller:
            return ResourceExhausted(
                f"{caller} has {limits.max_exports_per_caller} exports in progress, the limit "
                "per caller; finish one first",
                1.0,
                reason=TOO_MANY_EXPORTS,
                quota=QuotaViolation(
                    caller, f"at most {limits.max_exports_per_caller} exports at once per caller"
                ),
            )
        if self._exports >= limits.max_exports:
            return ResourceExhausted(
                f"the server has {self._exports} exports in progress, its limit; retry later",
                1.0,
                reason=TOO_MANY_EXPORTS,
            )
        return None

    def _calls_retry_seconds(self) -> float:
        """About how long the calls in progress take to finish, from the recent completion rate."""
        now = time.monotonic()
        elapsed = now - self._rate_started
        if elapsed >= 0.5:
            self._calls_per_second = 0.5 * self._calls_per_second + 0.5 * (
                self._completed / elapsed
            )
            self._completed = 0
            self._rate_started = now
        return min(5.0, max(0.05, self._calls / max(self._calls_per_second, 1.0)))

    # ---- stopping ----

    async def refuse_new_calls(self, *, quiet_seconds: float, at_most_seconds: float) -> None:
        """Answer every new call to the refusable services UNAVAILABLE from now on, and return
        once none has come for `quiet_seconds` (callers gone, or retrying elsewhere), or after
        `at_most_seconds`.

        gRPC's own stop cancels the calls that reached the server but not yet the application,
        and a client cannot tell a CANCELLED write from one that was stored; UNAVAILABLE promises
        nothing was written. Health and reflection keep answering, so probes see NOT_SERVING.
        """
        self._refusing = True
        started = self._last_refusal = time.monotonic()
        while True:
            now = time.monotonic()
            quiet_until = self._last_refusal + quiet_seconds
            if now >= quiet_until or now >= started + at_most_seconds:
                return
            await asyncio.sleep(min(quiet_until, started + at_most_seconds) - now)

    # ---- memory budget ----

    def start(self) -> None:
        """Start watching the resident set size against the memory budget."""
        self._sampler.start()

    async def stop(self) -> None:
        """Stop watching memory."""
        await self._sampler.stop()

    async def _sample_memory(self) -> None:
        while True:
            over = resident_bytes() > self._limits.memory_limit_bytes
            if over:
                # Freed memory that glibc keeps in its arenas counts as resident; hand it back.
                _trim_heap()
                over = resident_bytes() > self._limits.memory_limit_bytes
            if over != self._over_budget:
                log.warning(
                    "over the memory budget: new streams are refused"
                    if over
                    else "back under the memory budget",
                    extra={"limit_bytes": self._limits.memory_limit_bytes},
                )
                self._over_budget = over
            await asyncio.sleep(MEMORY_SAMPLE_SECONDS)


def _decrement(counts: Counter[str], key: str) -> None:
    """One less for `key`, forgetting keys at zero so the counter holds only what is in use."""
    remaining = counts[key] - 1
    if remaining:
        counts[key] = remaining
    else:
        del counts[key]


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's resident set size (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except OSError:
        return 0


def _trim_heap() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
