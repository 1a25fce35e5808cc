"""feedbackctl: record, rate, log and inspect feedback from a shell, for scripts and debugging.

Exit codes: 0 on success, 1 when the service answered with an error or could not be reached, 2 when
the command line (or the TLS and key settings) is wrong, 3 when the service refused the API key or
got none (UNAUTHENTICATED), 4 when the key lacks the scope the command needs (PERMISSION_DENIED),
130 when interrupted.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import itertools
import json
import os
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, get_args

import grpc
from google.protobuf import json_format, timestamp_pb2

from . import __version__
from . import _imports as imports
from ._client import DEFAULT_ADDRESS, DEFAULT_TIMEOUT, FeedbackClient
from ._connection import (
    API_KEY_ENVIRONMENT_VARIABLE,
    CA_FILE_ENVIRONMENT_VARIABLE,
    CLIENT_CERT_ENVIRONMENT_VARIABLE,
    CLIENT_KEY_ENVIRONMENT_VARIABLE,
    TLS_ENVIRONMENT_VARIABLE,
    checked_api_key,
    resolve_api_key,
)
from ._errors import (
    FeedbackError,
    InvalidArgumentError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from ._export_file import ExportFile, ExportFileError, Format, Kind
from ._items import EVENTS, FEEDBACK, INTERACTIONS, KINDS, HistoricItem, IngestItem
from ._listing import (
    EventFilters,
    FeedbackFilters,
    InteractionFilters,
    Order,
    UserDataKind,
    UserRecord,
)
from ._request_ids import checked_request_id
from ._suppression import is_suppressed
from ._watch import Watch
from .proto.feedback.v1 import (
    event_pb2,
    feedback_pb2,
    feedback_service_pb2,
    interaction_pb2,
    privacy_pb2,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence

    from google.protobuf.descriptor import FieldDescriptor
    from google.protobuf.message import Message

    from ._listing import ExportChunk

__all__ = ["build_parser", "main"]

ADDRESS_ENVIRONMENT_VARIABLE = "FEEDBACK_ADDRESS"
"""Environment variable holding the service address when --address is not given."""

EXIT_UNAUTHENTICATED = 3
"""Exit code when the service got no API key or refused it, so scripts can tell it apart."""

EXIT_PERMISSION_DENIED = 4
"""Exit code when the API key lacks the scope the command needs."""

# Service errors whose remedy is the caller's credentials, not a retry; all others exit 1.
_EXIT_CODES: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.UNAUTHENTICATED: EXIT_UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_PERMISSION_DENIED,
}
_REDACTED = "[redacted]"
# Failures after which a write may or may not have been stored.
_OUTCOME_UNKNOWN_CODES = frozenset(
    {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
)

_KINDS: tuple[Kind, ...] = ("feedback", "interactions", "events")
_FILTERS: dict[Kind, type[Any]] = {
    "feedback": FeedbackFilters,
    "interactions": InteractionFilters,
    "events": EventFilters,
}
# Each filter (a key of the kinds' TypedDicts) and the option that sets it.
_FILTER_OPTIONS = {
    "conversation_id": "--conversation-id",
    "message_id": "--message-id",
    "user_id": "--user-id",
    "model": "--model",
    "event_type": "--event-type",
    "min_score": "--min-score",
    "max_score": "--max-score",
    "rating_kind": "--rating-kind",
    "label": "--label",
    "has_text": "--with-text/--without-text",
    "start_time": "--since",
    "end_time": "--until",
}
_ORDERS: dict[str | None, Order | None] = {
    None: None,
    "newest": "newest_first",
    "oldest": "oldest_first",
}
_PROGRESS_TTY_SECONDS = 0.2
_PROGRESS_SECONDS = 5.0
_DEFAULT_LIST_LIMIT = 20
_MAX_PAGE_SIZE = 1000
_LABEL_WIDTH = 18
_TEXT_WIDTH = 48
# Local ingest failures listed, like the server's own list of rejections.
_MAX_LISTED_REJECTIONS = 1000


class _UsageError(Exception):
    """The command line is wrong in a way argparse cannot see (exit code 2)."""


class _HintedFailure(Exception):
    """A failed call with what the person can do about it, printed under the error line."""

    def __init__(self, error: FeedbackError, hint: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.hint = hint


def main(argv: Sequence[str] | None = None) -> int:
    """Run feedbackctl with the given arguments (default: sys.argv) and return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:
        # argparse exits on --help (0) and on usage errors (2); callers get the code instead.
        return exit_request.code if isinstance(exit_request.code, int) else 2
    command: Callable[[FeedbackClient, argparse.Namespace, TextIO], int | None] = args.command
    # A command that waits for the server's work to end (erase) has no deadline by default.
    timeout = getattr(args, "default_timeout", DEFAULT_TIMEOUT)
    timeout = timeout if args.timeout is None else args.timeout
    try:
        client = FeedbackClient(
            args.address,
            timeout=timeout,
            api_key=args.api_key,
            tls=args.tls,
            ca_file=args.ca_file,
            client_cert_file=args.client_cert,
            client_key_file=args.client_key,
        )
    except (ValueError, OSError) as error:
        # A malformed key, contradictory TLS options, an unreadable certificate: all settings.
        notes = "".join(f" ({note})" for note in getattr(error, "__notes__", ()))
        sys.stderr.write(f"feedbackctl: error: {error}{notes}\n")
        return 2
    api_key = resolve_api_key(args.api_key, os.environ)
    try:
        with client:
            exit_code = command(client, args, sys.stdout)
    except FeedbackError as error:
        _print_error(error, sys.stderr, api_key=api_key)
        return _EXIT_CODES.get(error.code, 1)
    except _HintedFailure as failure:
        _print_error(failure.error, sys.stderr, api_key=api_key, hint=failure.hint)
        return _EXIT_CODES.get(failure.error.code, 1)
    except _UsageError as error:
        sys.stderr.write(f"feedbackctl: error: {error}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    return exit_code or 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser: global connection options, then one subcommand per RPC."""
    parser = argparse.ArgumentParser(
        prog="feedbackctl",
        description="Talk to the LLM feedback & analytics service.",
        epilog="Times are ISO-8601 (2024-05-01T12:00:00+02:00); without an offset they are UTC.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_options(parser, with_defaults=True)
    # Subcommands repeat the global options so they also work after the subcommand name.
    global_options = argparse.ArgumentParser(add_help=False)
    _add_global_options(global_options, with_defaults=False)
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    record = subcommands.add_parser(
        "record", parents=[global_options], help="record one chat turn (interaction)"
    )
    record.set_defaults(command=_record)
    record.add_argument("conversation_id", metavar="CONVERSATION_ID")
    record.add_argument("--message-id")
    record.add_argument("--user-id")
    record.add_argument("--model")
    user_input = record.add_mutually_exclusive_group()
    user_input.add_argument("--input-text", help="user input; only its hash is stored")
    user_input.add_argument("--input-hash", help="SHA-256 of the user input")
    model_output = record.add_mutually_exclusive_group()
    model_output.add_argument("--output-text", help="model answer; only its hash is stored")
    model_output.add_argument("--output-hash", help="SHA-256 of the model answer")
    record.add_argument("--latency-ms", type=float)
    record.add_argument("--prompt-tokens", type=int)
    record.add_argument("--completion-tokens", type=int)
    record.add_argument("--total-tokens", type=int)
    record.add_argument("--metadata", type=_json_object, metavar="JSON")
    record.add_argument("--occur-time", type=_iso_time, metavar="TIME")
    _add_request_id(record)

    submit = subcommands.add_parser(
        "submit", parents=[global_options], help="submit feedback on an AI answer"
    )
    submit.set_defaults(command=_submit)
    submit.add_argument(
        "conversation_id", metavar="CONVERSATION_ID", nargs="?", help="optional with --message-id"
    )
    rating = submit.add_mutually_exclusive_group(required=True)
    rating.add_argument("--score", type=int, help="1 (poor) to 5 (excellent)")
    rating.add_argument("--thumb", choices=("up", "down"))
    rating.add_argument("--label", help='categorical rating such as "good" or "bad"')
    submit.add_argument("--text", help="free-text comment")
    submit.add_argument("--message-id")
    submit.add_argument("--user-id")
    submit.add_argument("--latency-ms", type=float)
    submit.add_argument("--tokens-used", type=int)
    submit.add_argument("--input-hash")
    submit.add_argument("--output-hash")
    submit.add_argument("--metadata", type=_json_object, metavar="JSON")
    submit.add_argument("--model", help="model of the rated answer (default: the interaction's)")
    _add_request_id(submit)

    log = subcommands.add_parser(
        "log", parents=[global_options], help="log one product analytics event"
    )
    log.set_defaults(command=_log)
    log.add_argument("user_id", metavar="USER_ID")
    log.add_argument("event_type", metavar="EVENT_TYPE", help='for example "page_view"')
    log.add_argument("--details", type=_json_object, metavar="JSON")
    log.add_argument("--event-time", type=_iso_time, metavar="TIME")
    log.add_argument(
        "--event-id", help="your own unique id of the event; an event_id stored before is dropped"
    )
    _add_request_id(log)

    history = subcommands.add_parser(
        "history",
        parents=[global_options],
        help="show the votes one user gave on one message, oldest first",
        description=(
            "One vote per user per message counts; a newer one replaces the older, which is "
            "kept and shown here with when and by which vote it was replaced."
        ),
    )
    history.set_defaults(command=_history)
    history.add_argument("message_id", metavar="MESSAGE_ID")
    history.add_argument("user_id", metavar="USER_ID")

    stats = subcommands.add_parser(
        "stats", parents=[global_options], help="show aggregated statistics"
    )
    stats.set_defaults(command=_stats)
    _add_filters(stats)
    stats.add_argument("--since", type=_iso_time, metavar="TIME", help="from this time (included)")
    stats.add_argument("--until", type=_iso_time, metavar="TIME", help="to this time (excluded)")
    stats.add_argument("--model", help="only feedback and interactions of this model")
    stats.add_argument("--event-type", help="only events of this type")
    stats.add_argument(
        "--bucket",
        choices=("hour", "day", "week", "month"),
        help="also split --since..--until into UTC buckets of this size",
    )
    stats.add_argument(
        "--group-by",
        choices=("model", "event-type", "conversation", "user"),
        help="also show the largest groups by this key",
    )
    stats.add_argument(
        "--top",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="number of groups to show (default 10, at most 1000)",
    )
    stats.add_argument(
        "--compare-previous",
        action="store_true",
        help="also compare with the period of the same length before --since",
    )

    listing = subcommands.add_parser(
        "list",
        parents=[global_options],
        help="list feedback, interactions or events, newest first",
        description="Filters a kind does not have are refused (exit 2).",
    )
    listing.set_defaults(command=_list)
    listing.add_argument("--kind", choices=_KINDS, default="feedback", help="default: feedback")
    _add_list_filters(listing)
    listing.add_argument(
        "--limit",
        type=_non_negative_int,
        default=_DEFAULT_LIST_LIMIT,
        help=f"show at most this many entries (default {_DEFAULT_LIST_LIMIT}; 0 for all)",
    )

    export = subcommands.add_parser(
        "export",
        parents=[global_options],
        help="export feedback, interactions or events to a JSON Lines or CSV file",
        description=(
            "Streams every matching record, oldest first unless --order says otherwise, into "
            "FILE: one JSON object per line, or CSV with a fixed header (metadata and details "
            "as JSON text). Progress goes to standard error. After each chunk is on disk, FILE."
            "resume records where to continue; if the export is interrupted (Ctrl-C, a crash, "
            "a lost connection), run the same command with --resume to finish it with no gap "
            "and no duplicate. Runs without a deadline unless --timeout is given."
        ),
    )
    export.set_defaults(command=_export)
    export.add_argument("kind", choices=_KINDS, metavar="KIND", help=", ".join(_KINDS))
    export.add_argument("--output", "-o", type=Path, required=True, metavar="FILE")
    export.add_argument(
        "--format", choices=("jsonl", "csv"), help="default: csv for a .csv FILE, else jsonl"
    )
    _add_list_filters(export)
    export.add_argument(
        "--resume", action="store_true", help="continue the interrupted export to FILE"
    )
    export.add_argument(
        "--max-chunks",
        type=_positive_int,
        metavar="N",
        help="stop after N chunks of up to 1000 records, leaving the export resumable",
    )

    ingest = subcommands.add_parser(
        "ingest",
        parents=[global_options],
        help="bulk-load interactions, feedback and events from a JSON Lines file",
        description=(
            'Each line is a JSON object with a "kind" ("interaction", "feedback" or "event") and '
            "the fields of that request (RecordInteractionRequest, SubmitFeedbackRequest or "
            "LogEventRequest) in their proto JSON names. Prints the totals and every rejected "
            "line; exits 1 if any line was rejected. Runs without a deadline unless --timeout is "
            "given."
        ),
    )
    ingest.set_defaults(command=_ingest)
    ingest.add_argument(
        "file",
        metavar="FILE",
        type=argparse.FileType("r", encoding="utf-8"),
        help='JSON Lines file, or "-" for standard input',
    )

    importing = subcommands.add_parser(
        "import",
        parents=[global_options],
        help="import FilAgent's or UP2D8's history with its original times (admin key)",
        description=(
            "Reads the history of a system this service replaces and loads it with ImportHistory,"
            " each record at its original time. Every record gets a request id derived from the"
            " source, so running the same import again (after a crash, say) stores only what is"
            " missing. Prints the totals and every record not imported, with why; exits 1 if"
            " any was not. --dry-run reads the source and reports what it cannot import, without"
            " calling the server (the server's own checks, such as links and vote order, then"
            " remain to be seen). Runs without a deadline unless --timeout is given."
        ),
    )
    importing.set_defaults(command=_import)
    importing.add_argument("system", choices=("filagent", "up2d8"), help="the source's format")
    importing.add_argument(
        "path",
        nargs="?",
        type=Path,
        help="filagent: the memory/analytics.sqlite file",
    )
    importing.add_argument(
        "--feedback",
        type=Path,
        metavar="FILE",
        help="up2d8: mongoexport of the feedback collection",
    )
    importing.add_argument(
        "--analytics",
        type=Path,
        metavar="FILE",
        help="up2d8: mongoexport of the analytics collection",
    )
    importing.add_argument(
        "--source",
        metavar="NAME",
        help="names this source in the request ids (default: the system): give two databases"
        " of one system different names",
    )
    importing.add_argument(
        "--dry-run", action="store_true", help="report what cannot be imported; send nothing"
    )

    erase = subcommands.add_parser(
        "erase",
        parents=[global_options],
        help="erase everything stored about one user or conversation, irreversibly (admin key)",
        description=(
            "Erases every interaction, current and replaced feedback and event of the user (a "
            "conversation: its interactions and feedback), with their share of every statistic, "
            "and prints the finished entry of the erasure log: the records removed per kind, the "
            "entry's id and the subject's hash (the log never holds the id). Cannot be undone, "
            "so it refuses to run without --yes (exit 2). Waits without a deadline unless "
            "--timeout is given; a run that stopped waiting (timeout, Ctrl-C, lost connection) "
            "leaves the erasure going on or stopped halfway, with writes about the subject "
            "refused: run the same command again, which waits for it or resumes it."
        ),
    )
    erase.set_defaults(command=_erase, default_timeout=None)
    erased = erase.add_mutually_exclusive_group(required=True)
    erased.add_argument("--user", metavar="ID", help="the user_id whose records to erase")
    erased.add_argument(
        "--conversation", metavar="ID", help="the conversation_id whose records to erase"
    )
    erase.add_argument(
        "--yes", action="store_true", help="erase for real (required: it cannot be undone)"
    )

    erasures = subcommands.add_parser(
        "erasures",
        parents=[global_options],
        help="list the erasure log, newest first (admin key)",
        description=(
            "Every erasure, finished or under way, with the records it removed. The log holds "
            "each subject as a hash of its id: --user or --conversation finds that subject's "
            "entries by hashing the id given."
        ),
    )
    erasures.set_defaults(command=_erasures)
    erasures_of = erasures.add_mutually_exclusive_group()
    erasures_of.add_argument("--user", metavar="ID", help="only the erasures of this user")
    erasures_of.add_argument(
        "--conversation", metavar="ID", help="only the erasures of this conversation"
    )
    erasures.add_argument(
        "--limit",
        type=_non_negative_int,
        default=_DEFAULT_LIST_LIMIT,
        help=f"show at most this many entries (default {_DEFAULT_LIST_LIMIT}; 0 for all)",
    )

    export_user = subcommands.add_parser(
        "export-user",
        parents=[global_options],
        help="export everything stored about one user as JSON Lines, for an access request "
        "(admin key)",
        description=(
            'Writes one JSON object per line: {"kind": "interaction", "feedback", '
            '"replaced_vote" or "event", "record": the record in proto JSON with the .proto '
            "field names}, the user's interactions first, then their current feedback, replaced "
            "votes and events, each oldest first. To standard output, or with -o to FILE, "
            "created readable by its owner only (0600: it is personal data) and put in place "
            "only once complete. Prints the count per kind to standard error. The export cannot "
            "be resumed: if it breaks, run it again. Runs without a deadline unless --timeout "
            "is given."
        ),
    )
    export_user.set_defaults(command=_export_user)
    export_user.add_argument("user_id", metavar="USER_ID")
    export_user.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="write to FILE instead of standard output"
    )

    opt_out = subcommands.add_parser(
        "opt-out",
        parents=[global_options],
        help="stop storing writes about one user, optionally erasing their past (admin key)",
        description=(
            "Opts the user out: from then on every write about them, on every server sharing "
            "the database, is answered but not stored (suppressed: not an error, and never "
            "retried). What was stored before is kept unless --erase is given, which then erases "
            "it as `erase --user` does; that cannot be undone, so --erase refuses to run without "
            "--yes (exit 2). Prints the opt-out (the user's hash, since when, who asked) and, "
            "with --erase, the finished erasure. Opting out again keeps the first time. The "
            "choice is recorded (see opt-out-status). Waits without a deadline unless --timeout "
            "is given; a run with --erase that stopped waiting leaves the user opted out: run "
            "the same command again to finish the erasure."
        ),
    )
    opt_out.set_defaults(command=_opt_out, default_timeout=None)
    opt_out.add_argument("user_id", metavar="USER_ID")
    opt_out.add_argument(
        "--erase",
        action="store_true",
        help="also erase everything stored about the user so far (needs --yes)",
    )
    opt_out.add_argument(
        "--yes", action="store_true", help="erase for real with --erase (it cannot be undone)"
    )

    opt_in = subcommands.add_parser(
        "opt-in",
        parents=[global_options],
        help="store writes about an opted-out user again (admin key)",
        description=(
            "Takes the user's writes again from now on; what was suppressed meanwhile was never "
            "stored and does not come back. The choice is recorded even for a user who was not "
            "opted out."
        ),
    )
    opt_in.set_defaults(command=_opt_in)
    opt_in.add_argument("user_id", metavar="USER_ID")

    watch = subcommands.add_parser(
        "watch",
        parents=[global_options],
        help="print feedback, interactions or events as they are committed",
        description=(
            "Follows one kind from now (or from --from-position / --from-token) and prints each "
            "record as it is committed, on any replica: a table, or with --json one JSON "
            'object per line ({"position": ..., KIND: {...}}). Reconnects by itself. When it '
            "stops (Ctrl-C, --count) it prints to standard error the position to continue "
            "from with --from-position."
        ),
    )
    watch.set_defaults(command=_watch, default_timeout=None)
    watch.add_argument("kind", choices=_KINDS, metavar="KIND", help=", ".join(_KINDS))
    _add_list_filters(watch, ranged=False)
    start = watch.add_mutually_exclusive_group()
    start.add_argument(
        "--from-position", metavar="POSITION", help="continue right after this position"
    )
    start.add_argument(
        "--from-token",
        metavar="TOKEN",
        help="continue after an oldest-first list page or export chunk with the same filters "
        "(its next page token or resume token)",
    )
    watch.add_argument(
        "--progress-interval",
        type=float,
        metavar="SECONDS",
        help="how often an idle watch's position moves on (1-3600, default 10)",
    )
    watch.add_argument("--count", type=_positive_int, metavar="N", help="stop after N records")

    opt_out_status = subcommands.add_parser(
        "opt-out-status",
        parents=[global_options],
        help="show whether a user is opted out, and their recorded choices (admin key)",
        description=(
            "Whether writes about the user are suppressed now, and since when, then their newest "
            "100 choices (opt-out or opt-in), newest first, with who recorded each and whether "
            "it asked to erase the past. --json prints the GetOptOut response: opt_out is there "
            "only while the user is opted out."
        ),
    )
    opt_out_status.set_defaults(command=_opt_out_status)
    opt_out_status.add_argument("user_id", metavar="USER_ID")
    return parser


def _add_global_options(parser: argparse.ArgumentParser, *, with_defaults: bool) -> None:
    """Add the connection, key, TLS and output options; without defaults they never override
    earlier values."""

    def default(value: object) -> object:
        return value if with_defaults else argparse.SUPPRESS

    parser.add_argument(
        "--address",
        default=default(os.environ.get(ADDRESS_ENVIRONMENT_VARIABLE, DEFAULT_ADDRESS)),
        help=f"service host:port (env {ADDRESS_ENVIRONMENT_VARIABLE}, default {DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        # None stands for "not given": ingest then runs without a deadline.
        default=default(None),
        metavar="SECONDS",
        help=f"give up after this long, retries included (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--json",
        dest="json_output",
        action="store_true",
        default=default(False),
        help="print one JSON document instead of text",
    )
    # None lets FeedbackClient fall back to the environment variable, so that rule lives once.
    parser.add_argument(
        "--api-key",
        type=_api_key,
        default=default(None),
        metavar="KEY",
        help=f"API key sent with every call (env {API_KEY_ENVIRONMENT_VARIABLE}, which is safer: "
        "command-line arguments are visible to other users of the machine)",
    )
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=default(None),
        help=f"connect over TLS, trusting the system's roots unless --ca-file is given (env "
        f"{TLS_ENVIRONMENT_VARIABLE}=1; --no-tls forces plaintext)",
    )
    parser.add_argument(
        "--ca-file",
        default=default(None),
        metavar="PEM",
        help=f"trust this CA certificate file; implies --tls (env {CA_FILE_ENVIRONMENT_VARIABLE})",
    )
    parser.add_argument(
        "--client-cert",
        default=default(None),
        metavar="PEM",
        help="client certificate for mutual TLS, with --client-key; implies --tls "
        f"(env {CLIENT_CERT_ENVIRONMENT_VARIABLE})",
    )
    parser.add_argument(
        "--client-key",
        default=default(None),
        metavar="PEM",
        help=f"private key of --client-cert (env {CLIENT_KEY_ENVIRONMENT_VARIABLE})",
    )


