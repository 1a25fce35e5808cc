"""Server settings from command-line flags, falling back to FEEDBACK_* environment variables."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from server.metrics.endpoint import parse_address
from server.service import DEFAULT_LABELS
from server.service.pii.entities import Entity
from server.service.pii.redaction import DEFAULT_ENTITIES, DEFAULT_MODES, FieldClass, Mode
from server.service.retention import retention_periods

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
    max_concurrent_calls: int = 1000
    """Calls in progress at once (health checks aside); more get RESOURCE_EXHAUSTED at once."""
    max_exports: int = 16
    """Exports streaming at once, in all."""
    max_exports_per_caller: int = 4
    """Exports streaming at once for one caller (API key, or peer address without keys)."""
    max_watches: int = 10_000
    """Watches (live tails) open at once, in all."""
    max_watches_per_caller: int = 5_000
    """Watches open at once for one caller."""
    watch_buffer_kb: int = 4096
    """Records one watch may hold for a slow client, in KiB, before its stream is ended."""
    watch_history_hours: float = 24.0
    """How long the change log keeps what was committed: a watch can start (or resume) from a
    position at most this old."""
    memory_limit_mb: int = 1024
    """Resident memory above which the server starts no new stream (exports, Ingest, watches)."""
    message_timeout_seconds: float = 30.0
    """How long a started call may take to send its request message (or each Ingest message)."""
    stream_stall_timeout_seconds: float = 30.0
    """How long a streaming client may leave a response untaken before its stream is ended."""
    max_calls_per_connection: int = 250
    """Calls in progress at once on one client connection, so that one cannot take them all."""
    max_connections: int = 10_000
    """Client connections the server keeps open at once; more are refused."""
    connection_idle_timeout_seconds: float = 300.0
    """A connection with no call for this long is closed (clients reconnect when they need to)."""
    connection_max_age_seconds: float = 1800.0
    """A connection is asked to go away after this long (calls in flight get a grace period of
    CONNECTION_AGE_GRACE_SECONDS), so no client holds one forever."""
    sqlite_busy_timeout_ms: int = 5000
    """How long a SQLite write waits for another connection's (or process's) write lock before
    its batch is rolled back and retried."""
    sqlite_synchronous: str = "FULL"
    """SQLite's synchronous pragma; FULL makes every acknowledged write survive power loss."""
    event_loop: str = "uvloop"
    """"uvloop" (faster; falls back to asyncio where it is not installed) or "asyncio"."""
    auth: str = ""
    """"keys" (every call but health and reflection needs an API key), "none", or "" for keys
    unless the address is a loopback one (see auth_mode)."""
    rate_limits: str = ""
    """Per-caller rates by scope, e.g. "ingest=1000/s,read=50/s" (items per second; empty: none)."""
    tls_cert_file: str | None = None
    """PEM certificate chain to serve TLS with (with tls_key_file)."""
    tls_key_file: str | None = None
    """PEM private key of tls_cert_file."""
    tls_client_ca_file: str | None = None
    """PEM CA bundle: when set, clients must present a certificate it signed (mTLS)."""
    redact: str = ""
    """Redaction mode per field class, e.g. "text=placeholder,metadata=hash,details=keep"; "off"
    keeps everything; empty: placeholders in every class (see server.service.pii.redaction)."""
    pii_entities: str = ""
    """What redaction looks for: comma-separated entity types, "all" (names too), or empty for
    every type but PERSON."""
    phone_regions: str = "US"
    """Regions whose national phone formats are recognized ("+" numbers always are)."""
    text_hash: str = "sha256"
    """How texts the server hashes are hashed: "sha256" (FilAgent's) or "hmac" (keyed)."""
    hash_key_file: str | None = None
    """File of the server secret (at least 32 bytes) for "hmac" text hashes and hash-mode
    redaction; every replica must read the same secret."""
    retention: str = ""
    """How long each kind is kept, e.g. "feedback=400d,events=180d,interactions=90d" (h, d or w);
    empty or "none": forever (see server.service.retention)."""
    retention_interval_seconds: float = 60.0
    """How often each server deletes what has expired."""
    metrics_address: str = ""
    """host:port of the Prometheus /metrics endpoint (port 0 picks a free one); "" for none:
    metrics off, calls not counted."""
    log_level: str = "INFO"
    """Python logging level name."""
    log_format: str = "json"
    """"json" (one object per line) or "text"."""


