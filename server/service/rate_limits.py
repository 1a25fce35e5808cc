"""Per-caller rate limits: a token bucket per caller and scope, counting items, not calls.

A batch of 500 events costs 500, like 500 single calls, so batching never dodges a limit. A call
is allowed while its caller's bucket is not empty and then takes its whole cost, going into debt
if it must: a batch larger than the bucket still gets through, and its caller then waits until
the debt is paid. Each server counts on its own: with N replicas behind a balancer a caller gets
up to N times the rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from server.service.api_keys import Scope
from server.service.errors import QuotaViolation, ResourceExhausted

RATE_LIMITED = "RATE_LIMITED"
"""ErrorInfo reason of RESOURCE_EXHAUSTED over a caller's rate limit."""
BURST_SECONDS = 2.0
"""A full bucket holds this many seconds of the rate."""
MAX_BUCKETS = 100_000
"""Beyond this many callers, buckets that have refilled (and so equal a new one) are dropped."""


@dataclass(frozen=True, slots=True)
class Rate:
    """A sustained rate in items per second."""

    per_second: float

    @property
    def burst(self) -> float:
        """The bucket's capacity."""
        return max(1.0, self.per_second * BURST_SECONDS)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets by (caller, scope); scopes without a rate are not limited."""

    def __init__(
        self, rates: Mapping[Scope, Rate], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rates = dict(rates)
        self._clock = clock
        self._buckets: dict[tuple[str, Scope], _Bucket] = {}

    @property
    def limited(self) -> bool:
        """Whether any scope has a rate."""
        return bool(self._rates)

    def wait_seconds(self, caller: str, scope: Scope | None, cost: int) -> float:
        """Take `cost` items from the caller's bucket (0.0), or say how long until it may, taking
        nothing."""
        rate = self._rates.get(scope) if scope is not None else None
        if rate is None or scope is None or cost <= 0:
            return 0.0
        now = self._clock()
        key = (caller, scope)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(rate.burst, now)
        else:
            bucket.tokens = min(
                rate.burst, bucket.tokens + (now - bucket.updated) * rate.per_second
            )
            bucket.updated = now
        if bucket.tokens <= 0:
            return (1.0 - bucket.tokens) / rate.per_second
        bucket.tokens -= cost
        return 0.0

    def take(self, caller: str, scope: Scope | None, cost: int) -> None:
        """Take `cost` items, or raise ResourceExhausted saying when to retry and whose limit."""
        delay = self.wait_seconds(caller, scope, cost)
        if delay > 0:
            assert scope is not None
            rate = self._rates[scope]
            raise ResourceExhausted(
                f"{caller} is over its rate limit of {rate.per_second:g} {scope.value} items/s; "
                f"retry in {delay:.2f} s",
                delay,
                reason=RATE_LIMITED,
                quota=QuotaViolation(
                    caller, f"at most {rate.per_second:g} {scope.value} items per second"
                ),
            )

    def _forget_full(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            rate = self._rates[key[1]]
            if bucket.tokens + (now - bucket.updated) * rate.per_second >= rate.burst:
                del self._buckets[key]


def parse_rates(text: str) -> dict[Scope, Rate]:
    """Rates from "ingest=1000/s,read=50/s,admin=60/min"; raises ValueError."""
    rates: dict[Scope, Rate] = {}
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        name, _, amount = part.partition("=")
        number, _, unit = amount.strip().partition("/")
        seconds = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}.get(unit or "s")
        try:
            scope = Scope(name.strip().lower())
            per_second = float(number) / seconds if seconds else -1.0
        except ValueError:
            per_second = -1.0
        if not (math.isfinite(per_second) and per_second > 0):
            raise ValueError(
                f"bad rate limit {part!r}: use SCOPE=N/s or N/min, SCOPE one of ingest, read, admin"
            )
        rates[scope] = Rate(per_second)
    return rates
