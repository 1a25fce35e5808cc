"""What the service does with the personal data the detector finds, per field class, and how
it hashes the texts it is given.

Each field class has a mode: a typed placeholder (`<EMAIL>`), a keyed hash of the value (equal
values still group: `<EMAIL:5f1c0e2a9b3d>`) or keep. A record keeps the counts of what was
replaced by entity type, never the values. Redaction runs on the event loop before the write is
queued, so nothing unredacted reaches the writer, the database or its WAL.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import Counter
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from server.service.pii.detector import Detector, ParseBudget
from server.service.pii.entities import Entity

MIN_KEY_BYTES = 32
HASH_DIGITS = 12
"""Hex digits of a keyed hash in a placeholder: 48 bits, so equal values group and distinct
values of one field practically never collide."""


class Mode(StrEnum):
    """What happens to a value found in a field class."""

    PLACEHOLDER = "placeholder"
    HASH = "hash"
    KEEP = "keep"


class FieldClass(StrEnum):
    """Free text that is scanned, by where it is."""

    TEXT = "text"
    """Feedback comments."""
    METADATA = "metadata"
    """String values of interaction and feedback metadata, at any depth."""
    DETAILS = "details"
    """String values of event details, at any depth."""
    LABEL = "label"
    """Feedback labels, when any well-formed label is allowed (no allow-list)."""


DEFAULT_MODES: Mapping[FieldClass, Mode] = {
    FieldClass.TEXT: Mode.PLACEHOLDER,
    FieldClass.METADATA: Mode.PLACEHOLDER,
    FieldClass.DETAILS: Mode.PLACEHOLDER,
    FieldClass.LABEL: Mode.PLACEHOLDER,
}
DEFAULT_ENTITIES = frozenset(Entity) - {Entity.PERSON}
"""Names are off unless asked for: found from a gazetteer, they are less precise (README)."""

SHA256 = "sha256"
HMAC_SHA256 = "hmac-sha256"

_NOT_DIGITS = re.compile(r"\D")
_NOT_ALPHANUMERIC = re.compile(r"[^0-9A-Za-z]")


def _normal(entity: Entity, value: str) -> str:
    """The value as compared for grouping: "+1 (415) 555-2671" and "14155552671" are one."""
    if entity in (Entity.PHONE_NUMBER, Entity.CREDIT_CARD, Entity.US_SSN, Entity.CA_SIN):
        return _NOT_DIGITS.sub("", value)
    if entity in (Entity.IBAN, Entity.CA_POSTAL_CODE):
        return _NOT_ALPHANUMERIC.sub("", value).upper()
    if entity in (Entity.EMAIL, Entity.IP_ADDRESS):
        return value.lower()
    return value


class TextHasher:
    """Hashes the prompt and answer texts a client sends: plain SHA-256 (FilAgent's format,
    reversible by a dictionary of common prompts) or HMAC-SHA-256 under the server's key."""

    def __init__(self, key: bytes | None = None, purpose: bytes = b"text") -> None:
        """With `key`, texts get HMAC-SHA-256 under a key derived for `purpose`, so hashes made
        for one purpose (texts, erased subjects) never equal those of another, nor placeholder
        hashes."""
        if key is not None and len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the hash key must hold at least {MIN_KEY_BYTES} bytes")
        self._key = None if key is None else _derived(key, purpose)
        self.kind = SHA256 if key is None else HMAC_SHA256

    def __call__(self, text: str) -> str:
        """The 64 lowercase hex digits of the text's hash."""
        if self._key is None:
            return hashlib.sha256(text.encode()).hexdigest()
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()


def _derived(key: bytes, purpose: bytes) -> bytes:
    """One key per purpose, so a placeholder hash never equals a text hash of the same value."""
    return hmac.new(key, b"llm-feedback/" + purpose, hashlib.sha256).digest()


class Redactor:
    """Applies each field class's mode to the values of a record (thread-safe)."""

    def __init__(
        self,
        detector: Detector,
        modes: Mapping[FieldClass, Mode] = DEFAULT_MODES,
        *,
        key: bytes | None = None,
    ) -> None:
        """`key` is required when a class is in HASH mode (every replica must share it)."""
        self._detector = detector
        self._modes = {field_class: modes.get(field_class, Mode.KEEP) for field_class in FieldClass}
        if Mode.HASH in self._modes.values() and (key is None or len(key) < MIN_KEY_BYTES):
            raise ValueError(f"hash mode needs a key of at least {MIN_KEY_BYTES} bytes")
        self._key = None if key is None else _derived(key, b"redaction")

    def text(
        self,
        field_class: FieldClass,
        text: str,
        counts: Counter[str],
        budget: ParseBudget | None = None,
    ) -> str:
        """`text` with what was found replaced; adds what was replaced to `counts`."""
        mode = self._modes[field_class]
        if mode is Mode.KEEP or not text:
            return text
        found = self._detector.find(text, budget)
        if not found:
            return text
        parts: list[str] = []
        position = 0
        for start, end, entity in found:
            parts.append(text[position:start])
            parts.append(self._replacement(mode, entity, text[start:end]))
            counts[entity.value] += 1
            position = end
        parts.append(text[position:])
        return "".join(parts)

    def label(self, label: str, counts: Counter[str]) -> str:
        """A free label holding personal data becomes the entity's name in lower case (and its
        hash), so it still has a label's shape: "phone_number" or "phone_number-5f1c0e2a9b3d"."""
        mode = self._modes[FieldClass.LABEL]
        if mode is Mode.KEEP:
            return label
        found = self._detector.find(label)
        if not found:
            return label
        for _, _, entity in found:
            counts[entity.value] += 1
        entity = found[0].entity
        name = entity.value.lower()
        if mode is Mode.HASH:
            return f"{name}-{self._hash(entity, label)}"
        return name

    def json(
        self, field_class: FieldClass, value: dict[str, Any], counts: Counter[str]
    ) -> dict[str, Any]:
        """A JSON object with its string values redacted at every depth (keys are kept: they
        are the client's schema). Large whole numbers are read as text too: a card number or
        SIN sent as a JSON number is personal data all the same."""
        if self._modes[field_class] is Mode.KEEP or not value:
            return value
        budget = ParseBudget()  # one for the whole object (see Detector._phones)
        redacted: dict[str, Any] = self._json_value(field_class, value, counts, budget)
        return redacted

    def _json_value(
        self, field_class: FieldClass, value: Any, counts: Counter[str], budget: ParseBudget
    ) -> Any:
        if isinstance(value, str):
            return self.text(field_class, value, counts, budget)
        if isinstance(value, dict):
            return {
                key: self._json_value(field_class, item, counts, budget)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self._json_value(field_class, item, counts, budget) for item in value]
        if isinstance(value, float) and value.is_integer() and abs(value) >= 1e6:
            digits = str(int(value))
            replaced = self.text(field_class, digits, counts, budget)
            return value if replaced == digits else replaced
        return value

    def _replacement(self, mode: Mode, entity: Entity, value: str) -> str:
        if mode is Mode.HASH:
            return f"<{entity.value}:{self._hash(entity, value)}>"
        return f"<{entity.value}>"

    def _hash(self, entity: Entity, value: str) -> str:
        assert self._key is not None
        message = f"{entity.value}\0{_normal(entity, value)}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:HASH_DIGITS]