def _add_request_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--request-id",
        type=_request_id,
        metavar="UUID",
        help="idempotency key (default: a new one); reuse it when re-running a command whose "
        "outcome is unknown, and the write is stored once",
    )


def _add_filters(parser: argparse.ArgumentParser) -> None:
    """Add the filters of stats."""
    parser.add_argument("--conversation-id")
    parser.add_argument("--message-id")
    parser.add_argument("--user-id")


def _add_list_filters(parser: argparse.ArgumentParser, *, ranged: bool = True) -> None:
    """Add the filters of list, export and watch (see _FILTER_OPTIONS), and unless not
    `ranged` (watch) the time range and the order."""
    parser.add_argument("--conversation-id", help="feedback and interactions")
    parser.add_argument("--message-id", help="feedback and interactions")
    parser.add_argument("--user-id")
    parser.add_argument("--model", help="feedback and interactions")
    parser.add_argument("--event-type", help="events only")
    parser.add_argument("--min-score", type=int, help="feedback only; inclusive")
    parser.add_argument("--max-score", type=int, help="feedback only; inclusive")
    parser.add_argument("--rating-kind", choices=("score", "thumb", "label"), help="feedback only")
    parser.add_argument("--label", help="feedback only")
    text = parser.add_mutually_exclusive_group()
    text.add_argument(
        "--with-text",
        dest="has_text",
        action="store_const",
        const=True,
        help="feedback only: only entries with text",
    )
    text.add_argument(
        "--without-text",
        dest="has_text",
        action="store_const",
        const=False,
        help="feedback only: only entries without text",
    )
    if not ranged:
        return
    parser.add_argument(
        "--since",
        dest="start_time",
        type=_iso_time,
        metavar="TIME",
        help="from this time (included): feedback by storage, interactions and events by "
        "occurrence",
    )
    parser.add_argument(
        "--until", dest="end_time", type=_iso_time, metavar="TIME", help="to this time (excluded)"
    )
    parser.add_argument(
        "--order", choices=("newest", "oldest"), help="default: newest for list, oldest for export"
    )


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    """The filters given on the command line, refusing those the kind does not have."""
    kind: Kind = args.kind
    allowed = _FILTERS[kind].__optional_keys__
    filters: dict[str, Any] = {}
    for name, option in _FILTER_OPTIONS.items():
        value = getattr(args, name, None)  # watch has no time range
        if value is None:
            continue
        if name not in allowed:
            raise _UsageError(f"{option} does not apply to {kind}")
        filters[name] = value
    return filters


