"""compute_hash matches the SHA-256 hex digests FilAgent and the service store."""

from __future__ import annotations

import hashlib

from llmfeedback import compute_hash


def test_known_digests() -> None:
    assert compute_hash("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert compute_hash("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_text_is_encoded_as_utf8() -> None:
    text = "Où est la café ? 🤖"

    digest = compute_hash(text)

    assert digest == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert len(digest) == 64
    assert digest == digest.lower()
