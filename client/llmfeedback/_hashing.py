"""Content hashing that matches what the service stores, so callers can send hashes, not texts."""

from __future__ import annotations

import hashlib

__all__ = ["compute_hash"]


def compute_hash(text: str) -> str:
    """Return the SHA-256 of the UTF-8 text as 64 lowercase hex digits, as FilAgent computes it.

    Send the result as `input_hash`/`output_hash` to keep prompts and answers on the client side.
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
