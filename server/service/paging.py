"""Opaque page tokens: a keyset cursor bound to the filters and order it was issued for."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_TOKEN_CHARS = 256
"""Far above any token we issue (about 50 characters); longer ones are not worth decoding."""


class InvalidPageToken(ValueError):
    """The token is malformed or belongs to a request with other filters or another order."""


def filters_fingerprint(*filters: object) -> str:
    """Short digest of the filters, so a token cannot be replayed against other filters.

    The repr of frozen dataclasses of str, int, bool and UTC datetimes is the same in every
    process, so any replica accepts the tokens of any other.
    """
    return hashlib.sha256(repr(filters).encode()).hexdigest()[:16]


def encode_page_token(cursor: int, fingerprint: str) -> str:
    """Token for the rows after the row `cursor` (exclusive), in the order it was issued for."""
    raw = json.dumps({"c": cursor, "f": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MAX_ROW_ID = 2**63 - 1
"""Ids are 64-bit: a larger cursor (tokens are not secret) would overflow the query."""


def decode_page_token(token: str, fingerprint: str) -> int:
    """The keyset cursor of `token`; raises InvalidPageToken if it is not ours for these filters."""
    malformed = InvalidPageToken("is not a page token issued by this service")
    if len(token) > MAX_TOKEN_CHARS:
        raise malformed
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        cursor, token_fingerprint = body["c"], body["f"]
    except (binascii.Error, ValueError, TypeError, KeyError) as error:
        raise malformed from error
    if not isinstance(cursor, int) or isinstance(cursor, bool) or not 1 <= cursor <= MAX_ROW_ID:
        raise malformed
    if token_fingerprint != fingerprint:
        raise InvalidPageToken("was issued for different filters or another order")
    return cursor
