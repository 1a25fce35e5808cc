"""Server settings from command-line flags, falling back to FEEDBACK_* environment variables."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from server.service import DEFAULT_LABELS

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_DATABASE_FILE = "feedback.sqlite3"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the composition root needs to build a server."""

    address: str = DEFAULT_ADDRESS
    """host:port to listen on; port 0 picks a free port."""
    database_url: str = f"sqlite:///data/{DEFAULT_DATABASE_FILE}"
    """SQLAlchemy URL: the embedded SQLite file by default, or postgresql://user@host/db."""
    accept_unknown_conversations: bool = False
    """Store feedback on conversations never recorded instead of answering NOT_FOUND."""
    allowed_labels: frozenset[str] | None = DEFAULT_LABELS
    """Labels a categorical rating may use; None allows any well-formed label."""
    storage_threads: int = 8
    """Threads that run blocking database work (and the size of the connection pool)."""
    write_queue_limit: int = 20_000
    """Writes (items) that may wait for group commit; beyond it writes get RESOURCE_EXHAUSTED."""
    grace_period_seconds: float = 10.0
    """How long a stopping server lets in-flight calls finish before cancelling them."""
    database_probe_seconds: float = 5.0
    """How often an idle server checks its database can take writes (health turns NOT_SERVING if
    not); while it cannot, the check runs every half second to notice recovery."""
    max_message_bytes: int = 4 * 1024 * 1024
    """Largest request or response message, in bytes."""
    sqlite_busy_timeout_ms: int = 5000
    """How long a SQLite write waits for another connection's (or process's) write lock before
    its batch is rolled back and retried."""
    sqlite_synchronous: str = "FULL"
    """SQLite's synchronous pragma; FULL makes every acknowledged write survive power loss."""
    event_loop: str = "uvloop"
    """"uvloop" (faster; falls back to asyncio where it is not installed) or "asyncio"."""
    log_level: str = "INFO"
    """Python logging level name."""
    log_format: str = "json"
    """"json" (one object per line) or "text"."""


def parse_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[str, Settings]:
    """The subcommand (serve, migrate, rebuild-rollups) and settings; flags win over the env."""
    env = os.environ if environ is None else environ
    parser = _parser(env)
    args = parser.parse_args(argv)
    labels = str(args.allowed_labels).strip()
    database_url = args.database_url or (
        "sqlite:///" + str(Path(args.data_dir) / DEFAULT_DATABASE_FILE)
    )
    settings = Settings(
        address=args.address,
        database_url=database_url,
        accept_unknown_conversations=args.accept_unknown_conversations,
        allowed_labels=None
        if labels == "*"
        else frozenset(label.strip().lower() for label in labels.split(",") if label.strip()),
        storage_threads=args.storage_threads,
        write_queue_limit=args.write_queue_limit,
        grace_period_seconds=args.grace_period,
        database_probe_seconds=args.database_probe_interval,
        max_message_bytes=args.max_message_bytes,
        sqlite_busy_timeout_ms=args.sqlite_busy_timeout,
        sqlite_synchronous=args.sqlite_synchronous,
        event_loop=args.event_loop,
        log_level=args.log_level.upper(),
        log_format=args.log_format,
    )
    return args.command or "serve", settings


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    def default(name: str, fallback: str) -> str:
        return env.get(f"FEEDBACK_{name}", fallback)

    parser = argparse.ArgumentParser(
        prog="feedback-server",
        description="Feedback & analytics gRPC service for LLM applications. Every flag can also "
        "be set by the FEEDBACK_* environment variable named in its help.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=["serve", "migrate", "rebuild-rollups"],
        help="serve (default): migrate the database, then serve; migrate: only migrate; "
        "rebuild-rollups: migrate, then recompute the stats rollups from the stored rows (after "
        "loading rows past the service)",
    )
    parser.add_argument(
        "--address", default=default("ADDRESS", DEFAULT_ADDRESS), help="FEEDBACK_ADDRESS"
    )
    parser.add_argument(
        "--database-url",
        default=default("DATABASE_URL", ""),
        help="FEEDBACK_DATABASE_URL: SQLAlchemy URL, e.g. postgresql://postgres@127.0.0.1/test; "
        "default: a SQLite file in the data directory",
    )
    parser.add_argument(
        "--data-dir",
        default=default("DATA_DIR", "data"),
        help="FEEDBACK_DATA_DIR: directory of the default SQLite file",
    )
    parser.add_argument(
        "--accept-unknown-conversations",
        action=argparse.BooleanOptionalAction,
        default=_flag(default("ACCEPT_UNKNOWN_CONVERSATIONS", "false")),
        help="FEEDBACK_ACCEPT_UNKNOWN_CONVERSATIONS: store feedback on unrecorded conversations",
    )
    parser.add_argument(
        "--allowed-labels",
        default=default("ALLOWED_LABELS", ",".join(sorted(DEFAULT_LABELS))),
        help="FEEDBACK_ALLOWED_LABELS: comma-separated labels, or * for any well-formed label",
    )
    parser.add_argument(
        "--storage-threads",
        type=int,
        default=int(default("STORAGE_THREADS", "8")),
        help="FEEDBACK_STORAGE_THREADS",
    )
    parser.add_argument(
        "--write-queue-limit",
        type=int,
        default=int(default("WRITE_QUEUE_LIMIT", "20000")),
        help="FEEDBACK_WRITE_QUEUE_LIMIT: queued writes before RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--grace-period",
        type=float,
        default=float(default("GRACE_PERIOD", "10")),
        help="FEEDBACK_GRACE_PERIOD: seconds in-flight calls get on shutdown",
    )
    parser.add_argument(
        "--database-probe-interval",
        type=float,
        default=float(default("DATABASE_PROBE_INTERVAL", "5")),
        help="FEEDBACK_DATABASE_PROBE_INTERVAL: seconds between checks that the database takes "
        "writes while health is SERVING",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=int(default("MAX_MESSAGE_BYTES", str(4 * 1024 * 1024))),
        help="FEEDBACK_MAX_MESSAGE_BYTES",
    )
    parser.add_argument(
        "--sqlite-busy-timeout",
        type=int,
        default=int(default("SQLITE_BUSY_TIMEOUT", "5000")),
        help="FEEDBACK_SQLITE_BUSY_TIMEOUT: milliseconds a write waits for another writer's lock",
    )
    parser.add_argument(
        "--sqlite-synchronous",
        choices=["FULL", "NORMAL"],
        default=default("SQLITE_SYNCHRONOUS", "FULL"),
        help="FEEDBACK_SQLITE_SYNCHRONOUS: FULL survives power loss, NORMAL only process crashes",
    )
    parser.add_argument(
        "--event-loop",
        choices=["uvloop", "asyncio"],
        default=default("EVENT_LOOP", "uvloop"),
        help="FEEDBACK_EVENT_LOOP",
    )
    parser.add_argument(
        "--log-level", default=default("LOG_LEVEL", "INFO"), help="FEEDBACK_LOG_LEVEL"
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "text"],
        default=default("LOG_FORMAT", "json"),
        help="FEEDBACK_LOG_FORMAT",
    )
    return parser


def _flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}
