"""API keys: their format, who a key says the caller is, what it allows, and their management.

A key is `fbk_` + 32 random base62 characters (190 bits) + a 6-character base62 CRC32 of those,
like GitHub's tokens: the prefix makes a leaked key recognisable to secret scanners, the
checksum tells a typo from an unknown key and lets anyone check a key offline, and `_` is no
base62 character, so a double click selects the whole key. Only the SHA-256 of a key is
stored; at this entropy a salt or a slow hash adds nothing. The first 12 characters (`fbk_` +
8) are the key's visible prefix: shown in lists and logs, and the name it is revoked by.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import zlib
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import TypeVar

from server.service.background import BackgroundTask
from server.service.errors import (
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from server.service.ports import KeyStorage, KeyUnit
from server.service.validation import Violations
from storage.errors import StorageUnavailable
from storage.records import ApiKeyEventRecord, ApiKeyRecord, NewApiKey

log = logging.getLogger(__name__)

T = TypeVar("T")

KEY_MARK = "fbk_"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RANDOM_LENGTH = 32
_CHECKSUM_LENGTH = 6
PREFIX_LENGTH = len(KEY_MARK) + 8
_KEY = re.compile(rf"{KEY_MARK}[0-9A-Za-z]{{{_RANDOM_LENGTH + _CHECKSUM_LENGTH}}}")
_PREFIX = re.compile(rf"{KEY_MARK}[0-9A-Za-z]{{8}}")
_CLIENT_IDENTITY = re.compile(r"[!-~](?:[ -~]{0,251}[!-~])?")
"""A certificate name: a common name may hold spaces ("Jane Doe"), a DNS name never does."""
MAX_NAME_LENGTH = 200
MAX_EVENTS_PAGE = 1000
DEFAULT_EVENTS_PAGE = 100

REFRESH_SECONDS = 2.0
"""How often each server reloads the keys: a key revoked on another replica stops working
here within this long (at once on the replica that revoked it)."""
USE_FLUSH_SECONDS = 60.0
"""How often the keys used since the last flush get their last_use_time written."""

MISSING_KEY = "API_KEY_MISSING"
INVALID_KEY = "API_KEY_INVALID"
UNKNOWN_KEY = "API_KEY_UNKNOWN"
REVOKED_KEY = "API_KEY_REVOKED"
WRONG_CLIENT = "API_KEY_WRONG_CLIENT"
MISSING_SCOPE = "MISSING_SCOPE"
"""ErrorInfo reasons of UNAUTHENTICATED and PERMISSION_DENIED."""

CLI_ACTOR = "cli"
"""The actor recorded for keys managed with `feedback-server keys` on the database."""


class Scope(Enum):
    """What a key allows; ADMIN allows everything."""

    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: a key (by its prefix) or, without authentication, a peer address."""

    name: str
    """Whose limits the call counts against: the key prefix, or the peer's address."""
    scopes: frozenset[Scope] | None
    """What the key allows; None when the server requires no key (everything is allowed)."""

    def require(self, scope: Scope | None) -> None:
        """Raise PermissionDenied unless the caller may call a method that needs `scope`."""
        if self.scopes is None or (scope is not None and {Scope.ADMIN, scope} & self.scopes):
            return
        needed = "none (the method is closed to every key)" if scope is None else scope.value
        raise PermissionDenied(
            MISSING_SCOPE,
            f"API key {self.name} lacks the scope this method needs: {needed}",
            {"required_scope": "" if scope is None else scope.value, "key_prefix": self.name},
        )

    @property
    def actor(self) -> str:
        """How management actions by this caller are recorded."""
        return self.name


def new_secret() -> str:
    """A fresh random key with its checksum."""
    random_part = "".join(secrets.choice(_BASE62) for _ in range(_RANDOM_LENGTH))
    return KEY_MARK + random_part + _checksum(random_part)


def well_formed(secret: str) -> bool:
    """Whether `secret` has the shape and checksum of a key (no lookup)."""
    if _KEY.fullmatch(secret) is None:
        return False
    body = secret[len(KEY_MARK) :]
    return secrets.compare_digest(_checksum(body[:_RANDOM_LENGTH]), body[_RANDOM_LENGTH:])


def prefix_of(secret: str) -> str:
    """The visible prefix of a key."""
    return secret[:PREFIX_LENGTH]


def secret_hash(secret: str) -> str:
    """What is stored of a key: its SHA-256, in hex."""
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def _caller(key: ApiKeyRecord) -> Caller:
    return Caller(key.prefix, frozenset(Scope(scope) for scope in key.scopes))


