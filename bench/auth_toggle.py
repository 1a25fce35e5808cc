"""`python -m bench.auth_toggle`: what API keys cost one server, with everything else equal.

`make bench`'s auth pair compares two server processes on two databases, whose difference from
each other on this shared machine is often larger than the cost of a key. Here one server runs in
this process on one database, and between rounds of durable SubmitFeedback at c=64 (h2load on the
other core) its key check is switched off and on: rounds without a key and rounds with one
alternate, and the medians of the per-round ratios and of the process CPU per call compare them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from bench import payloads
from bench.toggle_rounds import Toggle, cost, parse_arguments, run
from server.app import FeedbackServer
from server.config import DEFAULT_DATABASE_FILE
from server.service.api_keys import Scope, create_key
from storage import Storage

TARGET = 0.95
"""With a key / without, req/s: the issue's "at most 5 %"."""


def _create_key(secrets: list[str], data: Path) -> None:
    with Storage.connect(f"sqlite:///{data / DEFAULT_DATABASE_FILE}") as storage:
        storage.migrate()
        created = storage.write(
            lambda repository: create_key(
                repository, "bench", {Scope.INGEST}, None, "cli", datetime.now(UTC)
            )
        )
    secrets.append(created.secret)


def _switch(server: FeedbackServer, on: bool) -> None:
    # A measurement switch production code has no reason to offer: the key ring, or none.
    access = server._boundary.access
    if not hasattr(access, "bench_key_ring"):
        access.bench_key_ring = access._key_ring  # type: ignore[attr-defined]
    access._key_ring = access.bench_key_ring if on else None  # type: ignore[attr-defined]


def _toggle() -> Toggle:
    secrets: list[str] = []
    call = payloads.UNARY_CALLS[0]
    return Toggle(
        arguments=("--auth", "keys", "--log-level", "WARNING", "--accept-unknown-conversations"),
        prepare=partial(_create_key, secrets),
        switch=_switch,
        headers=lambda on: [f"authorization: Bearer {secrets[0]}"] if on else [],
        body=call.grpc_body(),
        path=call.path,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the rounds and print the verdict; exit 0 (the verdict is informative)."""
    args = parse_arguments("python -m bench.auth_toggle", __doc__, 12, argv)
    summary = run(_toggle(), args.rounds, args.requests)
    if args.json is not None:
        args.json.write_text(json.dumps(summary))
    verdict = "PASS" if summary["ratio"] >= TARGET else "FAIL"
    print(
        f"{verdict}  with a key / without: {summary['ratio']:.3f}x req/s (target >= {TARGET}); "
        f"{cost(summary, args.requests)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
