"""How much load each mode sends: the full run (under 5 minutes) and --quick (a smoke test)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    """Request counts and limits of one bench mode."""

    name: str
    concurrencies: tuple[int, ...]
    """h2load clients (one stream each) for the unary phases."""
    single_client_requests: int
    """Unary requests at concurrency 1."""
    concurrent_requests: int
    """Unary requests at each concurrency above 1 (at least the concurrency itself)."""
    warm_up_requests: int
    """Unary requests at concurrency 16 before the measured ones, on every server and method."""
    status_check_requests: int
    """Unary calls whose gRPC status the Python client checks, per method."""
    batch_size: int
    batches: int
    batch_callers: int
    ingest_events: int
    raw_rows: int
    """Rows raw executemany inserts in 1000-row transactions."""
    pair_rounds: int
    """Rounds of each A/B pair (bench.pairs); each round runs both sides, in alternating order."""
    pair_requests: int
    """Requests per side and round of an A/B pair, at the target concurrency."""
    h2load_timeout_seconds: float
    ingestion_timeout_seconds: float

    def unary_requests(self, concurrency: int) -> int:
        """How many unary requests to send at `concurrency`."""
        if concurrency == 1:
            return self.single_client_requests
        return max(self.concurrent_requests, concurrency)


FULL = Profile(
    name="full",
    concurrencies=(1, 16, 64, 256),
    single_client_requests=2000,
    concurrent_requests=10_000,
    warm_up_requests=500,
    status_check_requests=1000,
    batch_size=500,
    batches=200,
    batch_callers=4,
    ingest_events=100_000,
    raw_rows=100_000,
    pair_rounds=8,
    pair_requests=2000,
    h2load_timeout_seconds=120.0,
    ingestion_timeout_seconds=120.0,
)

QUICK = Profile(
    name="quick",
    concurrencies=(1, 16, 64, 256),
    single_client_requests=50,
    concurrent_requests=300,
    warm_up_requests=50,
    status_check_requests=100,
    batch_size=500,
    batches=4,
    batch_callers=2,
    ingest_events=2000,
    raw_rows=2000,
    pair_rounds=2,
    pair_requests=300,
    h2load_timeout_seconds=30.0,
    ingestion_timeout_seconds=30.0,
)
