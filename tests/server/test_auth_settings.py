"""Which --auth a server gets from its flags and environment: keys beyond loopback unless told
otherwise, so a server reachable from elsewhere never runs open by accident."""

from __future__ import annotations

import pytest

from server.config import parse_settings


def auth_of(*argv: str, **environ: str) -> str:
    """The auth setting `feedback-server ARGV` gets with exactly `environ` set."""
    _, settings = parse_settings(list(argv), {f"FEEDBACK_{k}": v for k, v in environ.items()})
    return settings.auth


@pytest.mark.parametrize(
    "address", ["0.0.0.0:0", "[::]:50051", "192.168.1.10:50051", "feedback.example:50051"]
)
def test_an_address_beyond_loopback_requires_keys_by_default(address: str) -> None:
    assert auth_of("--address", address) == "keys"


@pytest.mark.parametrize(
    "address", ["127.0.0.1:0", "127.8.9.10:50051", "localhost:50051", "[::1]:1"]
)
def test_a_loopback_address_needs_no_keys_by_default(address: str) -> None:
    assert auth_of("--address", address) == "none"


def test_the_default_address_is_loopback_and_open() -> None:
    assert auth_of() == "none"


def test_an_explicit_choice_wins_over_the_address() -> None:
    assert auth_of("--address", "0.0.0.0:0", "--auth", "none") == "none"
    assert auth_of("--address", "0.0.0.0:0", AUTH="none") == "none"
    assert auth_of("--address", "127.0.0.1:0", "--auth", "keys") == "keys"
    assert auth_of("--address", "127.0.0.1:0", AUTH="keys") == "keys"
    assert auth_of("--address", "127.0.0.1:0", "--auth", "keys", AUTH="none") == "keys"
    assert auth_of(ADDRESS="0.0.0.0:7000") == "keys"
    assert auth_of(ADDRESS="0.0.0.0:7000", AUTH="") == "keys"  # empty counts as unset


def test_an_unknown_auth_flag_is_refused() -> None:
    with pytest.raises(SystemExit):
        auth_of("--address", "0.0.0.0:0", "--auth", "Keys")


@pytest.mark.parametrize("value", ["Keys", "KEYS", "key", "true"])
def test_a_mistyped_feedback_auth_never_turns_authentication_off(value: str) -> None:
    try:
        auth = auth_of("--address", "0.0.0.0:0", AUTH=value)
    except SystemExit:
        return  # refused at start: the operator sees the typo
    assert auth == "keys", f"FEEDBACK_AUTH={value} gave auth={auth!r}"