def _record(client: FeedbackClient, args: argparse.Namespace, out: TextIO) -> None:
    interaction = client.record_interaction(**INTERACTIONS.arguments(vars(args)))
    _print_written(interaction, args, out)


def _submit(client: FeedbackClient, args: argparse.Namespace, out: TextIO) -> None:
    arguments = FEEDBACK.arguments(vars(args))
    arguments["thumb"] = None if args.thumb is None else args.thumb == "up"
    feedback = client.submit_feedback(**arguments)
    _print_written(feedback, args, out)


def _log(client: FeedbackClient, args: argparse.Namespace, out: TextIO) -> None:
    event = client.log_event(**EVENTS.arguments(vars(args)))
    _print_written(event, args, out)


def _print_written(
    record: interaction_pb2.Interaction | feedback_pb2.Feedback | event_pb2.Event,
    args: argparse.Namespace,
    out: TextIO,
) -> None:
    """Print the stored record, or say that the write was suppressed (its user opted out)."""
    if not is_suppressed(record):
        _print_message(record, args, out)
    elif args.json_output:
        _print_json({"suppressed": True}, out)
    else:
        out.write(_SUPPRESSED_WRITE + "\n")


def _history(client: FeedbackClient, args: argparse.Namespace, out: TextIO) -> None:
    votes = client.list_feedback_history(args.message_id, args.user_id)
    if args.json_output:
        _print_json({"feedback": [_to_dict(vote) for vote in votes]}, out)
    else:
        out.write(_HISTORY.format(votes))


