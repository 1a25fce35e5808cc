"""Data subjects: the users and conversations whose data can be erased, as the erasure log and the
opt-outs name them (a hash of the id, never the id), and the refusal of writes about one being
erased."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from server.service.errors import FailedPrecondition
from server.service.pii.redaction import TextHasher
from storage.records import Subject

USER = "user"
CONVERSATION = "conversation"
COLUMNS = {USER: "user_id", CONVERSATION: "conversation_id"}
"""The record field (and column) that names each kind of subject."""

ERASURE_IN_PROGRESS = "ERASURE_IN_PROGRESS"
"""ErrorInfo reason of a write refused because its user or conversation is being erased."""


class Subjects:
    """Names subjects as the erasure log keeps them, and tells which items an erasure holds."""

    def __init__(self, hasher: TextHasher | None = None) -> None:
        """`hasher` makes the subject hashes: keyed when the server has a hash key."""
        self._hasher = hasher or TextHasher(purpose=b"subject")

    def of(self, kind: str, subject_id: str) -> Subject:
        """The log's name for the subject `subject_id` of `kind`."""
        return Subject(kind=kind, hash=self._hasher(subject_id), hash_kind=self._hasher.kind)

    def hashes(self, subject_ids: Collection[str]) -> dict[str, str]:
        """Each id's hash, as the log and the opt-outs keep it."""
        return {subject_id: self._hasher(subject_id) for subject_id in subject_ids}

    def refusal(self, running: Collection[tuple[str, str]], item: Any) -> FailedPrecondition | None:
        """Why `item` (a new record) may not be stored while the erasures `running` ((kind,
        hash) pairs) are under way; None when none of them is about it."""
        for kind, column in COLUMNS.items():
            value = getattr(item, column, None)
            if value and (kind, self._hasher(value)) in running:
                return FailedPrecondition(
                    ERASURE_IN_PROGRESS,
                    f"the {kind} this write is about is being erased: writes about it are"
                    " refused until the erasure finishes",
                    {"subject_kind": kind},
                )
        return None
