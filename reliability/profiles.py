"""How hard each scenario pushes: the full run (`make reliability`) and --quick."""

from __future__ import annotations

from dataclasses import dataclass

from reliability.hostile.plan import CI_PLAN, FULL_PLAN, HostilePlan
from reliability.retry_storms import StormPlan


@dataclass(frozen=True, slots=True)
class Profile:
    """Sizes for one run of the suite."""

    name: str
    concurrency: int
    """Concurrent writers in the load scenarios."""
    kill_acknowledged: int
    """Acknowledged writes before kill -9."""
    terminate_acknowledged: int
    """Acknowledged writes before SIGTERM."""
    outage_acknowledged: int
    """Acknowledged writes before PostgreSQL is stopped."""
    outage_seconds: float
    """How long PostgreSQL stays down."""
    outage_stop_modes: tuple[str, ...]
    """pg_ctl stop modes, one outage each."""
    storm: StormPlan
    fuzz_examples: int | None
    """FUZZ_EXAMPLES for tests/fuzz; None keeps the tests' default."""
    fuzz_timeout_seconds: float
    replicas_seconds: float
    """How long two replicas on one PostgreSQL database take mixed writes."""
    replicas_writers: int
    """Writers per replica in that scenario."""
    hostile: HostilePlan
    """Sizes of the hostile-client phases (tests/hostile runs the quick ones)."""


FULL = Profile(
    name="full",
    concurrency=64,
    kill_acknowledged=10_000,
    terminate_acknowledged=10_000,
    outage_acknowledged=5_000,
    outage_seconds=3.0,
    outage_stop_modes=("fast", "immediate"),
    storm=StormPlan(requests=100, concurrent=16, sequential=4),
    fuzz_examples=500,
    fuzz_timeout_seconds=240.0,
    replicas_seconds=20.0,
    replicas_writers=8,
    hostile=FULL_PLAN,
)

QUICK = Profile(
    name="quick",
    concurrency=64,
    kill_acknowledged=2_000,
    terminate_acknowledged=2_000,
    outage_acknowledged=1_000,
    outage_seconds=2.0,
    outage_stop_modes=("fast",),
    storm=StormPlan(requests=20, concurrent=8, sequential=2),
    fuzz_examples=None,
    fuzz_timeout_seconds=120.0,
    replicas_seconds=10.0,
    replicas_writers=8,
    hostile=CI_PLAN,
)