def _checksum(random_part: str) -> str:
    value = zlib.crc32(random_part.encode("ascii"))
    digits = []
    for _ in range(_CHECKSUM_LENGTH):
        value, digit = divmod(value, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits))


class KeyRing:
    """The keys this server knows, by hash: authenticates each call without touching the
    database. Reloaded from storage every REFRESH_SECONDS; revocations made here apply at once."""

    def __init__(self) -> None:
        self._by_hash: dict[str, tuple[ApiKeyRecord, Caller]] = {}
        self._used: set[str] = set()
        self.generation = 0
        """Counts the changes made here; a reload notes it before reading the database."""
        self._changes: list[tuple[int, ApiKeyRecord]] = []

    def replace(self, keys: Iterable[ApiKeyRecord], *, read_at: int) -> None:
        """Know exactly the keys a reload read, which began at generation `read_at`, plus the
        changes made here since: the reload's snapshot may be older than them. A revocation is
        never undone by an older record."""
        by_hash = {key.secret_hash: (key, _caller(key)) for key in keys}
        self._changes = [(number, key) for number, key in self._changes if number > read_at]
        for _, key in self._changes:
            loaded = by_hash.get(key.secret_hash)
            if loaded is None or loaded[0].revoke_time is None:
                by_hash[key.secret_hash] = (key, _caller(key))
        self._by_hash = by_hash

    def put(self, key: ApiKeyRecord) -> None:
        """Know this key as it now is (created or revoked here)."""
        self.generation += 1
        self._changes.append((self.generation, key))
        self._by_hash = {**self._by_hash, key.secret_hash: (key, _caller(key))}

    def authenticate(
        self, secret: str | None, client_identities: Callable[[], Collection[str]]
    ) -> Caller:
        """The caller a key stands for; raises Unauthenticated for anything but a valid key.

        A known key is found by its hash alone; its shape and checksum are checked only to say
        why an unknown one failed. `client_identities` is asked only for a key bound to one.
        """
        if not secret:
            raise Unauthenticated(
                MISSING_KEY, "this server requires an API key: send `authorization: Bearer <key>`"
            )
        known = self._by_hash.get(secret_hash(secret))
        if known is None:
            if not well_formed(secret):
                raise Unauthenticated(
                    INVALID_KEY,
                    "the API key is malformed (a key is fbk_ and 38 letters and digits, "
                    "checksummed)",
                )
            raise Unauthenticated(UNKNOWN_KEY, f"API key {prefix_of(secret)} is not known here")
        key, caller = known
        if key.revoke_time is not None:
            raise Unauthenticated(REVOKED_KEY, f"API key {key.prefix} was revoked")
        if key.client_identity is not None and key.client_identity not in client_identities():
            raise Unauthenticated(
                WRONG_CLIENT,
                f"API key {key.prefix} is bound to another TLS client certificate",
            )
        self._used.add(key.prefix)
        return caller

    def take_used(self) -> set[str]:
        """The prefixes of the keys used since the last call."""
        used, self._used = self._used, set()
        return used

    def __len__(self) -> int:
        return len(self._by_hash)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key as stored, and its secret (which nothing else ever sees again)."""

    key: ApiKeyRecord
    secret: str


class ApiKeyService:
    """Key management use cases, and the upkeep of this server's KeyRing."""

    def __init__(
        self,
        storage: KeyStorage,
        executor: Executor,
        key_ring: KeyRing,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._storage = storage
        self._executor = executor
        self.key_ring = key_ring
        self._clock = clock
        self._upkeep = BackgroundTask(self._keep_up, "api-key-upkeep")

    async def create(
        self, name: str, scopes: Collection[Scope], client_identity: str, actor: str
    ) -> CreatedKey:
        """Create a key; raises InvalidArgument for a bad name, scope set or identity."""
        check_new_key(name, scopes, client_identity)
        created = await self._write(
            lambda repository: create_key(
                repository, name, scopes, client_identity or None, actor, self._clock()
            )
        )
        self.key_ring.put(created.key)
        return created

    async def all_keys(self) -> list[ApiKeyRecord]:
        """Every key, newest first."""
        return await self._run(self._storage.read, lambda repository: repository.api_keys.all())

    async def revoke(self, prefix: str, actor: str) -> ApiKeyRecord:
        """Revoke a key by its prefix (or whole secret); NotFound if there is no such key."""
        prefix = valid_prefix(prefix)
        key = await self._write(
            lambda repository: repository.api_keys.revoke(prefix, actor, self._clock())
        )
        if key is None:
            raise NotFound("api_key", prefix, f"no API key has the prefix {prefix}")
        self.key_ring.put(key)
        return key

    async def events(self, page_size: int) -> list[ApiKeyEventRecord]:
        """The newest audit entries."""
        if page_size < 0:
            check = Violations()
            check.add("page_size", "must not be negative")
            check.raise_if_any()
        limit = min(page_size or DEFAULT_EVENTS_PAGE, MAX_EVENTS_PAGE)
        return await self._run(
            self._storage.read, lambda repository: repository.api_keys.events(limit)
        )

    # ---- upkeep ----

    async def load(self) -> None:
        """Load every key into the key ring (at start, before the first call)."""
        read_at = self.key_ring.generation
        keys = await self._run(self._storage.read, lambda repository: repository.api_keys.all())
        self.key_ring.replace(keys, read_at=read_at)

    def start(self) -> None:
        """Keep the key ring fresh and record key use, in the background."""
        self._upkeep.start()

    async def stop(self) -> None:
        """Stop the upkeep, recording the last uses."""
        await self._upkeep.stop()
        with contextlib.suppress(Unavailable):
            await self._record_use()

    async def _keep_up(self) -> None:
        since_flush = 0.0
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            since_flush += REFRESH_SECONDS
            try:
                await self.load()
                if since_flush >= USE_FLUSH_SECONDS:
                    since_flush = 0.0
                    await self._record_use()
            except Unavailable:
                # The keys known stay in force until the database answers again.
                log.warning("could not refresh API keys: the database is unavailable")

    async def _record_use(self) -> None:
        used = self.key_ring.take_used()
        if used:
            now = self._clock()
            await self._write(lambda repository: repository.api_keys.record_use(used, now))

    async def _write(self, work: Callable[[KeyUnit], T]) -> T:
        return await self._run(self._storage.write, work)

    async def _run(
        self, run: Callable[[Callable[[KeyUnit], T]], T], work: Callable[[KeyUnit], T]
    ) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, run, work)
        except StorageUnavailable as error:
            raise Unavailable("the database is unavailable; retry later") from error


