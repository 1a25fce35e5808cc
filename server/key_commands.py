"""`feedback-server keys create|list|revoke`: manage API keys straight on the database.

This is how the first admin key comes to be (no key can call CreateApiKey before one exists), and
how keys are managed when the server is down. Actions are recorded in the audit log with the
actor "cli". Servers pick changes up within their key refresh interval.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from server.config import database_arguments, resolve_database_url
from server.service import InvalidArgument, ServiceError
from server.service.api_keys import (
    CLI_ACTOR,
    check_new_key,
    create_key,
    parse_scopes,
    valid_prefix,
)
from storage import Storage
from storage.records import ApiKeyRecord


def run_key_command(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    """Run one `keys` subcommand; prints to stdout, errors to stderr; returns the exit code."""
    args = _parser(os.environ if environ is None else environ).parse_args(argv)
    storage = Storage.connect(resolve_database_url(args.database_url, args.data_dir))
    try:
        storage.migrate()
        return int(args.run(storage, args))
    except ServiceError as error:
        detail = (
            "; ".join(f"{v.field}: {v.description}" for v in error.violations)
            if isinstance(error, InvalidArgument)
            else str(error)
        )
        print(f"error: {detail}", file=sys.stderr)
        return 2
    finally:
        storage.close()


def _create(storage: Storage, args: argparse.Namespace) -> int:
    scopes = parse_scopes(args.scope)
    check_new_key(args.name, scopes, args.client_identity)
    created = storage.write(
        lambda repository: create_key(
            repository,
            args.name,
            scopes,
            args.client_identity or None,
            CLI_ACTOR,
            datetime.now(UTC),
        )
    )
    print(created.secret)
    print(
        f"created {created.key.prefix} ({', '.join(created.key.scopes)}): the key above is shown "
        "only now; send it as `authorization: Bearer <key>`",
        file=sys.stderr,
    )
    return 0


def _list(storage: Storage, args: argparse.Namespace) -> int:
    keys = storage.read(lambda repository: repository.api_keys.all())
    print(f"{'PREFIX':<14}{'SCOPES':<20}{'CREATED':<22}{'LAST USED':<22}{'REVOKED':<22}NAME")
    for key in keys:
        print(
            f"{key.prefix:<14}{','.join(key.scopes):<20}{_time(key.create_time):<22}"
            f"{_time(key.last_use_time):<22}{_time(key.revoke_time):<22}{key.name}"
        )
    return 0


def _revoke(storage: Storage, args: argparse.Namespace) -> int:
    prefix = valid_prefix(args.prefix)
    key: ApiKeyRecord | None = storage.write(
        lambda repository: repository.api_keys.revoke(prefix, CLI_ACTOR, datetime.now(UTC))
    )
    if key is None:
        print(f"error: no API key has the prefix {prefix}", file=sys.stderr)
        return 1
    print(f"revoked {key.prefix} at {_time(key.revoke_time)}")
    return 0


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%SZ")


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feedback-server keys", description="Manage API keys on the database."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key and print its secret (once)")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        help="ingest, read or admin (repeat for several; admin allows everything)",
    )
    create.add_argument("--name", default="", help="what the key is for")
    create.add_argument(
        "--client-identity",
        default="",
        help="only accept the key from a TLS client certificate with this name",
    )
    create.set_defaults(run=_create)
    listing = commands.add_parser("list", help="list every key (never their secrets)")
    listing.set_defaults(run=_list)
    revoke = commands.add_parser("revoke", help="revoke a key by its prefix")
    revoke.add_argument("prefix", help="the key's prefix (fbk_ and 8 characters) or the key")
    revoke.set_defaults(run=_revoke)
    for command in (create, listing, revoke):
        database_arguments(command, env)
    return parser
