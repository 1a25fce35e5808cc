"""Idempotency keys (AIP-155 `request_id`): made once per write, so every re-send repeats it."""

from __future__ import annotations

import os
import re
import time
import uuid

__all__ = ["checked_request_id", "new_request_id"]

_UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
"""A UUID in the 36-character hyphenated form, any case: the only form the service takes."""


def new_request_id() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits.

    Ids that grow with time land next to each other in the server's unique index, so storing and
    looking them up touches a few hot pages instead of one random page each: LogEvent at c=64
    stored 0.94x the calls per second of writes without ids with these, 0.88x with UUIDv4.
    """
    random_bits = int.from_bytes(os.urandom(10), "big")
    value = (
        (time.time_ns() // 1_000_000) << 80
        | 0x7 << 76  # version
        | (random_bits >> 62 & 0xFFF) << 64
        | 0b10 << 62  # variant
        | random_bits & (1 << 62) - 1
    )
    return str(uuid.UUID(int=value))


def checked_request_id(request_id: str | None) -> str:
    """The caller's request id if it is a hyphenated UUID, else a new random one when None.

    A malformed id is refused here rather than by the server, because the client made the promise
    that every write carries a usable one.
    """
    if request_id is None:
        return new_request_id()
    if not isinstance(request_id, str):
        raise TypeError(f"request_id must be a str, not {type(request_id).__name__}")
    if not _UUID_PATTERN.fullmatch(request_id):
        raise ValueError(
            f"request_id must be a UUID in its 36-character hyphenated form, not {request_id!r}"
        )
    return request_id
