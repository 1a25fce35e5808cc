"""Standard Webhooks signing (https://www.standardwebhooks.com): secrets and the three headers a
receiver verifies a delivery by.

A secret is `whsec_` and the base64 of 24 random bytes. A delivery carries `webhook-id` (the
notification's id, the same on every retry, so a receiver can drop repeats), `webhook-timestamp`
(Unix seconds of this attempt) and `webhook-signature`: `v1,` and the base64 of the HMAC-SHA256,
keyed with the secret's bytes, of `{id}.{timestamp}.{body}`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
"""192 bits: the spec asks for 24 to 64 random bytes."""


def new_secret() -> str:
    """A fresh signing secret."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret; raises ValueError for one that is not `whsec_` and base64."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except ValueError as error:
        raise ValueError("a webhook secret is whsec_ and base64") from error
    if not 24 <= len(key) <= 64:
        raise ValueError("a webhook secret holds 24 to 64 bytes")
    return key


def signed_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one delivery attempt of `body`."""
    signed = b"%s.%d.%s" % (message_id.encode(), timestamp, body)
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }
