"""The privacy step of every write: free text redacted and counted before the write is queued."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TypeVar

from server.service.pii.redaction import FieldClass, Redactor, TextHasher
from storage.records import Label, NewEvent, NewFeedback, NewInteraction

NewItem = TypeVar("NewItem", NewInteraction, NewFeedback, NewEvent)


@dataclass(frozen=True, slots=True)
class Privacy:
    """How the service hashes texts and redacts free text; no redactor keeps every value."""

    redactor: Redactor | None = None
    text_hasher: TextHasher = field(default_factory=TextHasher)
    subject_hasher: TextHasher = field(default_factory=lambda: TextHasher(purpose=b"subject"))
    """How the erasure log hashes the ids it erased: HMAC-SHA-256 under the server's hash key
    when there is one, else SHA-256."""
    free_labels: bool = False
    """Whether labels are free (no allow-list): only then can a label hold personal data."""

    def redacted(self, item: NewItem) -> NewItem:
        """`item` with its free text redacted and what was replaced counted on it."""
        redactor = self.redactor
        if redactor is None:
            return item
        counts: Counter[str] = Counter()
        if isinstance(item, NewEvent):
            details = redactor.json(FieldClass.DETAILS, item.details, counts)
            return replace(item, details=details, redactions=dict(counts)) if counts else item
        metadata = redactor.json(FieldClass.METADATA, item.metadata, counts)
        if isinstance(item, NewInteraction):
            return replace(item, metadata=metadata, redactions=dict(counts)) if counts else item
        text = None if item.text is None else redactor.text(FieldClass.TEXT, item.text, counts)
        rating = item.rating
        if self.free_labels and isinstance(rating, Label):
            rating = Label(redactor.label(rating.name, counts))
        if not counts:
            return item
        return replace(item, metadata=metadata, text=text, rating=rating, redactions=dict(counts))
