"""The key format and who a key says the caller is (server/service/api_keys.py), without a
server: secrets, checksums, prefixes, the key ring's verdicts and what each scope allows."""

from __future__ import annotations

import hashlib
import re
import string
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from server.service import InvalidArgument, PermissionDenied, Unauthenticated
from server.service.api_keys import (
    INVALID_KEY,
    MISSING_KEY,
    MISSING_SCOPE,
    PREFIX_LENGTH,
    REVOKED_KEY,
    UNKNOWN_KEY,
    WRONG_CLIENT,
    Caller,
    KeyRing,
    Scope,
    new_secret,
    parse_scopes,
    prefix_of,
    secret_hash,
    valid_prefix,
    well_formed,
)
from storage.records import ApiKeyRecord

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
KEY = re.compile(r"fbk_[0-9A-Za-z]{38}")
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SAMPLES = 2000


@pytest.fixture(scope="module")
def secrets() -> list[str]:
    """Many fresh secrets."""
    return [new_secret() for _ in range(SAMPLES)]


def record(
    secret: str,
    *scopes: Scope,
    revoked: bool = False,
    client_identity: str | None = None,
) -> ApiKeyRecord:
    """A stored key for `secret`, as storage returns it."""
    return ApiKeyRecord(
        prefix=prefix_of(secret),
        secret_hash=secret_hash(secret),
        name="",
        scopes=tuple(sorted(scope.value for scope in scopes)),
        client_identity=client_identity,
        create_time=NOW,
        created_by="cli",
        last_use_time=None,
        revoke_time=NOW if revoked else None,
        revoked_by="cli" if revoked else None,
    )


def refusal(ring: KeyRing, secret: str | None, identities: frozenset[str] = frozenset()) -> str:
    """The reason the ring refuses `secret`."""
    with pytest.raises(Unauthenticated) as refused:
        ring.authenticate(secret, lambda: identities)
    return refused.value.reason


# ---- the format ----


def test_a_secret_is_the_mark_32_random_characters_and_a_6_character_checksum(
    secrets: list[str],
) -> None:
    assert all(KEY.fullmatch(secret) for secret in secrets)
    assert all(well_formed(secret) for secret in secrets)
    assert len(set(secrets)) == SAMPLES
    assert len({prefix_of(secret) for secret in secrets}) == SAMPLES  # 47 random bits each


def test_the_random_part_uses_every_base62_character_evenly(secrets: list[str]) -> None:
    """About 190 bits: each of 32 positions is one of 62 characters, uniformly."""
    counts = Counter("".join(secret[4:36] for secret in secrets))
    expected = SAMPLES * 32 / 62  # about 1032 each, a standard deviation of about 32
    first_characters = {secret[4] for secret in secrets}

    assert set(counts) == set(BASE62)
    assert all(abs(count - expected) < 0.2 * expected for count in counts.values()), counts
    assert first_characters == set(BASE62)  # every position varies, not just the whole


def test_the_checksum_is_a_function_of_the_random_part(secrets: list[str]) -> None:
    secret = secrets[0]
    other_checksum = secrets[1][36:]
    if other_checksum == secret[36:]:
        other_checksum = secrets[2][36:]

    assert not well_formed(secret[:36] + other_checksum)
    assert well_formed(secret[:36] + secret[36:])


def test_every_one_character_typo_is_caught_before_any_lookup(secrets: list[str]) -> None:
    secret = secrets[0]
    typos = [
        secret[:position] + character + secret[position + 1 :]
        for position in range(4, len(secret))
        for character in BASE62
        if character != secret[position]
    ]
    swaps = [
        secret[:position] + secret[position + 1] + secret[position] + secret[position + 2 :]
        for position in range(4, 35)
        if secret[position] != secret[position + 1]
    ]

    assert len(typos) == 38 * 61
    assert [typo for typo in typos if well_formed(typo)] == []
    assert swaps
    assert [swap for swap in swaps if well_formed(swap)] == []


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: "FBK_" + s[4:],
        lambda s: "fbk-" + s[4:],
        lambda s: s[:-1],
        lambda s: s + "0",
        lambda s: s + "\n",
        lambda s: " " + s,
        lambda s: s[:10] + "_" + s[11:],
        lambda s: "",
    ],
    ids=["mark case", "mark dash", "short", "long", "newline", "space", "underscore", "empty"],
)
def test_a_secret_of_another_shape_is_not_well_formed(
    secrets: list[str], mangle: Callable[[str], str]
) -> None:
    assert not well_formed(mangle(secrets[0]))


