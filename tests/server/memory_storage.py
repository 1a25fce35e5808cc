"""The service's storage ports (server.service.ports) in memory, for fast unit tests.

It keeps the rules the database enforces (unique message ids, event ids, request ids per kind
and one current vote per voter) and raises Conflict where an insert breaks one, as storage does.
A unit of work that raises leaves nothing behind, like a rolled-back transaction.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from server.service.ports import BatchRepository, Vote
from storage.errors import Conflict
from storage.records import (
    EventRecord,
    FeedbackRecord,
    InteractionRecord,
    NewEvent,
    NewFeedback,
    NewInteraction,
)

T = TypeVar("T")
R = TypeVar("R", InteractionRecord, FeedbackRecord, EventRecord)


@dataclass
class MemoryRows:
    """BatchRepository over lists of records; ids count up per kind from 1."""

    interactions: list[InteractionRecord] = field(default_factory=list)
    feedback: list[FeedbackRecord] = field(default_factory=list)
    """Current feedback; replaced votes move to `history`."""
    history: list[FeedbackRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    next_ids: dict[str, int] = field(
        default_factory=lambda: {"interactions": 1, "feedback": 1, "events": 1}
    )

    def interactions_by_messages(
        self, message_ids: Collection[str]
    ) -> dict[str, InteractionRecord]:
        """The interactions recorded for any of the message ids, by message id."""
        return {r.message_id or "": r for r in self.interactions if r.message_id in message_ids}

    def latest_interactions(
        self, conversation_ids: Collection[str]
    ) -> dict[str, InteractionRecord]:
        """Each conversation's interaction of highest id, by conversation id."""
        latest: dict[str, InteractionRecord] = {}
        for record in self.interactions:  # in id order: later ones win
            if record.conversation_id in conversation_ids:
                latest[record.conversation_id] = record
        return latest

    def insert_interactions(self, news: Sequence[NewInteraction]) -> list[InteractionRecord]:
        """Store chat turns; Conflict if a message id or request id is taken."""
        return self._insert(self.interactions, "interactions", InteractionRecord, news)

    def insert_feedback_entries(self, news: Sequence[NewFeedback]) -> list[FeedbackRecord]:
        """Store feedback; Conflict if a voter already has a current vote or a request id is
        taken."""
        return self._insert(self.feedback, "feedback", FeedbackRecord, news)

    def insert_events(self, news: Sequence[NewEvent]) -> list[EventRecord]:
        """Store events; Conflict if an event id or request id is taken."""
        return self._insert(self.events, "events", EventRecord, news)

    def interactions_by_requests(
        self, request_ids: Collection[str]
    ) -> dict[str, InteractionRecord]:
        """The interactions stored by any of the request ids, by request id."""
        return {r.request_id or "": r for r in self.interactions if r.request_id in request_ids}

    def feedback_by_requests(self, request_ids: Collection[str]) -> dict[str, FeedbackRecord]:
        """Current and replaced votes stored by any of the request ids, by request id."""
        return {
            r.request_id or "": r
            for r in self.history + self.feedback
            if r.request_id in request_ids
        }

    def events_by_requests(self, request_ids: Collection[str]) -> dict[str, EventRecord]:
        """The events stored by any of the request ids, by request id."""
        return {r.request_id or "": r for r in self.events if r.request_id in request_ids}

    def events_by_event_ids(self, event_ids: Collection[str]) -> dict[str, EventRecord]:
        """The events stored under any of the client event ids, by event id."""
        return {r.event_id or "": r for r in self.events if r.event_id in event_ids}

    def current_votes(self, voters: Collection[Vote]) -> dict[Vote, FeedbackRecord]:
        """The current vote of each of the voters that has one."""
        return {
            voter: r
            for r in self.feedback
            if (voter := (r.message_id or "", r.user_id or "")) in voters
        }

    def retire_votes(self, votes: Sequence[FeedbackRecord]) -> None:
        """Remove replaced votes from the current feedback."""
        retired = {vote.id for vote in votes}
        self.feedback = [r for r in self.feedback if r.id not in retired]

    def insert_history(self, replaced: Sequence[FeedbackRecord]) -> None:
        """Keep replaced votes."""
        self.history.extend(replaced)

    def running_erasures(self) -> frozenset[tuple[str, str]]:
        """No erasures run in memory."""
        return frozenset()

    def opted_out(self, user_hashes: Collection[str]) -> frozenset[str]:
        """No user opts out in memory."""
        return frozenset()

    def _insert(
        self, table: list[R], name: str, record_type: type[R], news: Sequence[Any]
    ) -> list[R]:
        records: list[R] = []
        for new in news:
            values = {f.name: getattr(new, f.name) for f in fields(new)}
            record = record_type(id=self.next_ids[name], **values)
            _check_unique(table + records, record)
            self.next_ids[name] += 1
            records.append(record)
        table.extend(records)
        return records


def _check_unique(stored: Sequence[Any], record: Any) -> None:
    """Raise Conflict as the database's unique indexes would."""
    keys = ["request_id", "message_id" if isinstance(record, InteractionRecord) else "event_id"]
    for key in keys:
        value = getattr(record, key, None)
        if value is not None and any(getattr(other, key) == value for other in stored):
            raise Conflict(f"{key} {value!r} is taken", constraint=key)
    if isinstance(record, FeedbackRecord) and record.message_id and record.user_id:
        voter = (record.message_id, record.user_id)
        if any((other.message_id, other.user_id) == voter for other in stored):
            raise Conflict("one current vote per voter", constraint="uq_feedback_message_user")


class MemoryStorage:
    """The storage handle's writer side over MemoryRows: each write is all or nothing."""

    def __init__(self) -> None:
        """Start empty."""
        self.rows = MemoryRows()

    def write(self, work: Callable[[BatchRepository], T]) -> T:
        """Run `work` on a copy of the rows and keep the copy only if it returns."""
        draft = copy.deepcopy(self.rows)
        result = work(draft)
        self.rows = draft
        return result
