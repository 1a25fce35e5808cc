"""How hard the hostile phases push: the CI share (tests/hostile, `--quick`) and the full run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HostilePlan:
    """Sizes of every hostile phase; each phase runs on its own server over the seeded file."""

    seed_events: int
    """Events in the seeded file: 10,000 make an ExportEvents of 10 chunks."""
    seed_feedback: int
    """Feedback rows in the seeded file."""
    killed_clients: int
    """Export client processes sent SIGKILL or SIGINT after their first chunk."""
    killed_cli_clients: int
    """`feedbackctl export` processes sent SIGKILL or SIGINT a moment after they start."""
    deadline_exports: int
    """Exports whose deadline (0.01 to 0.5 s) passes while they stream."""
    cancelled_exports: int
    """Exports the client cancel()s after 0 to 2 chunks."""
    reset_exports: int
    """Raw HTTP/2 exports ended by a TCP reset (SO_LINGER 0), before or after their first DATA."""
    stopped_exports: int
    """Exports whose client stops reading (closed window or never iterated), then goes away."""
    abandoned_ingests: int
    """Ingest streams cancelled or killed after some of their items."""
    idle_connections: int
    """Connections that send the HTTP/2 preface and SETTINGS, or nothing, and then wait."""
    slow_readers: int
    """Exports opened with a zero flow-control window and never read."""
    flood_calls: int
    """LogEvent and SubmitFeedback calls in flight at once."""
    half_sent_streams: int
    """Streams per round whose length prefix promises 1,000,000 bytes and that end after 10."""
    slowloris_streams: int
    """Streams per round that send headers and never any DATA."""
    costly_writes: int = 120
    """SubmitFeedback calls whose metadata is 16 KiB of digit groups, the costliest free text to
    redact, sent by COSTLY_CLIENTS clients at once."""
    half_sent_rounds: int = 3
    """Rounds of half-sent streams; RSS after the last must not exceed the first's by much."""


CI_PLAN = HostilePlan(
    seed_events=10_000,
    seed_feedback=5_000,
    killed_clients=8,
    killed_cli_clients=4,
    deadline_exports=60,
    cancelled_exports=60,
    reset_exports=80,
    stopped_exports=36,
    abandoned_ingests=12,
    idle_connections=2_000,
    slow_readers=500,
    flood_calls=5_000,
    half_sent_streams=1_000,
    slowloris_streams=100,
)

FULL_PLAN = HostilePlan(
    seed_events=20_000,
    seed_feedback=5_000,
    killed_clients=120,
    killed_cli_clients=60,
    deadline_exports=400,
    cancelled_exports=400,
    reset_exports=400,
    stopped_exports=300,
    abandoned_ingests=60,
    idle_connections=5_000,
    slow_readers=2_000,
    flood_calls=24_000,
    half_sent_streams=6_700,
    slowloris_streams=500,
    costly_writes=400,
)