def check_new_key(name: str, scopes: Collection[Scope], client_identity: str) -> None:
    """Raise InvalidArgument naming every rule a new key's fields break."""
    check = Violations()
    if len(name) > MAX_NAME_LENGTH:
        check.add("name", f"must be at most {MAX_NAME_LENGTH} characters, got {len(name)}")
    if "\x00" in name:
        check.add("name", "must not contain the NUL character")
    if not scopes:
        check.add("scopes", "must name at least one scope")
    if client_identity and _CLIENT_IDENTITY.fullmatch(client_identity) is None:
        check.add(
            "client_identity",
            "must be 1-253 printable ASCII characters, not starting or ending with a space",
        )
    check.raise_if_any()


def create_key(
    repository: KeyUnit,
    name: str,
    scopes: Collection[Scope],
    client_identity: str | None,
    actor: str,
    now: datetime,
) -> CreatedKey:
    """Make a secret and store its key (in the caller's transaction); also for the CLI."""
    while True:
        secret = new_secret()
        if repository.api_keys.by_prefix(prefix_of(secret)) is None:
            break  # 47 random bits: a taken prefix is all but impossible, but never reused
    key = repository.api_keys.create(
        NewApiKey(
            prefix=prefix_of(secret),
            secret_hash=secret_hash(secret),
            name=name,
            scopes=tuple(sorted(scope.value for scope in set(scopes))),
            client_identity=client_identity,
            create_time=now,
            created_by=actor,
        )
    )
    return CreatedKey(key, secret)


def valid_prefix(text: str) -> str:
    """A key's prefix from its prefix or its whole secret; raises InvalidArgument otherwise."""
    text = text.strip()
    if _PREFIX.fullmatch(text) is not None:
        return text
    if well_formed(text):
        return prefix_of(text)
    check = Violations()
    check.add("prefix", f"must be a key prefix such as {KEY_MARK}3kTmZ9aQ (or the whole key)")
    check.raise_if_any()
    raise AssertionError("unreachable")


def parse_scopes(names: Iterable[str]) -> frozenset[Scope]:
    """Scopes from their names ("ingest", "read", "admin"); raises InvalidArgument."""
    scopes: set[Scope] = set()
    check = Violations()
    for name in names:
        try:
            scopes.add(Scope(name.strip().lower()))
        except ValueError:
            check.add("scopes", f"unknown scope {name!r}: use ingest, read or admin")
    check.raise_if_any()
    return frozenset(scopes)