def test_the_prefix_is_the_mark_and_8_characters_and_only_the_hash_is_stored(
    secrets: list[str],
) -> None:
    secret = secrets[0]

    assert PREFIX_LENGTH == 12
    assert prefix_of(secret) == secret[:12]
    assert re.fullmatch(r"fbk_[0-9A-Za-z]{8}", prefix_of(secret))
    assert secret_hash(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert secret_hash(secret) != secret_hash(secrets[1])


# ---- the key ring ----


def test_the_ring_names_why_it_refuses_each_kind_of_secret(secrets: list[str]) -> None:
    active, revoked, bound = secrets[:3]
    ring = KeyRing()
    ring.replace(
        [
            record(active, Scope.INGEST),
            record(revoked, Scope.ADMIN, revoked=True),
            record(bound, Scope.READ, client_identity="alice"),
        ],
        read_at=ring.generation,
    )
    typo = active[:-1] + ("0" if active[-1] != "0" else "1")

    assert refusal(ring, None) == MISSING_KEY
    assert refusal(ring, "") == MISSING_KEY
    assert refusal(ring, "fbk_short") == INVALID_KEY
    assert refusal(ring, typo) == INVALID_KEY
    assert refusal(ring, secrets[3]) == UNKNOWN_KEY
    assert refusal(ring, revoked) == REVOKED_KEY
    assert refusal(ring, bound) == WRONG_CLIENT
    assert refusal(ring, bound, frozenset({"bob", "alice.example"})) == WRONG_CLIENT
    assert ring.take_used() == set()  # refused calls are no use of a key


def test_the_ring_says_who_a_valid_key_is_and_notes_its_use(secrets: list[str]) -> None:
    active, bound = secrets[:2]
    ring = KeyRing()
    ring.replace(
        [
            record(active, Scope.INGEST, Scope.READ),
            record(bound, Scope.READ, client_identity="alice"),
        ],
        read_at=ring.generation,
    )

    caller = ring.authenticate(active, lambda: frozenset())
    by_alice = ring.authenticate(bound, lambda: frozenset({"bob", "alice"}))  # CN or any SAN

    assert caller == Caller(prefix_of(active), frozenset({Scope.INGEST, Scope.READ}))
    assert caller.actor == prefix_of(active)
    assert by_alice.name == prefix_of(bound)
    assert ring.take_used() == {prefix_of(active), prefix_of(bound)}
    assert ring.take_used() == set()


def test_the_ring_knows_exactly_what_it_was_last_given(secrets: list[str]) -> None:
    kept, dropped, added = secrets[:3]
    ring = KeyRing()
    ring.replace([record(kept, Scope.READ), record(dropped, Scope.READ)], read_at=ring.generation)
    ring.replace([record(kept, Scope.READ)], read_at=ring.generation)
    ring.put(record(added, Scope.INGEST))
    ring.put(record(kept, Scope.READ, revoked=True))

    assert len(ring) == 2
    assert refusal(ring, dropped) == UNKNOWN_KEY
    assert ring.authenticate(added, lambda: frozenset()).scopes == frozenset({Scope.INGEST})
    assert refusal(ring, kept) == REVOKED_KEY


# ---- scopes ----


@pytest.mark.parametrize("needed", [Scope.INGEST, Scope.READ, Scope.ADMIN, None])
def test_without_authentication_every_method_is_allowed(needed: Scope | None) -> None:
    Caller("ipv4:127.0.0.1", None).require(needed)


@pytest.mark.parametrize("needed", [Scope.INGEST, Scope.READ, Scope.ADMIN])
def test_an_admin_key_allows_every_scope(needed: Scope) -> None:
    Caller("fbk_AAAAAAAA", frozenset({Scope.ADMIN})).require(needed)


def test_a_key_without_the_scope_is_denied_naming_the_scope_and_the_key() -> None:
    ingest_only = Caller("fbk_AAAAAAAA", frozenset({Scope.INGEST}))
    ingest_only.require(Scope.INGEST)
    with pytest.raises(PermissionDenied) as denied:
        ingest_only.require(Scope.READ)

    assert denied.value.reason == MISSING_SCOPE
    assert denied.value.metadata == {"required_scope": "read", "key_prefix": "fbk_AAAAAAAA"}


def test_a_method_without_a_scope_is_closed_to_a_read_key() -> None:
    with pytest.raises(PermissionDenied) as denied:
        Caller("fbk_AAAAAAAA", frozenset({Scope.READ, Scope.INGEST})).require(None)

    assert denied.value.metadata["required_scope"] == ""


def test_a_method_without_a_scope_is_closed_to_an_admin_key_too() -> None:
    with pytest.raises(PermissionDenied):
        Caller("fbk_AAAAAAAA", frozenset({Scope.ADMIN})).require(None)


# ---- prefixes and scope names from people ----


def test_a_prefix_is_accepted_as_itself_or_as_the_whole_secret(secrets: list[str]) -> None:
    secret = secrets[0]

    assert valid_prefix(prefix_of(secret)) == prefix_of(secret)
    assert valid_prefix(f"  {prefix_of(secret)}\n") == prefix_of(secret)
    assert valid_prefix(secret) == prefix_of(secret)


@pytest.mark.parametrize(
    "text",
    ["", "fbk_1234567", "fbk_123456789", "FBK_12345678", "fbk_1234-678", "12345678", "fbk_"],
)
def test_anything_else_is_not_a_prefix(text: str) -> None:
    with pytest.raises(InvalidArgument) as bad:
        valid_prefix(text)

    assert [violation.field for violation in bad.value.violations] == ["prefix"]


def test_a_mistyped_whole_secret_is_not_a_prefix(secrets: list[str]) -> None:
    secret = secrets[0]
    typo = secret[:20] + ("a" if secret[20] != "a" else "b") + secret[21:]
    with pytest.raises(InvalidArgument):
        valid_prefix(typo)


def test_scope_names_are_read_case_insensitively_and_unknown_ones_named() -> None:
    assert parse_scopes([" Admin ", "read", "READ"]) == frozenset({Scope.ADMIN, Scope.READ})
    assert parse_scopes([]) == frozenset()
    with pytest.raises(InvalidArgument) as bad:
        parse_scopes(["ingest", "owner", "write"])

    assert [violation.field for violation in bad.value.violations] == ["scopes", "scopes"]
    assert "'owner'" in bad.value.violations[0].description