def _stats(client: FeedbackClient, args: argparse.Namespace, out: TextIO) -> None:
    stats = client.get_stats(
        conversation_id=args.conversation_id,
        user_id=args.user_id,
        message_id=args.message_id,
        start_time=args.since,
        end_time=args.until,
        model=args.model,
        event_type=args.event_type,
        bucket=args.bucket,
        group_by=None if args.group_by is None else args.group_by.replace("-", "_"),
        top_n=args.top,
        compare_previous=args.compare_previous,
    )
    if args.json_output:
        # Zero counts are printed so scripts need not know proto3 omits default values.
        _print_json(_to_dict(stats, always_print_fields_with_no_presence=True), out)
    else:
        out.write(_format_stats(stats))


def _list(client: FeedbackClient, args: argparse.Namespace, out: TextIO) -> None:
    kind: Kind = args.kind
    filters = _selection(args)
    limit: int = args.limit
    # One entry past the limit tells whether the listing was cut short.
    page_size = min(limit + 1, _MAX_PAGE_SIZE) if limit else _MAX_PAGE_SIZE
    walks: dict[Kind, Callable[..., Iterator[Message]]] = {
        "feedback": client.iter_feedback,
        "interactions": client.iter_interactions,
        "events": client.iter_events,
    }
    entries = walks[kind](page_size=page_size, order=_ORDERS[args.order], **filters)
    records = list(itertools.islice(entries, limit + 1 if limit else None))
    truncated = bool(limit) and len(records) > limit
    records = records[:limit] if limit else records
    if args.json_output:
        _print_json({kind: [_to_dict(record) for record in records]}, out)
        return
    out.write(_TABLES[kind].format(records))
    if truncated:
        print(f"(first {limit} shown; pass --limit 0 for all)", file=sys.stderr)


def _watch(client: FeedbackClient, args: argparse.Namespace, out: TextIO) -> int:
    kind: Kind = args.kind
    watches: dict[Kind, Callable[..., Watch[Any]]] = {
        "feedback": client.watch_feedback,
        "interactions": client.watch_interactions,
        "events": client.watch_events,
    }
    watch = watches[kind](
        start_position=args.from_position or "",
        start_page_token=args.from_token or "",
        progress_interval=args.progress_interval,
        **_selection(args),
    )
    table = _TABLES[kind]
    if not args.json_output:
        out.write(table.row(tuple(name for name, _ in table.columns)))
        out.flush()
    shown = 0
    try:
        with watch:
            for watched in watch:
                if args.json_output:
                    line = {"position": watched.position, kind: _to_dict(watched.record)}
                    out.write(json.dumps(line, ensure_ascii=False) + "\n")
                else:
                    out.write(table.row(table.cells(watched.record)))
                out.flush()
                shown += 1
                if shown == args.count:
                    break
    finally:
        if watch.position:
            sys.stderr.write(f"continue with --from-position {watch.position}\n")
    return 0


