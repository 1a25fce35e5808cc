"""Webhook signatures verify with the standardwebhooks package, an independent implementation
of the spec, and fail it when anything signed changes."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from server.service.webhook_signing import new_secret, secret_key, signed_headers

BODY = b'{"type":"feedback.created","data":{"score":1}}'


def test_a_signed_delivery_verifies_with_the_reference_package() -> None:
    secret = new_secret()
    now = int(time.time())
    headers = signed_headers(secret, "msg_1", now, BODY)

    assert Webhook(secret).verify(BODY, headers) == {
        "type": "feedback.created",
        "data": {"score": 1},
    }
    assert (
        Webhook(secret).sign("msg_1", datetime.fromtimestamp(now, UTC), BODY.decode())
        == headers["webhook-signature"]
    )


@pytest.mark.parametrize("changed", ["body", "id", "timestamp", "secret"])
def test_anything_changed_fails_verification(changed: str) -> None:
    secret = new_secret()
    now = int(time.time())
    headers = signed_headers(secret, "msg_1", now, BODY)
    body = BODY
    if changed == "body":
        body = BODY.replace(b"1", b"5")
    elif changed == "id":
        headers["webhook-id"] = "msg_2"
    elif changed == "timestamp":
        headers["webhook-timestamp"] = str(now - 1)
    else:
        secret = new_secret()
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_secrets_are_whsec_and_24_random_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_")
    assert first != second
    assert len(secret_key(first)) == 24


@pytest.mark.parametrize("bad", ["plain", "whsec_not*base64", "whsec_" + "QUJD"])
def test_a_malformed_secret_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="webhook secret"):
        secret_key(bad)
