"""Opaque page tokens: a keyset cursor bound to the filters it was issued for."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


class InvalidPageToken(ValueError):
    """The token is malformed or belongs to a request with other filters."""


def filters_fingerprint(*filters: object) -> str:
    """Short digest of the filters, so a token cannot be replayed against other filters."""
    return hashlib.sha256(repr(filters).encode()).hexdigest()[:16]


def encode_page_token(before_id: int, fingerprint: str) -> str:
    """Token for the page that starts after the row `before_id` (exclusive)."""
    raw = json.dumps({"b": before_id, "f": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, fingerprint: str) -> int:
    """The keyset cursor of `token`; raises InvalidPageToken if it is not ours for these filters."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        before_id, token_fingerprint = body["b"], body["f"]
    except (binascii.Error, ValueError, TypeError, KeyError) as error:
        raise InvalidPageToken("is not a page token issued by this service") from error
    if not isinstance(before_id, int) or isinstance(before_id, bool) or before_id < 1:
        raise InvalidPageToken("is not a page token issued by this service")
    if token_fingerprint != fingerprint:
        raise InvalidPageToken("was issued for different filters")
    return before_id