def _export(client: FeedbackClient, args: argparse.Namespace, out: TextIO) -> int:
    kind: Kind = args.kind
    filters = _selection(args)
    path: Path = args.output
    file_format: Format = args.format or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    # What makes a later --resume the same export; times as text so it can be stored as JSON.
    selection = {
        "filters": {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in filters.items()
        },
        "order": args.order,
    }
    try:
        start = ExportFile.resume if args.resume else ExportFile.start
        export_file = start(path, kind, file_format, selection)
    except (ExportFileError, OSError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    streams: dict[Kind, Callable[..., Generator[ExportChunk[Message], None, None]]] = {
        "feedback": client.export_feedback,
        "interactions": client.export_interactions,
        "events": client.export_events,
    }
    chunks = streams[kind](
        order=_ORDERS[args.order],
        resume_token=export_file.resume_token,
        timeout=args.timeout,
        **filters,
    )
    progress = _Progress(sys.stderr, already=export_file.rows_written)
    complete = False
    try:
        for count, chunk in enumerate(chunks, start=1):
            export_file.append(chunk.records, chunk.resume_token)
            progress.show(export_file.rows_written)
            if count == args.max_chunks:
                break
        else:
            complete = True
    except BaseException:
        if args.resume or export_file.rows_written:
            progress.end()
            export_file.close()
            sys.stderr.write(
                f"export interrupted after {export_file.rows_written} records; run the same "
                "command with --resume to continue\n"
            )
        else:
            # Nothing worth resuming (a rejected filter, say): leave no files behind.
            export_file.discard()
        raise
    finally:
        chunks.close()
    progress.end()
    if complete:
        export_file.finish()
        summary = f"exported {export_file.rows_written} {kind} to {path}"
    else:
        export_file.close()
        summary = (
            f"stopped after {args.max_chunks} chunks with {export_file.rows_written} {kind} "
            f"in {path}; run the same command with --resume to continue"
        )
    if args.json_output:
        document = {"kind": kind, "file": str(path), "records": export_file.rows_written}
        _print_json({**document, "complete": complete}, out)
    else:
        out.write(summary + "\n")
    return 0


class _Progress:
    """Rows and rows/s on standard error: a line rewritten in place on a terminal, else a line
    every few seconds."""

    def __init__(self, err: TextIO, *, already: int, total: int | None = None) -> None:
        self._err = err
        self._total = total
        """How many records there are in all, when known: the line then gives the share done."""
        self._tty = err.isatty()
        self._already = already
        self._start = self._last = time.monotonic()
        self._shown = False
        self._rows = already

    def show(self, rows: int) -> None:
        """Report that `rows` records are in the file, if it is time for a new report."""
        self._rows = rows
        now = time.monotonic()
        if now - self._last < (_PROGRESS_TTY_SECONDS if self._tty else _PROGRESS_SECONDS):
            return
        self._last = now
        self._write(now)

    def end(self) -> None:
        """Give the final figures, then end the progress line."""
        self._write(time.monotonic())
        if self._tty:
            self._err.write("\n")

    def _write(self, now: float) -> None:
        rate = (self._rows - self._already) / max(now - self._start, 1e-9)
        line = f"{self._rows:,} records, {rate:,.0f} records/s"
        if self._total:
            share = min(self._rows / self._total, 1.0)
            line = f"[{'#' * int(share * 30):<30}] {share:4.0%} {line} of {self._total:,}"
        self._err.write(f"\r{line}\x1b[K" if self._tty else f"{line}\n")
        self._err.flush()


class _IngestInput:
    """The lines of an ingest file turned into items, and what could not be turned into one."""

    def __init__(self) -> None:
        self.skipped_lines: list[int] = []
        """Numbers of the lines not sent (blank or invalid), in ascending order."""
        self.invalid_count = 0
        """Lines refused before sending."""
        self.invalid: list[tuple[int, FeedbackError]] = []
        """The first refused lines, with why."""

    def items(self, lines: Iterable[str]) -> Iterator[IngestItem]:
        """Yield an item per valid line, recording the others."""
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                self.skipped_lines.append(line_number)
                continue
            try:
                item = _ingest_item(line)
            except (ValueError, TypeError) as error:
                self.skipped_lines.append(line_number)
                self.invalid_count += 1
                if len(self.invalid) < _MAX_LISTED_REJECTIONS:
                    self.invalid.append((line_number, InvalidArgumentError(str(error))))
                continue
            yield item

    def line_of(self, index: int) -> int:
        """Line number of the item sent at stream position `index`."""
        # The least fixed point of line = index + 1 + (skipped lines up to it) is a sent line.
        line = index + 1
        while True:
            following = index + 1 + bisect.bisect_right(self.skipped_lines, line)
            if following == line:
                return line
            line = following


def _ingest(client: FeedbackClient, args: argparse.Namespace, out: TextIO) -> int:
    source = _IngestInput()
    lines: TextIO = args.file
    try:
        result = client.ingest(source.items(lines), timeout=args.timeout)
    except (OSError, UnicodeDecodeError) as error:
        notes = "".join(f"  {note}\n" for note in getattr(error, "__notes__", ()))
        sys.stderr.write(f"error: cannot read {lines.name}: {error}\n{notes}")
        return 1
    finally:
        if lines is not sys.stdin:
            lines.close()
    rejections = sorted(
        [*source.invalid]
        + [
            (source.line_of(rejection.index), rejection.error)
            for rejection in result.rejections
            if rejection.error is not None
        ],
        key=lambda rejection: rejection[0],
    )
    total = result.received_count + source.invalid_count
    rejected = result.rejected_count + source.invalid_count
    unlisted = rejected - len(rejections)
    if args.json_output:
        _print_json(
            {
                "item_count": total,
                "accepted_count": result.accepted_count,
                "duplicate_count": result.duplicate_count,
                "rejected_count": rejected,
                "suppressed_count": result.suppressed_count,
                "rejections": [_rejection_document(line, error) for line, error in rejections],
            },
            out,
        )
    else:
        # Duplicates are accepted items that an earlier load (same request_id or event_id) stored.
        duplicates = f" ({result.duplicate_count} already stored)" if result.duplicate_count else ""
        out.write(
            f"{total} items: {result.accepted_count} accepted{duplicates}, {rejected} rejected"
            f"{_suppressed_count(result.suppressed_count)}\n"
        )
        for line, rejection in rejections:
            out.write(f"line {line}: {rejection.code.name}: {rejection.message}\n")
            if isinstance(rejection, InvalidArgumentError):
                for violation in rejection.field_violations:
                    out.write(f"  {violation.field}: {violation.description}\n")
        if unlisted:
            out.write(f"({unlisted} more rejected lines not listed)\n")
    return 1 if rejected else 0


def _import(client: FeedbackClient, args: argparse.Namespace, out: TextIO) -> int:
    try:
        if args.system == "filagent":
            if args.path is None:
                sys.stderr.write("error: import filagent needs the path of analytics.sqlite\n")
                return 2
            source = imports.filagent(args.path, args.source or "filagent")
        else:
            if args.feedback is None and args.analytics is None:
                sys.stderr.write("error: import up2d8 needs --feedback and/or --analytics\n")
                return 2
            source = imports.up2d8(args.feedback, args.analytics, args.source or "up2d8")
    except (OSError, sqlite3.Error, UnicodeDecodeError) as error:
        sys.stderr.write(f"error: cannot read the source: {error}\n")
        return 1
    progress = _Progress(sys.stderr, already=0, total=source.total)
    read = 0
    refused: list[tuple[str, str]] = []
    sent: list[str] = []

    def items() -> Iterator[HistoricItem]:
        nonlocal read
        for record in source.records:
            read += 1
            progress.show(read)
            if record.item is None:
                refused.append((record.where, record.problem or "cannot be imported"))
                continue
            sent.append(record.where)
            yield record.item

    try:
        if args.dry_run:
            count = sum(1 for _ in items())
            progress.end()
            out.write(f"{count + len(refused)} records: {count} would be sent, ")
            out.write(f"{len(refused)} cannot be imported\n")
            for where, problem in refused[:_MAX_LISTED_REJECTIONS]:
                out.write(f"{where}: {problem}\n")
            return 1 if refused else 0
        result = client.import_history(items(), timeout=args.timeout)
    except (OSError, sqlite3.Error, UnicodeDecodeError) as error:
        sys.stderr.write(f"error: cannot read the source: {error}\n")
        return 1
    progress.end()
    rejected = [
        (sent[rejection.index], rejection.error)
        for rejection in result.rejections
        if rejection.error is not None
    ]
    new = result.accepted_count - result.duplicate_count
    total = result.received_count + len(refused)
    if args.json_output:
        _print_json(
            {
                "record_count": total,
                "imported_count": new,
                "duplicate_count": result.duplicate_count,
                "rejected_count": result.rejected_count,
                "suppressed_count": result.suppressed_count,
                "refused_count": len(refused),
                "refused": [{"where": where, "problem": problem} for where, problem in refused],
                "rejections": [
                    {"where": where, **_rejection_document(0, error)} for where, error in rejected
                ],
            },
            out,
        )
    else:
        out.write(
            f"{total} records: {new} imported, {result.duplicate_count} already there,"
            f" {result.rejected_count} rejected by the server"
            f"{_suppressed_count(result.suppressed_count)}, {len(refused)} not importable\n"
        )
        for where, problem in refused[:_MAX_LISTED_REJECTIONS]:
            out.write(f"{where}: {problem}\n")
        for where, rejection in rejected:
            out.write(f"{where}: {rejection.code.name}: {rejection.message}\n")
    return 1 if refused or result.rejected_count else 0


def _erase(client: FeedbackClient, args: argparse.Namespace, out: TextIO) -> None:
    erase: Callable[[str], privacy_pb2.Erasure]
    if args.user is not None:
        erase, subject_id, subject = client.erase_user, args.user, f"user {args.user!r}"
        what = "every interaction, current and replaced feedback and event"
    else:
        erase, subject_id = client.erase_conversation, args.conversation
        subject = f"conversation {args.conversation!r}"
        what = "every interaction and current and replaced feedback (its users' events stay)"
    if not args.yes:
        raise _UsageError(
            f"this would erase {what} of {subject}, with their share of every statistic, "
            "and cannot be undone: pass --yes to erase"
        )
    try:
        erasure = erase(subject_id)
    except FeedbackError as error:
        if error.code not in _OUTCOME_UNKNOWN_CODES:
            raise
        raise _HintedFailure(
            error,
            f"the erasure of {subject} may go on, or have stopped halfway with writes about it "
            "refused: run the same command again, which waits for it or resumes it",
        ) from error
    if args.json_output:
        _print_json(_to_dict(erasure, always_print_fields_with_no_presence=True), out)
    else:
        out.write(_format_erasure(erasure))


def _erasures(client: FeedbackClient, args: argparse.Namespace, out: TextIO) -> None:
    limit: int = args.limit
    # One entry past the limit tells whether the listing was cut short.
    page_size = min(limit + 1, _MAX_PAGE_SIZE) if limit else _MAX_PAGE_SIZE
    entries = client.iter_erasures(
        user_id=args.user, conversation_id=args.conversation, page_size=page_size
    )
    records = list(itertools.islice(entries, limit + 1 if limit else None))
    truncated = bool(limit) and len(records) > limit
    records = records[:limit] if limit else records
    if args.json_output:
        _print_json(
            {
                "erasures": [
                    _to_dict(record, always_print_fields_with_no_presence=True)
                    for record in records
                ]
            },
            out,
        )
        return
    out.write(_ERASURES.format(records))
    if truncated:
        print(f"(first {limit} shown; pass --limit 0 for all)", file=sys.stderr)


def _export_user(client: FeedbackClient, args: argparse.Namespace, out: TextIO) -> int:
    path: Path | None = args.output
    counts: dict[UserDataKind, int] = dict.fromkeys(get_args(UserDataKind), 0)
    records = client.export_user_data(args.user_id, timeout=args.timeout)
    try:
        if path is None:
            _write_user_records(records, out, counts)
        else:
            with _private_file(path) as file:
                _write_user_records(records, file, counts)
    except FeedbackError as error:
        written = sum(counts.values())
        if not written:
            raise
        kept = "which standard output has" if path is None else f"{path} is left as it was"
        raise _HintedFailure(
            error,
            f"the export broke after {written} record{'' if written == 1 else 's'} ({kept}); "
            "it cannot be resumed: run the same command again",
        ) from error
    except OSError as error:
        sys.stderr.write(f"error: cannot write {path or 'standard output'}: {error}\n")
        return 1
    finally:
        records.close()
    by_kind = ", ".join(f"{kind} {count}" for kind, count in counts.items())
    destination = "" if path is None else f" to {path}"
    sys.stderr.write(
        f"exported {sum(counts.values())} records of user {args.user_id!r}{destination}"
        f" ({by_kind})\n"
    )
    return 0


def _opt_out(client: FeedbackClient, args: argparse.Namespace, out: TextIO) -> None:
    user = f"user {args.user_id!r}"
    if args.erase and not args.yes:
        raise _UsageError(
            f"this would opt {user} out and erase every interaction, current and replaced "
            "feedback and event stored about them, with their share of every statistic, and "
            "cannot be undone: pass --yes to erase (or leave out --erase to keep their past)"
        )
    try:
        response = client.opt_out_user(args.user_id, erase_past_data=args.erase)
    except FeedbackError as error:
        if not args.erase or error.code not in _OPT_OUT_UNFINISHED_CODES:
            raise
        raise _HintedFailure(
            error,
            f"{user} may be opted out already, with the erasure of their past going on or "
            "stopped halfway: run the same command again to finish it",
        ) from error
    if args.json_output:
        _print_json(_to_dict(response, always_print_fields_with_no_presence=True), out)
        return
    opt_out = response.opt_out
    past = (
        f"erased (erasure {response.erasure.id})"
        if response.HasField("erasure")
        else "kept (opt-out --erase --yes erases it)"
    )
    out.write(_format_opt_out(opt_out) + f"{'past data':<{_LABEL_WIDTH}}{past}\n")
    if response.HasField("erasure"):
        out.write("\n" + _format_erasure(response.erasure))


def _opt_in(client: FeedbackClient, args: argparse.Namespace, out: TextIO) -> None:
    was_opted_out = client.opt_in_user(args.user_id)
    if args.json_output:
        _print_json({"was_opted_out": was_opted_out}, out)
    elif was_opted_out:
        out.write(f"user {args.user_id!r} opted back in: writes about them are stored again\n")
    else:
        out.write(
            f"user {args.user_id!r} was not opted out: nothing changed (the choice is recorded)\n"
        )


def _opt_out_status(client: FeedbackClient, args: argparse.Namespace, out: TextIO) -> None:
    state = client.get_opt_out(args.user_id)
    if args.json_output:
        _print_json(_to_dict(state, always_print_fields_with_no_presence=True), out)
        return
    if state.HasField("opt_out"):
        out.write(_format_opt_out(state.opt_out))
    else:
        out.write(f"{'opted out':<{_LABEL_WIDTH}}no: writes about the user are stored\n")
    out.write("\n" + _CHOICES.format(list(state.choices)))


def _format_opt_out(opt_out: privacy_pb2.OptOut) -> str:
    """A user's opt-out: since when, their hash (the server keeps no id), who asked."""
    hash_kind = _enum_label(privacy_pb2.HashKind.Name(opt_out.user_hash_kind), "HashKind")
    fields = (
        ("opted out", f"since {_when(opt_out, 'opt_out_time')}: writes are not stored"),
        ("user hash", f"{opt_out.user_hash} ({hash_kind})"),
        ("requested by", opt_out.requested_by or "-"),
    )
    return "".join(f"{label:<{_LABEL_WIDTH}}{value}\n" for label, value in fields)


def _suppressed_count(count: int) -> str:
    """The part of a load's summary about suppressed items; nothing when there were none."""
    return f", {count} suppressed (their users opted out)" if count else ""


def _write_user_records(
    records: Iterable[UserRecord], file: TextIO, counts: dict[UserDataKind, int]
) -> None:
    """Write each record as one JSON line of its kind and record, counting them by kind."""
    for kind, record in records:
        document = {"kind": kind, "record": _to_dict(record)}
        file.write(json.dumps(document, ensure_ascii=False) + "\n")
        counts[kind] += 1
    file.flush()


@contextlib.contextmanager
def _private_file(path: Path) -> Iterator[TextIO]:
    """A text file that only its owner can read (0600), which becomes `path` atomically when
    the block ends without an exception, replacing any file there; before that `path` is
    untouched, and on an exception nothing is left behind."""
    descriptor, temporary = tempfile.mkstemp(  # mkstemp creates the file 0600
        prefix=f".{path.name}.", suffix=".partial", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    # The rename is durable only once the directory entry is on disk.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _ingest_item(line: str) -> IngestItem:
    """Turn one JSON line into an item, raising ValueError or TypeError saying what is wrong."""
    try:
        document = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    name = document.pop("kind", None)
    if not isinstance(name, str) or name not in KINDS:
        raise ValueError(f'"kind" must be "interaction", "feedback" or "event", not {name!r}')
    kind = KINDS[name]
    try:
        request = json_format.ParseDict(document, kind.request_type())
    except json_format.ParseError as error:
        # The first line names the problem; the rest lists every field of the message.
        raise ValueError(str(error).splitlines()[0]) from error
    if any(descriptor.name == "sent_time" for descriptor, _ in request.ListFields()):
        raise ValueError("sent_time is set by the client when it sends the item; leave it out")
    item: IngestItem = kind.item_type(**kind.item_arguments(request))
    return item


def _rejection_document(line: int, error: FeedbackError) -> dict[str, Any]:
    document: dict[str, Any] = {"line": line, "code": error.code.name, "message": error.message}
    if isinstance(error, InvalidArgumentError):
        document["field_violations"] = [
            {"field": violation.field, "description": violation.description}
            for violation in error.field_violations
        ]
    return document


def _print_message(message: Message, args: argparse.Namespace, out: TextIO) -> None:
    """Print a stored record as JSON or as aligned "field  value" lines."""
    if args.json_output:
        _print_json(_to_dict(message), out)
        return
    for field, value in message.ListFields():
        out.write(f"{field.name:<{_LABEL_WIDTH}}{_format_value(field, value)}\n")


def _print_json(document: object, out: TextIO) -> None:
    out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _to_dict(message: Message, *, always_print_fields_with_no_presence: bool = False) -> Any:
    """Render a message as the proto3 JSON mapping, keeping the .proto field names."""
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=always_print_fields_with_no_presence,
        # Counts and ids read better as JSON numbers; they stay well below 2**53.
        unquote_int64_if_possible=True,
    )


def _print_error(
    error: FeedbackError, err: TextIO, *, api_key: str | None = None, hint: str | None = None
) -> None:
    """Report a failed call on one line, then one line per rejected field and the `hint`; never
    show the key."""
    lines = [f"error: {error.code.name}: {error.message}{_credentials_hint(error, api_key)}"]
    if isinstance(error, InvalidArgumentError):
        lines += [
            f"  {violation.field}: {violation.description}" for violation in error.field_violations
        ]
    if error.retry_delay is not None:
        lines.append(f"  retry after {error.retry_delay:g} s")
    if error.sent_count is not None:
        lines.append(f"  items sent before the failure: {error.sent_count}")
    if error.request_id is not None and error.code in _OUTCOME_UNKNOWN_CODES:
        lines.append(
            "  it may have been stored: run the same command with "
            f"--request-id {error.request_id} and it is stored at most once"
        )
    if hint is not None:
        lines.append(f"  {hint}")
    text = "".join(line + "\n" for line in lines)
    # A server (or proxy) echoing the key back must not put it in logs that collect stderr.
    err.write(text.replace(api_key, _REDACTED) if api_key else text)


def _credentials_hint(error: FeedbackError, api_key: str | None) -> str:
    """What to do about an UNAUTHENTICATED or PERMISSION_DENIED answer, for the error line."""
    if isinstance(error, UnauthenticatedError):
        if api_key is None:
            return f"; no API key was given: pass --api-key or set {API_KEY_ENVIRONMENT_VARIABLE}"
        return "; the API key was refused: check it is complete and not revoked"
    if isinstance(error, PermissionDeniedError):
        scope = error.missing_scope
        if scope is not None:
            return f'; the API key lacks the "{scope}" scope'
        return "; the API key does not allow this command"
    return ""


def _format_value(field: FieldDescriptor, value: Any) -> str:
    """Format one set field of a record for humans."""
    if field.message_type is not None:
        if field.message_type.full_name == "google.protobuf.Timestamp":
            return str(value.ToJsonString())
        return json.dumps(json_format.MessageToDict(value), ensure_ascii=False)
    if field.enum_type is not None:
        return _enum_label(field.enum_type.values_by_number[value].name, field.enum_type.name)
    if isinstance(value, float):
        return _number(value)
    return str(value)


def _enum_label(value_name: str, enum_name: str) -> str:
    """Turn THUMB_UP into "up": Buf-style enum values repeat the enum name as a prefix."""
    prefix = "".join(f"_{char}" if char.isupper() else char for char in enum_name).lstrip("_")
    return value_name.removeprefix(prefix.upper() + "_").lower()


def _number(value: float | None, *, unit: str = "", decimals: int | None = None) -> str:
    """Format an optional average compactly; "-" when the server left it unset."""
    if value is None:
        return "-"
    if decimals is not None:
        return f"{value:.{decimals}f}{unit}"
    return f"{value:.10g}{unit}"


def _format_stats(stats: feedback_service_pb2.GetStatsResponse) -> str:
    """Render statistics as small aligned tables: the totals, then buckets, groups, the change."""
    lines: list[str] = []

    def row(label: str, value: str) -> None:
        lines.append(f"{label:<{_LABEL_WIDTH}}{value}".rstrip())

    if stats.HasField("feedback"):
        feedback = stats.feedback
        row(
            "feedback",
            f"{feedback.total_count} total, {feedback.scored_count} scored, "
            f"{feedback.with_text_count} with text",
        )
        row("  avg score", _number(_present(feedback, "avg_score"), decimals=2))
        distribution = (
            feedback.score1_count,
            feedback.score2_count,
            feedback.score3_count,
            feedback.score4_count,
            feedback.score5_count,
        )
        width = max(5, *(len(str(count)) + 2 for count in distribution))
        row("  score", "".join(f"{score:>{width}}" for score in range(1, 6)))
        row("  count", "".join(f"{count:>{width}}" for count in distribution))
        thumbs_ratio = _present(feedback, "thumbs_up_ratio")
        ratio = "" if thumbs_ratio is None else f" ({thumbs_ratio:.0%} up)"
        row("  thumbs", f"up {feedback.thumbs_up_count}, down {feedback.thumbs_down_count}{ratio}")
        if feedback.label_counts:
            row("  labels", _counts(feedback.label_counts))
        row("  avg latency", _number(_present(feedback, "avg_latency_ms"), unit=" ms"))
        row("  latency p50-p99", _percentiles(feedback.latency_ms_percentiles, " ms"))
        row("  avg tokens", _number(_present(feedback, "avg_tokens")))
        row("  tokens p50-p99", _percentiles(feedback.tokens_percentiles))
    else:
        row("feedback", "n/a (feedback has no event type)")

    if stats.HasField("interactions"):
        interactions = stats.interactions
        row("interactions", f"{interactions.total_count} total")
        row("  avg latency", _number(_present(interactions, "avg_latency_ms"), unit=" ms"))
        row("  latency p50-p99", _percentiles(interactions.latency_ms_percentiles, " ms"))
        row("  avg tokens", _number(_present(interactions, "avg_total_tokens")))
        row("  tokens p50-p99", _percentiles(interactions.total_tokens_percentiles))
    else:
        row("interactions", "n/a (interactions have no event type)")

    if stats.HasField("events"):
        row("events", f"{stats.events.total_count} total")
        if stats.events.type_counts:
            row("  by type", _counts(stats.events.type_counts))
    else:
        row("events", "n/a (events have no conversation, message or model)")
    text = "\n".join(lines) + "\n"
    if stats.buckets:
        text += "\n" + _stats_table(
            "BUCKET", [(bucket.start_time.ToJsonString(), bucket) for bucket in stats.buckets]
        )
    if stats.groups:
        text += "\n" + _stats_table(
            "GROUP", [(group.key or "(none)", group) for group in stats.groups]
        )
    if stats.HasField("previous"):
        text += "\n" + _format_change(stats)
    return text


def _stats_table(title: str, entries: Sequence[tuple[str, Any]]) -> str:
    """One line per bucket or group: counts and the main averages of each kind that applies."""
    header = (title, "FEEDBACK", "AVG SCORE", "INTERACTIONS", "AVG LATENCY", "EVENTS")
    rows = [header]
    for name, entry in entries:
        has = entry.HasField
        rows.append(
            (
                name,
                str(entry.feedback.total_count) if has("feedback") else "-",
                _number(_present(entry.feedback, "avg_score"), decimals=2)
                if has("feedback")
                else "-",
                str(entry.interactions.total_count) if has("interactions") else "-",
                _number(_present(entry.interactions, "avg_latency_ms"), unit=" ms")
                if has("interactions")
                else "-",
                str(entry.events.total_count) if has("events") else "-",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in rows
    )


def _format_change(stats: feedback_service_pb2.GetStatsResponse) -> str:
    """The previous period's totals and how this period changed from them."""
    previous, change = stats.previous, stats.change
    lines = [
        f"previous period {previous.start_time.ToJsonString()} to "
        f"{previous.end_time.ToJsonString()}"
    ]

    def row(label: str, before: str, value: str) -> None:
        lines.append(f"  {label:<{_LABEL_WIDTH - 2}}{before:<14}{value}".rstrip())

    def ratio(name: str) -> str:
        value = _present(change, name)
        return "-" if value is None else f"x{value:.3g}"

    def delta(name: str, unit: str = "") -> str:
        value = _present(change, name)
        return "-" if value is None else f"{value:+.4g}{unit}"

    if previous.HasField("feedback"):
        row("feedback", str(previous.feedback.total_count), ratio("feedback_count_ratio"))
        row(
            "avg score",
            _number(_present(previous.feedback, "avg_score"), decimals=2),
            delta("avg_score_delta"),
        )
        row(
            "thumbs up ratio",
            _number(_present(previous.feedback, "thumbs_up_ratio"), decimals=2),
            delta("thumbs_up_ratio_delta"),
        )
    if previous.HasField("interactions"):
        row(
            "interactions", str(previous.interactions.total_count), ratio("interaction_count_ratio")
        )
        row(
            "avg latency",
            _number(_present(previous.interactions, "avg_latency_ms"), unit=" ms"),
            delta("avg_latency_ms_delta", " ms"),
        )
    if previous.HasField("events"):
        row("events", str(previous.events.total_count), ratio("event_count_ratio"))
    return "\n".join(lines) + "\n"


def _percentiles(percentiles: Message, unit: str = "") -> str:
    """p50 / p90 / p95 / p99, or "-" when no record carries the measurement."""
    values = [_present(percentiles, name) for name in ("p50", "p90", "p95", "p99")]
    if values[0] is None:
        return "-"
    return " / ".join(_number(value, decimals=None) for value in values) + unit


def _present(message: Message, field_name: str) -> float | None:
    """Read an `optional double` field, None when unset (the server sends no NaN averages)."""
    if not message.HasField(field_name):
        return None
    value: float = getattr(message, field_name)
    return value


def _counts(counts: Mapping[str, int]) -> str:
    """Format a name -> count map, largest first."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{name} {count}" for name, count in ordered)


@dataclass(frozen=True)
class _Listed:
    """How one kind of listed record is shown: a table column for each part of an entry."""

    columns: tuple[tuple[str, Callable[[Any], str]], ...]
    """Each column's header and how it shows an entry."""
    plural: str
    """What the entries are called, for the line that says there are none."""

    def format(self, entries: Sequence[Any]) -> str:
        """Render entries as an aligned table, one line each."""
        header = tuple(name for name, _ in self.columns)
        rows = [self.cells(entry) for entry in entries]
        return _table(header, rows) if rows else f"no {self.plural} found\n"

    def cells(self, entry: Any) -> tuple[str, ...]:
        """The cells of one entry."""
        return tuple(cell(entry) for _, cell in self.columns)

    def row(self, cells: tuple[str, ...]) -> str:
        """One line of a table printed as it grows (watch): cells padded to a fixed width,
        since the widths of later lines are unknown."""
        return "  ".join(cell.ljust(_STREAMED_WIDTH) for cell in cells).rstrip() + "\n"


def _replacement(vote: feedback_pb2.Feedback) -> str:
    if not vote.HasField("replace_time"):
        return "current"
    return f"replaced by {vote.replaced_by_id} at {_when(vote, 'replace_time')}"


def _details(event: event_pb2.Event) -> str:
    if not event.details.fields:
        return "-"
    return _shorten(json.dumps(json_format.MessageToDict(event.details), ensure_ascii=False))


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    """Align columns two spaces apart, header first."""
    lines = [header, *rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        + "\n"
        for line in lines
    )


def _when(message: Message, field_name: str) -> str:
    if not message.HasField(field_name):
        return "-"
    value: timestamp_pb2.Timestamp = getattr(message, field_name)
    return value.ToJsonString()


def _rating(entry: feedback_pb2.Feedback) -> str:
    kind = entry.WhichOneof("rating")
    if kind == "score":
        return f"score {entry.score}"
    if kind == "thumb":
        return "thumb up" if entry.thumb == feedback_pb2.THUMB_UP else "thumb down"
    if kind == "label":
        return f"label {entry.label}"
    return "-"


def _shorten(text: str) -> str:
    """Fit free text on one table line."""
    flat = " ".join(text.split())
    if len(flat) <= _TEXT_WIDTH:
        return flat
    return flat[: _TEXT_WIDTH - 3] + "..."


_ID = ("ID", lambda entry: str(entry.id))
_CONVERSATION = ("CONVERSATION", lambda entry: entry.conversation_id or "-")
_MESSAGE = ("MESSAGE", lambda entry: entry.message_id or "-")
_USER = ("USER", lambda entry: entry.user_id or "-")
_CREATED = ("CREATED", lambda entry: _when(entry, "create_time"))
_RATING = ("RATING", _rating)
_TEXT = ("TEXT", lambda entry: _shorten(entry.text))

_FEEDBACK = _Listed((_ID, _CREATED, _CONVERSATION, _MESSAGE, _USER, _RATING, _TEXT), "feedback")
_HISTORY = _Listed((_ID, _CREATED, _RATING, ("STATUS", _replacement), _TEXT), "votes")
"""One user's votes on one message, oldest first, saying which one counts."""
_INTERACTIONS = _Listed(
    (
        _ID,
        ("OCCURRED", lambda entry: _when(entry, "occur_time")),
        _CONVERSATION,
        _MESSAGE,
        _USER,
        ("MODEL", lambda entry: entry.model or "-"),
        ("LATENCY", lambda entry: _number(_present(entry, "latency_ms"), unit=" ms")),
        (
            "TOKENS",
            lambda entry: str(entry.total_tokens) if entry.HasField("total_tokens") else "-",
        ),
    ),
    "interactions",
)
_EVENTS = _Listed(
    (
        _ID,
        ("TIME", lambda entry: _when(entry, "event_time")),
        ("USER", lambda entry: entry.user_id),
        ("TYPE", lambda entry: entry.event_type),
        ("DETAILS", _details),
    ),
    "events",
)
_STREAMED_WIDTH = 14
_TABLES: dict[Kind, _Listed] = {
    "feedback": _FEEDBACK,
    "interactions": _INTERACTIONS,
    "events": _EVENTS,
}
_ERASED_KINDS = (
    ("interactions", "interactions"),
    ("feedback", "feedback"),
    ("replaced votes", "replaced_votes"),
    ("events", "events"),
)
"""Each kind of record an erasure removes, as shown, and its field of ErasedCounts."""
_SUBJECT_HASH_SHOWN = 12
"""Hex digits of the subject's hash a table shows, as git shows commits; --json has them all."""


def _seconds(message: Message, field_name: str) -> str:
    """A time to the second, or "-" when unset."""
    if not message.HasField(field_name):
        return "-"
    value: timestamp_pb2.Timestamp = getattr(message, field_name)
    return value.ToDatetime(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _subject(erasure: privacy_pb2.Erasure) -> str:
    return _enum_label(privacy_pb2.SubjectKind.Name(erasure.subject_kind), "SubjectKind")


def _format_erasure(erasure: privacy_pb2.Erasure) -> str:
    """One finished erasure: the log entry's fields, then the records removed per kind."""
    hash_kind = _enum_label(privacy_pb2.HashKind.Name(erasure.subject_hash_kind), "HashKind")
    fields = (
        ("erasure", str(erasure.id)),
        ("subject", _subject(erasure)),
        ("subject hash", f"{erasure.subject_hash} ({hash_kind})"),
        ("requested by", erasure.requested_by),
        ("started", _when(erasure, "start_time")),
        ("finished", _when(erasure, "finish_time")),
        ("transactions", str(erasure.batches)),
    )
    lines = "".join(f"{label:<{_LABEL_WIDTH}}{value}\n" for label, value in fields)
    counts = [(shown, str(getattr(erasure.erased, name))) for shown, name in _ERASED_KINDS]
    return lines + "\n" + _table(("ERASED", "RECORDS"), counts)


_ERASURES = _Listed(
    (
        _ID,
        ("SUBJECT", _subject),
        ("SUBJECT HASH", lambda entry: entry.subject_hash[:_SUBJECT_HASH_SHOWN]),
        ("STARTED", lambda entry: _seconds(entry, "start_time")),
        (
            "FINISHED",
            lambda entry: (
                _seconds(entry, "finish_time") if entry.HasField("finish_time") else "under way"
            ),
        ),
        *(
            (shown.upper(), lambda entry, name=name: str(getattr(entry.erased, name)))
            for shown, name in _ERASED_KINDS
        ),
        ("REQUESTED BY", lambda entry: entry.requested_by or "-"),
    ),
    "erasures",
)
"""The erasure log, newest first."""


def _choice(choice: privacy_pb2.OptOutChoice) -> str:
    return _enum_label(privacy_pb2.OptOutAction.Name(choice.action), "OptOutAction").replace(
        "_", "-"
    )


_CHOICES = _Listed(
    (
        ("TIME", lambda entry: _seconds(entry, "event_time")),
        ("CHOICE", _choice),
        (
            "ERASE PAST",
            lambda entry: (
                "-"
                if entry.action != privacy_pb2.OPT_OUT_ACTION_OPT_OUT
                else "yes"
                if entry.erase_requested
                else "no"
            ),
        ),
        ("REQUESTED BY", lambda entry: entry.requested_by or "-"),
    ),
    "choices",
)
"""A user's recorded opt-out choices, newest first."""
_SUPPRESSED_WRITE = "suppressed: the user opted out, so nothing was stored (not an error)"
"""What record, submit and log print for a write about an opted-out user."""
# Failures of opt-out --erase after which the user may be opted out with their erasure unfinished.
_OPT_OUT_UNFINISHED_CODES = _OUTCOME_UNKNOWN_CODES | {grpc.StatusCode.RESOURCE_EXHAUSTED}


def _json_object(value: str) -> dict[str, Any]:
    """Parse a JSON object argument (argparse turns the ValueError into a usage error)."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from error
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, such as \'{"key": "value"}\'')
    return parsed


def _iso_time(value: str) -> datetime:
    """Parse an ISO-8601 time; a time without an offset is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"not an ISO-8601 time such as 2024-05-01T12:00:00Z: {value!r}"
        ) from error
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _api_key(value: str) -> str:
    """Check --api-key without ever repeating it: argparse prints the message, not the value."""
    try:
        return checked_api_key(value, source="the key")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _request_id(value: str) -> str:
    try:
        return checked_request_id(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("request_id ")) from error


def _positive_float(value: str) -> float:
    try:
        parsed = float(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from error
    if not parsed > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
    return parsed


def _positive_int(value: str) -> int:
    parsed = _non_negative_int(value)
    if parsed == 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
    return parsed


def _non_negative_int(value: str) -> int:
    try:
        parsed = int(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from error
    if parsed < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value!r}")
    return parsed


if __name__ == "__main__":
    sys.exit(main())