def parse_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[str, Settings]:
    """The subcommand (serve, migrate, rebuild-rollups, vacuum) and settings; flags win over the
    env."""
    env = os.environ if environ is None else environ
    parser = _parser(env)
    args = parser.parse_args(argv)
    labels = str(args.allowed_labels).strip()
    database_url = resolve_database_url(args.database_url, args.data_dir)
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
        max_concurrent_calls=args.max_concurrent_calls,
        max_exports=args.max_exports,
        max_exports_per_caller=args.max_exports_per_caller,
        max_watches=args.max_watches,
        max_watches_per_caller=args.max_watches_per_caller,
        watch_buffer_kb=args.watch_buffer_kb,
        watch_history_hours=args.watch_history_hours,
        memory_limit_mb=args.memory_limit_mb,
        message_timeout_seconds=args.message_timeout,
        stream_stall_timeout_seconds=args.stream_stall_timeout,
        max_calls_per_connection=args.max_calls_per_connection,
        max_connections=args.max_connections,
        connection_idle_timeout_seconds=args.connection_idle_timeout,
        connection_max_age_seconds=args.connection_max_age,
        sqlite_busy_timeout_ms=args.sqlite_busy_timeout,
        sqlite_synchronous=args.sqlite_synchronous,
        event_loop=args.event_loop,
        auth=_checked_auth(parser, args.auth, args.address),
        rate_limits=args.rate_limit,
        tls_cert_file=args.tls_cert or None,
        tls_key_file=args.tls_key or None,
        tls_client_ca_file=args.tls_client_ca or None,
        redact=_checked(parser, redaction_modes, args.redact),
        pii_entities=_checked(parser, pii_entities, args.pii_entities),
        phone_regions=args.phone_regions,
        text_hash=args.text_hash,
        hash_key_file=args.hash_key_file or None,
        retention=_checked(parser, _retention, args.retention),
        retention_interval_seconds=args.retention_interval,
        metrics_address=_checked(parser, _metrics_address, args.metrics_address.strip()),
        log_level=args.log_level.upper(),
        log_format=args.log_format,
    )
    if needs_hash_key(settings) and settings.hash_key_file is None:
        parser.error("--text-hash hmac and hash-mode redaction need --hash-key-file")
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
        choices=["serve", "migrate", "rebuild-rollups", "vacuum"],
        help="serve (default): migrate the database, then serve; migrate: only migrate; "
        "rebuild-rollups: migrate, then recompute the stats rollups from the stored rows (after "
        "loading rows past the service); vacuum: rewrite the database so erased and expired rows "
        "leave no bytes in its files (SQLite VACUUM, PostgreSQL VACUUM FULL: tables locked)",
    )
    parser.add_argument(
        "--address", default=default("ADDRESS", DEFAULT_ADDRESS), help="FEEDBACK_ADDRESS"
    )
    database_arguments(parser, env)
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
    limits = parser.add_argument_group(
        "limits", "bounds on what clients can make the server hold; over one, RESOURCE_EXHAUSTED"
    )
    for flag, kind, fallback, text in (
        ("max-concurrent-calls", int, "1000", "calls in progress at once (health checks aside)"),
        ("max-exports", int, "16", "exports streaming at once, in all"),
        ("max-exports-per-caller", int, "4", "exports streaming at once per caller"),
        ("max-watches", int, "10000", "watches (live tails) open at once, in all"),
        ("max-watches-per-caller", int, "5000", "watches open at once per caller"),
        ("watch-buffer-kb", int, "4096", "KiB of records a watch may hold for a slow client"),
        ("watch-history-hours", float, "24", "hours a watch can start or resume in the past"),
        ("memory-limit-mb", int, "1024", "resident memory above which no new stream starts"),
        ("message-timeout", float, "30", "seconds a call may take to send a request message"),
        ("stream-stall-timeout", float, "30", "seconds a stream may leave a response untaken"),
        ("max-calls-per-connection", int, "250", "calls in progress at once on one connection"),
        ("max-connections", int, "10000", "client connections open at once"),
        ("connection-idle-timeout", float, "300", "seconds before an idle connection is closed"),
        ("connection-max-age", float, "1800", "seconds before a connection is asked to go away"),
    ):
        variable = flag.upper().replace("-", "_")
        limits.add_argument(
            f"--{flag}",
            type=kind,
            default=kind(default(variable, fallback)),
            help=f"FEEDBACK_{variable}: {text} (default {fallback})",
        )
    security = parser.add_argument_group("security")
    security.add_argument(
        "--auth",
        default=default("AUTH", ""),
        help="FEEDBACK_AUTH: keys = every call needs an API key (health checks and reflection "
        "aside); none = no authentication. Default: none on a loopback address, keys otherwise",
    )
    security.add_argument(
        "--rate-limit",
        default=default("RATE_LIMIT", ""),
        help="FEEDBACK_RATE_LIMIT: per-caller rates by scope, e.g. ingest=1000/s,read=50/s "
        "(items per second or /min; batch items count one each; default: none)",
    )
    for flag, text in (
        ("tls-cert", "PEM certificate chain: serve TLS (with --tls-key)"),
        ("tls-key", "PEM private key of --tls-cert"),
        ("tls-client-ca", "PEM CA bundle: require client certificates it signed (mTLS)"),
    ):
        variable = flag.upper().replace("-", "_")
        security.add_argument(
            f"--{flag}", default=default(variable, ""), help=f"FEEDBACK_{variable}: {text}"
        )
    privacy = parser.add_argument_group(
        "privacy", "personal data redacted from free text before it is stored, and text hashes"
    )
    privacy.add_argument(
        "--redact",
        default=default("REDACT", ""),
        help="FEEDBACK_REDACT: mode per field class (text, metadata, details, label): "
        "placeholder, hash or keep, e.g. text=placeholder,metadata=hash; off = keep all "
        "(default: placeholder everywhere)",
    )
    privacy.add_argument(
        "--pii-entities",
        default=default("PII_ENTITIES", ""),
        help="FEEDBACK_PII_ENTITIES: entity types to redact, comma-separated, or all "
        f"(default: all but PERSON); types: {', '.join(Entity)}",
    )
    privacy.add_argument(
        "--phone-regions",
        default=default("PHONE_REGIONS", "US"),
        help="FEEDBACK_PHONE_REGIONS: regions whose national phone formats are recognized, e.g. "
        "US,CA,GB,FR (numbers written with + are always recognized)",
    )
    privacy.add_argument(
        "--text-hash",
        choices=["sha256", "hmac"],
        default=default("TEXT_HASH", "sha256"),
        help="FEEDBACK_TEXT_HASH: how input_text/output_text are hashed: sha256 (FilAgent's "
        "format) or hmac (HMAC-SHA-256 under --hash-key-file)",
    )
    privacy.add_argument(
        "--hash-key-file",
        default=default("HASH_KEY_FILE", ""),
        help="FEEDBACK_HASH_KEY_FILE: file holding the server secret (at least 32 bytes, the "
        "same on every replica) for hmac text hashes and hash-mode redaction",
    )
    privacy.add_argument(
        "--retention",
        default=default("RETENTION", ""),
        help="FEEDBACK_RETENTION: how long each kind is kept, e.g. "
        "feedback=400d,events=180d,interactions=90d (units h, d, w); older records are deleted "
        "with their share of every statistic (default: none, keep everything)",
    )
    privacy.add_argument(
        "--retention-interval",
        type=float,
        default=float(default("RETENTION_INTERVAL", "60")),
        help="FEEDBACK_RETENTION_INTERVAL: seconds between two deletions of what has expired",
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
        "--metrics-address",
        default=default("METRICS_ADDRESS", ""),
        help="FEEDBACK_METRICS_ADDRESS: HOST:PORT to serve Prometheus metrics on, at /metrics "
        "(e.g. 127.0.0.1:9100; default: none, metrics off)",
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


AUTH_MODES = ("keys", "none")


def auth_mode(auth: str, address: str) -> str:
    """The authentication a server runs with: `auth` if given, else keys beyond loopback.

    Raises ValueError for anything but keys, none or empty, so a typo never opens a server."""
    mode = auth.strip() or ("none" if is_loopback(address) else "keys")
    if mode not in AUTH_MODES:
        raise ValueError(f"--auth (FEEDBACK_AUTH) must be keys or none, not {auth!r}")
    return mode


def redaction_modes(text: str) -> dict[FieldClass, Mode]:
    """The mode of every field class from --redact; raises ValueError naming what is wrong."""
    text = text.strip()
    if not text:
        return dict(DEFAULT_MODES)
    if text == "off":
        return dict.fromkeys(FieldClass, Mode.KEEP)
    modes = dict(DEFAULT_MODES)
    for part in text.split(","):
        name, _, mode = part.partition("=")
        try:
            modes[FieldClass(name.strip())] = Mode(mode.strip())
        except ValueError:
            raise ValueError(
                f"--redact: {part.strip()!r} is not CLASS=MODE with CLASS one of "
                f"{', '.join(FieldClass)} and MODE one of {', '.join(Mode)}"
            ) from None
    return modes


def pii_entities(text: str) -> frozenset[Entity]:
    """The entity types from --pii-entities; raises ValueError for an unknown one."""
    text = text.strip()
    if not text:
        return DEFAULT_ENTITIES
    if text == "all":
        return frozenset(Entity)
    try:
        return frozenset(Entity(name.strip().upper()) for name in text.split(",") if name.strip())
    except ValueError as error:
        raise ValueError(f"--pii-entities: {error}; types: {', '.join(Entity)}") from None


def needs_hash_key(settings: Settings) -> bool:
    """Whether the settings hash anything under the server secret."""
    modes = redaction_modes(settings.redact)
    return settings.text_hash == "hmac" or Mode.HASH in modes.values()


def _checked(parser: argparse.ArgumentParser, parse: Callable[[str], object], text: str) -> str:
    """`text` once `parse` accepts it; otherwise the usage error names the problem."""
    try:
        parse(text)
    except ValueError as error:
        parser.error(str(error))
    return text


def _metrics_address(text: str) -> object:
    return parse_address(text) if text else None


def _retention(text: str) -> object:
    try:
        return retention_periods(text)
    except ValueError as error:
        raise ValueError(f"--retention: {error}") from None


def _checked_auth(parser: argparse.ArgumentParser, auth: str | None, address: str) -> str:
    try:
        return auth_mode(auth or "", address)
    except ValueError as error:
        parser.error(str(error))


def resolve_database_url(database_url: str, data_dir: str) -> str:
    """The URL given, or the default SQLite file in the data directory."""
    return database_url or "sqlite:///" + str(Path(data_dir) / DEFAULT_DATABASE_FILE)


def database_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """Add --database-url and --data-dir (for every command that opens the database)."""
    parser.add_argument(
        "--database-url",
        default=env.get("FEEDBACK_DATABASE_URL", ""),
        help="FEEDBACK_DATABASE_URL: SQLAlchemy URL, e.g. postgresql://postgres@127.0.0.1/test; "
        "default: a SQLite file in the data directory",
    )
    parser.add_argument(
        "--data-dir",
        default=env.get("FEEDBACK_DATA_DIR", "data"),
        help="FEEDBACK_DATA_DIR: directory of the default SQLite file",
    )


def is_loopback(address: str) -> bool:
    """Whether host:port listens only on this machine (127.0.0.0/8, ::1, localhost)."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
