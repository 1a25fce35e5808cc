"""FeedbackService: the rules for recording, rating, logging and reading, over any storage."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar

from server.service import paging
from server.service.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    Unavailable,
)
from server.service.inputs import (
    EventInput,
    FeedbackInput,
    InteractionInput,
    ListFeedbackInput,
    StatsInput,
)
from server.service.validation import (
    CONVERSATION_ID,
    EVENT_TYPE,
    IDENTIFIER,
    LABEL,
    MAX_DETAILS_BYTES,
    MAX_METADATA_BYTES,
    MAX_TEXT_CHARS,
    MODEL_NAME,
    Violations,
)
from storage import Repository, Storage
from storage.errors import Conflict, StorageUnavailable
from storage.records import (
    EventRecord,
    EventStats,
    FeedbackQuery,
    FeedbackRecord,
    FeedbackStats,
    InteractionRecord,
    InteractionStats,
    Label,
    NewEvent,
    NewFeedback,
    NewInteraction,
    Rating,
    Score,
    StatsFilter,
    Thumb,
)

T = TypeVar("T")

CONVERSATION_RULE = "1-128 letters, digits, '-' or '_'"
IDENTIFIER_RULE = "1-128 letters, digits, '.', '_', ':', '@' or '-'"
MODEL_RULE = "1-128 letters, digits, '.', '_', ':', '/', '@', '+' or '-'"
EVENT_TYPE_RULE = "a letter followed by up to 63 letters, digits, '.', '_', ':' or '-'"
LABEL_RULE = "1-64 letters, digits, '_' or '-'"
DEFAULT_LABELS = frozenset({"positive", "negative", "neutral", "good", "bad"})


@dataclass(frozen=True, slots=True)
class Rules:
    """Deployment choices that change what the service accepts."""

    accept_unknown_conversations: bool = False
    """Store feedback on conversations/messages never recorded instead of answering NOT_FOUND."""
    allowed_labels: frozenset[str] | None = DEFAULT_LABELS
    """Labels a categorical rating may use (lower case); None allows any well-formed label."""


@dataclass(frozen=True, slots=True)
class Stats:
    """The three aggregates of one stats request; events is None when it does not apply."""

    feedback: FeedbackStats
    interactions: InteractionStats
    events: EventStats | None


@dataclass(frozen=True, slots=True)
class FeedbackPage:
    """One page of feedback and the token of the next one ("" on the last page)."""

    items: list[FeedbackRecord]
    next_page_token: str


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _sha256(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


class FeedbackService:
    """Validates requests, applies the linking rules and runs storage work off the event loop."""

    def __init__(
        self,
        storage: Storage,
        executor: Executor,
        rules: Rules | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._storage = storage
        self._executor = executor
        self._rules = rules or Rules()
        self._clock = clock

    async def record_interaction(self, request: InteractionInput) -> InteractionRecord:
        """Store one chat turn; the texts are hashed and dropped."""
        now = self._clock()
        check = Violations()
        new = NewInteraction(
            conversation_id=check.required_match(
                "conversation_id", request.conversation_id, CONVERSATION_ID, CONVERSATION_RULE
            ),
            message_id=check.optional_match(
                "message_id", request.message_id, IDENTIFIER, IDENTIFIER_RULE
            ),
            user_id=check.optional_match("user_id", request.user_id, IDENTIFIER, IDENTIFIER_RULE),
            model=check.optional_match("model", request.model, MODEL_NAME, MODEL_RULE),
            input_hash=_sha256(request.input_text)
            or check.sha256("input_hash", request.input_hash),
            output_hash=_sha256(request.output_text)
            or check.sha256("output_hash", request.output_hash),
            latency_ms=check.latency("latency_ms", request.latency_ms),
            prompt_tokens=check.tokens("prompt_tokens", request.prompt_tokens),
            completion_tokens=check.tokens("completion_tokens", request.completion_tokens),
            total_tokens=self._total_tokens(check, request),
            metadata=check.json_object("metadata", request.metadata, MAX_METADATA_BYTES),
            occur_time=check.client_time("occur_time", request.occur_time, now),
            create_time=now,
        )
        check.raise_if_any()

        def insert(repository: Repository) -> InteractionRecord:
            if new.message_id and repository.interaction_by_message(new.message_id):
                raise _message_exists(new.message_id)
            return repository.insert_interaction(new)

        try:
            return await self._write(insert)
        except Conflict as error:  # a concurrent call recorded the same message first
            raise _message_exists(new.message_id or "") from error

    @staticmethod
    def _total_tokens(check: Violations, request: InteractionInput) -> int | None:
        total = check.tokens("total_tokens", request.total_tokens)
        prompt, completion = request.prompt_tokens, request.completion_tokens
        if prompt is None or completion is None:
            return total
        if total is None:
            return prompt + completion
        if total != prompt + completion:
            check.add("total_tokens", "must equal prompt_tokens + completion_tokens")
        return total

    async def submit_feedback(self, request: FeedbackInput) -> FeedbackRecord:
        """Store one rating, linked to the recorded interaction it is about."""
        check = Violations()
        if not request.conversation_id and not request.message_id:
            check.add("conversation_id", "is required unless message_id is given")
        draft = NewFeedback(
            conversation_id=check.optional_match(
                "conversation_id", request.conversation_id, CONVERSATION_ID, CONVERSATION_RULE
            ),
            message_id=check.optional_match(
                "message_id", request.message_id, IDENTIFIER, IDENTIFIER_RULE
            ),
            user_id=check.optional_match("user_id", request.user_id, IDENTIFIER, IDENTIFIER_RULE),
            rating=self._rating(check, request),
            text=check.text("text", request.text, MAX_TEXT_CHARS),
            latency_ms=check.latency("latency_ms", request.latency_ms),
            tokens_used=check.tokens("tokens_used", request.tokens_used),
            input_hash=check.sha256("input_hash", request.input_hash),
            output_hash=check.sha256("output_hash", request.output_hash),
            metadata=check.json_object("metadata", request.metadata, MAX_METADATA_BYTES),
            create_time=self._clock(),
        )
        check.raise_if_any()
        return await self._write(lambda repository: self._link_and_insert(repository, draft))

    def _rating(self, check: Violations, request: FeedbackInput) -> Rating:
        if request.score is not None:
            if not 1 <= request.score <= 5:
                check.add("score", f"must be from 1 to 5, got {request.score}")
            return Score(request.score)
        if request.thumb is not None:
            if request.thumb not in ("up", "down"):
                check.add("thumb", "must be THUMB_UP or THUMB_DOWN")
            return Thumb(request.thumb == "up")
        if request.label is not None:
            label = request.label.strip().lower()
            if LABEL.fullmatch(label) is None:
                check.add("label", f"must be {LABEL_RULE}")
            elif self._rules.allowed_labels is not None and label not in self._rules.allowed_labels:
                allowed = ", ".join(sorted(self._rules.allowed_labels))
                check.add("label", f"must be one of: {allowed}")
            return Label(label)
        check.add("rating", "is required: set one of score, thumb or label")
        return Score(0)

    def _link_and_insert(self, repository: Repository, draft: NewFeedback) -> FeedbackRecord:
        """Find the interaction the feedback is about, inherit its facts, then insert."""
        if draft.message_id:
            interaction = repository.interaction_by_message(draft.message_id)
            if interaction is None and not self._rules.accept_unknown_conversations:
                raise NotFound(
                    "message", draft.message_id, f"message {draft.message_id!r} was never recorded"
                )
            if (
                interaction is not None
                and draft.conversation_id
                and draft.conversation_id != interaction.conversation_id
            ):
                raise FailedPrecondition(
                    "CONVERSATION_MISMATCH",
                    f"message {draft.message_id!r} belongs to another conversation",
                    {"message_id": draft.message_id},
                )
        else:
            assert draft.conversation_id  # validation demands one of the two ids
            interaction = repository.latest_interaction(draft.conversation_id)
            if interaction is None and not self._rules.accept_unknown_conversations:
                raise NotFound(
                    "conversation",
                    draft.conversation_id,
                    f"conversation {draft.conversation_id!r} was never recorded",
                )
        if interaction is None:
            return repository.insert_feedback(draft)
        if draft.user_id and interaction.user_id and draft.user_id != interaction.user_id:
            raise FailedPrecondition(
                "USER_MISMATCH",
                "the rated interaction was recorded for another user",
                {"interaction_id": str(interaction.id)},
            )
        linked = replace(
            draft,
            conversation_id=interaction.conversation_id,
            user_id=draft.user_id or interaction.user_id,
            interaction_id=interaction.id,
            latency_ms=_first(draft.latency_ms, interaction.latency_ms),
            tokens_used=_first(draft.tokens_used, interaction.total_tokens),
            input_hash=draft.input_hash or interaction.input_hash,
            output_hash=draft.output_hash or interaction.output_hash,
        )
        return repository.insert_feedback(linked)

    async def log_event(self, request: EventInput) -> EventRecord:
        """Store one analytics event."""
        now = self._clock()
        check = Violations()
        new = NewEvent(
            user_id=check.required_match("user_id", request.user_id, IDENTIFIER, IDENTIFIER_RULE),
            event_type=check.required_match(
                "event_type", request.event_type, EVENT_TYPE, EVENT_TYPE_RULE
            ),
            details=check.json_object("details", request.details, MAX_DETAILS_BYTES),
            event_time=check.client_time("event_time", request.event_time, now),
            receive_time=now,
        )
        check.raise_if_any()
        return await self._write(lambda repository: repository.insert_event(new))

    async def get_stats(self, request: StatsInput) -> Stats:
        """Aggregate feedback, interactions and events for one selection."""
        check = Violations()
        selection = StatsFilter(
            conversation_id=check.optional_match(
                "conversation_id", request.conversation_id, CONVERSATION_ID, CONVERSATION_RULE
            ),
            user_id=check.optional_match("user_id", request.user_id, IDENTIFIER, IDENTIFIER_RULE),
            message_id=check.optional_match(
                "message_id", request.message_id, IDENTIFIER, IDENTIFIER_RULE
            ),
            start_time=request.start_time,
            end_time=request.end_time,
        )
        if request.start_time and request.end_time and request.end_time < request.start_time:
            check.add("end_time", "must not be before start_time")
        check.raise_if_any()
        events_apply = selection.conversation_id is None and selection.message_id is None

        def aggregate(repository: Repository) -> Stats:
            return Stats(
                feedback=repository.feedback_stats(selection),
                interactions=repository.interaction_stats(selection),
                events=repository.event_stats(selection) if events_apply else None,
            )

        return await self._read(aggregate)

    async def list_feedback(self, request: ListFeedbackInput) -> FeedbackPage:
        """One page of feedback, newest first."""
        check = Violations()
        query = FeedbackQuery(
            conversation_id=check.optional_match(
                "conversation_id", request.conversation_id, CONVERSATION_ID, CONVERSATION_RULE
            ),
            message_id=check.optional_match(
                "message_id", request.message_id, IDENTIFIER, IDENTIFIER_RULE
            ),
            user_id=check.optional_match("user_id", request.user_id, IDENTIFIER, IDENTIFIER_RULE),
            min_score=request.min_score,
            max_score=request.max_score,
        )
        for field, score in (("min_score", request.min_score), ("max_score", request.max_score)):
            if score is not None and not 1 <= score <= 5:
                check.add(field, f"must be from 1 to 5, got {score}")
        if (
            request.min_score is not None
            and request.max_score is not None
            and request.min_score > request.max_score
        ):
            check.add("max_score", "must not be below min_score")
        if request.page_size < 0:
            check.add("page_size", "must not be negative")
        fingerprint = paging.filters_fingerprint(replace(query, limit=0))
        before_id = None
        if request.page_token:
            try:
                before_id = paging.decode_page_token(request.page_token, fingerprint)
            except paging.InvalidPageToken as error:
                check.add("page_token", str(error))
        check.raise_if_any()
        page_size = min(request.page_size or paging.DEFAULT_PAGE_SIZE, paging.MAX_PAGE_SIZE)
        # One extra row tells whether another page exists without a second query.
        query = replace(query, before_id=before_id, limit=page_size + 1)
        rows = await self._read(lambda repository: repository.list_feedback(query))
        items = rows[:page_size]
        has_more = len(rows) > page_size
        token = paging.encode_page_token(items[-1].id, fingerprint) if has_more else ""
        return FeedbackPage(items=items, next_page_token=token)

    async def _write(self, work: Callable[[Repository], T]) -> T:
        return await self._run(self._storage.write, work)

    async def _read(self, work: Callable[[Repository], T]) -> T:
        return await self._run(self._storage.read, work)

    async def _run(
        self, transaction: Callable[[Callable[[Repository], T]], T], work: Callable[[Repository], T]
    ) -> T:
        """Run blocking storage work on the executor so the event loop keeps serving."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, transaction, work)
        except StorageUnavailable as error:
            raise Unavailable("the database is unavailable; retry later") from error


def _first(*values: T | None) -> T | None:
    return next((value for value in values if value is not None), None)


def _message_exists(message_id: str) -> AlreadyExists:
    return AlreadyExists("message", message_id, f"message {message_id!r} was already recorded")
