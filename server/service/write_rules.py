"""What makes a write valid and how feedback links to its interaction, one item or a batch."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from server.service.errors import AlreadyExists, FailedPrecondition, NotFound, ServiceError
from server.service.group_commit import Job
from server.service.inputs import EventInput, FeedbackInput, InteractionInput
from server.service.pii.redaction import SHA256, TextHasher
from server.service.ports import BatchRepository, Vote
from server.service.subjects import Subjects
from server.service.validation import (
    CONVERSATION_ID,
    EVENT_TYPE,
    IDENTIFIER,
    LABEL,
    MAX_DETAILS_BYTES,
    MAX_METADATA_BYTES,
    MAX_TEXT_CHARS,
    MIN_TIME,
    MODEL_NAME,
    Violations,
)
from storage.records import (
    EventRecord,
    FeedbackRecord,
    InteractionRecord,
    Label,
    NewEvent,
    NewFeedback,
    NewInteraction,
    Rating,
    Score,
    Thumb,
)

CONVERSATION_RULE = "1-128 letters, digits, '-' or '_'"
IDENTIFIER_RULE = "1-128 letters, digits, '.', '_', ':', '@' or '-'"
MODEL_RULE = "1-128 letters, digits, '.', '_', ':', '/', '@', '+' or '-'"
EVENT_TYPE_RULE = "a letter followed by up to 63 letters, digits, '.', '_', ':' or '-'"
LABEL_RULE = "1-64 letters, digits, '_' or '-'"
DEFAULT_LABELS = frozenset({"positive", "negative", "neutral", "good", "bad"})
REQUEST_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
REQUEST_ID_RULE = "a UUID in its 36-character hyphenated form"
MIN_CORRECTED_SKEW = timedelta(seconds=1)
"""Clock skew below this is left uncorrected (see _skew_corrected)."""

T = TypeVar("T")
PLAIN_SHA256 = TextHasher()
PLAIN_SUBJECTS = Subjects()

INTERACTION = "interaction"
FEEDBACK = "feedback"
EVENT = "event"

Stored = InteractionRecord | FeedbackRecord | EventRecord


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The outcome of a write that repeats a stored one: nothing new was stored.

    `record` is what the earlier request stored, as it answered then (a replaced vote is given
    as it was while current).
    """

    record: Stored


@dataclass(frozen=True, slots=True)
class Suppressed:
    """The outcome of a write about a user who opted out: nothing was stored."""


SUPPRESSED = Suppressed()


@dataclass(frozen=True, slots=True)
class Rules:
    """Deployment choices that change what the service accepts."""

    accept_unknown_conversations: bool = False
    """Store feedback on conversations/messages never recorded instead of answering NOT_FOUND."""
    allowed_labels: frozenset[str] | None = DEFAULT_LABELS
    """Labels a categorical rating may use (lower case); None allows any well-formed label."""


def _hash(
    check: Violations, field: str, text: str | None, digest: str | None, hasher: TextHasher
) -> tuple[str | None, str | None]:
    """(hash, how it was made): the server's hash of a text, else the client's SHA-256 as is."""
    if text is not None:
        return hasher(text), hasher.kind
    given = check.sha256(field, digest)
    return given, None if given is None else SHA256


def valid_interaction(
    request: InteractionInput,
    now: datetime,
    clock_offset: timedelta | None = None,
    hasher: TextHasher = PLAIN_SHA256,
) -> NewInteraction:
    """The chat turn to store, or InvalidArgument naming every bad field; texts become hashes.

    `clock_offset` is the client clock's error estimated over a stream (see _skew_corrected).
    """
    check = Violations()
    input_hash, input_kind = _hash(
        check, "input_hash", request.input_text, request.input_hash, hasher
    )
    output_hash, output_kind = _hash(
        check, "output_hash", request.output_text, request.output_hash, hasher
    )
    new = NewInteraction(
        conversation_id=check.required_match(
            "conversation_id", request.conversation_id, CONVERSATION_ID, CONVERSATION_RULE
        ),
        message_id=check.optional_match(
            "message_id", request.message_id, IDENTIFIER, IDENTIFIER_RULE
        ),
        user_id=check.optional_match("user_id", request.user_id, IDENTIFIER, IDENTIFIER_RULE),
        model=check.optional_match("model", request.model, MODEL_NAME, MODEL_RULE),
        input_hash=input_hash,
        output_hash=output_hash,
        input_hash_kind=input_kind,
        output_hash_kind=output_kind,
        latency_ms=check.latency("latency_ms", request.latency_ms),
        prompt_tokens=check.tokens("prompt_tokens", request.prompt_tokens),
        completion_tokens=check.tokens("completion_tokens", request.completion_tokens),
        total_tokens=_total_tokens(check, request),
        metadata=check.json_object(
            "metadata", request.metadata, request.metadata_bytes, MAX_METADATA_BYTES
        ),
        occur_time=_client_time(
            check, "occur_time", request.occur_time, request.sent_time, now, clock_offset
        ),
        create_time=now,
        request_id=_request_id(check, request.request_id),
        request_digest=request.request_digest,
    )
    check.raise_if_any()
    return new


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


def valid_feedback(request: FeedbackInput, rules: Rules, now: datetime) -> NewFeedback:
    """The rating to store before linking, or InvalidArgument naming every bad field."""
    check = Violations()
    if not request.conversation_id and not request.message_id:
        check.add("conversation_id", "is required unless message_id is given")
    input_hash = check.sha256("input_hash", request.input_hash)
    output_hash = check.sha256("output_hash", request.output_hash)
    new = NewFeedback(
        conversation_id=check.optional_match(
            "conversation_id", request.conversation_id, CONVERSATION_ID, CONVERSATION_RULE
        ),
        message_id=check.optional_match(
            "message_id", request.message_id, IDENTIFIER, IDENTIFIER_RULE
        ),
        user_id=check.optional_match("user_id", request.user_id, IDENTIFIER, IDENTIFIER_RULE),
        model=check.optional_match("model", request.model, MODEL_NAME, MODEL_RULE),
        rating=_rating(check, request, rules),
        text=check.text("text", request.text, MAX_TEXT_CHARS),
        latency_ms=check.latency("latency_ms", request.latency_ms),
        tokens_used=check.tokens("tokens_used", request.tokens_used),
        input_hash=input_hash,
        output_hash=output_hash,
        input_hash_kind=None if input_hash is None else SHA256,
        output_hash_kind=None if output_hash is None else SHA256,
        metadata=check.json_object(
            "metadata", request.metadata, request.metadata_bytes, MAX_METADATA_BYTES
        ),
        create_time=now,
        request_id=_request_id(check, request.request_id),
        request_digest=request.request_digest,
    )
    check.raise_if_any()
    return new


def _rating(check: Violations, request: FeedbackInput, rules: Rules) -> Rating:
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
        elif rules.allowed_labels is not None and label not in rules.allowed_labels:
            check.add("label", f"must be one of: {', '.join(sorted(rules.allowed_labels))}")
        return Label(label)
    check.add("rating", "is required: set one of score, thumb or label")
    return Score(0)


def valid_event(
    request: EventInput, now: datetime, clock_offset: timedelta | None = None
) -> NewEvent:
    """The analytics event to store, or InvalidArgument naming every bad field.

    `clock_offset` is the client clock's error estimated over a stream (see _skew_corrected).
    """
    check = Violations()
    new = NewEvent(
        user_id=check.required_match("user_id", request.user_id, IDENTIFIER, IDENTIFIER_RULE),
        event_type=check.required_match(
            "event_type", request.event_type, EVENT_TYPE, EVENT_TYPE_RULE
        ),
        details=check.json_object(
            "details", request.details, request.details_bytes, MAX_DETAILS_BYTES
        ),
        event_time=_client_time(
            check, "event_time", request.event_time, request.sent_time, now, clock_offset
        ),
        receive_time=now,
        event_id=check.optional_match("event_id", request.event_id, IDENTIFIER, IDENTIFIER_RULE),
        request_id=_request_id(check, request.request_id),
        request_digest=request.request_digest,
    )
    check.raise_if_any()
    return new


def _request_id(check: Violations, value: str) -> str | None:
    """An AIP-155 request id, stored lower case so any spelling of a UUID names one request."""
    return (
        check.optional_match("request_id", value, REQUEST_ID, REQUEST_ID_RULE) or ""
    ).lower() or None


def _client_time(
    check: Violations,
    field: str,
    client_time: datetime | None,
    sent_time: datetime | None,
    now: datetime,
    clock_offset: timedelta | None,
) -> datetime:
    """A time the client's clock gave, corrected for its skew, then checked as the server's."""
    corrected = _skew_corrected(check, field, client_time, sent_time, now, clock_offset)
    return check.client_time(field, corrected, now)


def _skew_corrected(
    check: Violations,
    field: str,
    client_time: datetime | None,
    sent_time: datetime | None,
    now: datetime,
    clock_offset: timedelta | None = None,
) -> datetime | None:
    """A client-clock time moved by the client's clock error, as Segment and PostHog correct it.

    The client's clock read `sent_time` when the server's read `now` (less the network delay,
    which is counted as skew), so its times are off by `now - sent_time`. On an Ingest stream,
    where items wait in send buffers after they are stamped, the error is instead the stream's
    `clock_offset` (server.service.stream_clock), given for every item that carries a sent_time.
    """
    if client_time is None or sent_time is None:
        return client_time
    if sent_time < MIN_TIME:
        check.add("sent_time", "must be after 1970-01-01T00:00:00Z")
        return client_time
    skew = now - sent_time if clock_offset is None else clock_offset
    if abs(skew) < MIN_CORRECTED_SKEW:  # mostly network delay: a synchronized clock stays exact
        return client_time
    try:
        return client_time + skew
    except OverflowError:
        check.add(field, "is out of range once corrected by sent_time")
        return None


def request_reused(request_id: str) -> AlreadyExists:
    """The error for a request id sent again with other content."""
    return AlreadyExists(
        "request",
        request_id,
        f"request_id {request_id!r} was already used for a request with other content",
    )


def message_exists(message_id: str) -> AlreadyExists:
    """The error for a message recorded twice."""
    return AlreadyExists("message", message_id, f"message {message_id!r} was already recorded")


def link_feedback(
    draft: NewFeedback, interaction: InteractionRecord | None, rules: Rules
) -> NewFeedback:
    """The feedback linked to the interaction it rates, inheriting what it does not carry.

    `interaction` is the recorded message (when the draft names one) or else the conversation's
    latest turn; None when nothing was recorded.
    """
    if interaction is None:
        if rules.accept_unknown_conversations:
            return draft
        if draft.message_id:
            raise NotFound(
                "message", draft.message_id, f"message {draft.message_id!r} was never recorded"
            )
        conversation_id = draft.conversation_id or ""
        raise NotFound(
            "conversation", conversation_id, f"conversation {conversation_id!r} was never recorded"
        )
    if draft.conversation_id and draft.conversation_id != interaction.conversation_id:
        raise FailedPrecondition(
            "CONVERSATION_MISMATCH",
            f"message {draft.message_id!r} belongs to another conversation",
            {"message_id": draft.message_id or ""},
        )
    if draft.user_id and interaction.user_id and draft.user_id != interaction.user_id:
        raise FailedPrecondition(
            "USER_MISMATCH",
            "the rated interaction was recorded for another user",
            {"interaction_id": str(interaction.id)},
        )
    if draft.model and interaction.model and draft.model != interaction.model:
        raise FailedPrecondition(
            "MODEL_MISMATCH",
            "the rated interaction was answered by another model",
            {"interaction_id": str(interaction.id)},
        )
    return replace(
        draft,
        conversation_id=interaction.conversation_id,
        user_id=draft.user_id or interaction.user_id,
        model=draft.model or interaction.model,
        interaction_id=interaction.id,
        latency_ms=_first(draft.latency_ms, interaction.latency_ms),
        tokens_used=_first(draft.tokens_used, interaction.total_tokens),
        input_hash=draft.input_hash or interaction.input_hash,
        output_hash=draft.output_hash or interaction.output_hash,
        input_hash_kind=draft.input_hash_kind if draft.input_hash else interaction.input_hash_kind,
        output_hash_kind=(
            draft.output_hash_kind if draft.output_hash else interaction.output_hash_kind
        ),
    )


def _first(*values: T | None) -> T | None:
    return next((value for value in values if value is not None), None)


Slot = tuple[Job, int, Any]
"""(job, position in the job, item): one item still waiting for its outcome."""

Copy = tuple[Slot, Slot, bool]
"""(an item, the earlier item of the same batch it repeats, whether their content is the same)."""


def apply_batch(
    repository: BatchRepository,
    batch: Sequence[Job],
    rules: Rules,
    subjects: Subjects = PLAIN_SUBJECTS,
) -> None:
    """Apply every job in one transaction with one query per lookup and one INSERT per table.

    Repeats of stored requests are answered first and store nothing. Interactions go before
    feedback so that feedback in the same batch can link to them. Items about a user who opted
    out are suppressed, and those about a user or conversation being erased refused, checked in
    this transaction (feedback both before linking and after, since it may inherit its user and
    conversation). The storage writes the batch's rollups after all of this, in one global order
    (storage.aggregates.write.RollupChanges), so batches of replicas sharing a PostgreSQL
    database never deadlock over rollup rows.
    """
    refused = partial(_held, repository, subjects)
    if interactions := _slots(batch, INTERACTION):
        fresh, copies = _unrepeated(interactions, repository.interactions_by_requests)
        _store_interactions(repository, refused(fresh))
        _settle(copies)
    if feedback := _slots(batch, FEEDBACK):
        fresh, copies = _unrepeated(feedback, repository.feedback_by_requests)
        _store_feedback(repository, fresh, rules, refused)
        _settle(copies)
    if events := _slots(batch, EVENT):
        fresh, copies = _unrepeated(events, repository.events_by_requests)
        fresh, event_copies = _split(
            fresh,
            lambda item: item.event_id,
            repository.events_by_event_ids,
            lambda item, record: Duplicate(record),  # an event id is dropped whatever it says
            lambda item, original: True,
        )
        fresh = refused(fresh)
        records = repository.insert_events([item for _, _, item in fresh])
        for (job, index, _), record in zip(fresh, records, strict=True):
            job.outcomes[index] = record
        # Event-id copies first: a request-id copy may repeat an item that is one of them.
        _settle(event_copies + copies)


def _slots(jobs: Sequence[Job], kind: str) -> list[Slot]:
    """(job, position, item) of every still-open item of one kind, in queue order."""
    return [
        (job, index, item)
        for job in jobs
        if job.kind == kind
        for index, item in enumerate(job.items)
        if job.outcomes[index] is None
    ]


def _unrepeated(
    slots: list[Slot], stored_by_request: Callable[[Collection[str]], Mapping[str, Stored]]
) -> tuple[list[Slot], list[Copy]]:
    """The items whose request id is new (or absent); repeats are answered as AIP-155 says."""
    return _split(
        slots,
        lambda item: item.request_id,
        stored_by_request,
        _replay,
        lambda item, original: bool(item.request_digest == original.request_digest),
    )


def _split(
    slots: list[Slot],
    key: Callable[[Any], str | None],
    stored_by_key: Callable[[Collection[str]], Mapping[str, Stored]],
    answer_stored: Callable[[Any, Stored], Duplicate | ServiceError],
    same_content: Callable[[Any, Any], bool],
) -> tuple[list[Slot], list[Copy]]:
    """Items whose `key` is new, to store; the others get their outcome now or after the store.

    An item whose key is already stored is answered from the stored record at once; an item
    repeating an earlier item of this batch waits for that item's outcome (see _settle).
    """
    keys = {value for _, _, item in slots if (value := key(item))}
    if not keys:
        return slots, []
    stored = stored_by_key(keys)
    fresh: list[Slot] = []
    copies: list[Copy] = []
    first: dict[str, Slot] = {}
    for slot in slots:
        job, index, item = slot
        value = key(item)
        if value is None:
            fresh.append(slot)
        elif (record := stored.get(value)) is not None:
            job.outcomes[index] = answer_stored(item, record)
        elif (original := first.get(value)) is not None:
            copies.append((slot, original, same_content(item, original[2])))
        else:
            first[value] = slot
            fresh.append(slot)
    return fresh, copies


def _replay(item: Any, record: Stored) -> Duplicate | ServiceError:
    """The answer to a request whose id is stored: the original response, or reuse of the id."""
    if record.request_digest != item.request_digest:
        return request_reused(item.request_id)
    if isinstance(record, FeedbackRecord) and record.replace_time is not None:
        record = replace(record, replace_time=None, replaced_by_id=None)
    return Duplicate(record)


def _settle(copies: list[Copy]) -> None:
    """Answer items that repeat an earlier item of their batch with that item's outcome."""
    for (job, index, item), (original_job, original_index, _), same in copies:
        outcome = original_job.outcomes[original_index]
        if not same:
            job.outcomes[index] = request_reused(item.request_id)
        elif isinstance(outcome, Duplicate | Suppressed | Exception):
            job.outcomes[index] = outcome
        else:
            job.outcomes[index] = Duplicate(outcome)


def _store_interactions(repository: BatchRepository, slots: list[Slot]) -> None:
    taken = set(
        repository.interactions_by_messages(
            {item.message_id for _, _, item in slots if item.message_id}
        )
    )
    accepted = []
    for job, index, item in slots:
        if item.message_id and item.message_id in taken:
            job.outcomes[index] = message_exists(item.message_id)
            continue
        if item.message_id:
            taken.add(item.message_id)
        accepted.append((job, index, item))
    records = repository.insert_interactions([item for _, _, item in accepted])
    for (job, index, _), record in zip(accepted, records, strict=True):
        job.outcomes[index] = record


def _held(repository: BatchRepository, subjects: Subjects, slots: list[Slot]) -> list[Slot]:
    """The slots to store: those about an opted-out user are suppressed, those about a subject
    being erased get their refusal."""
    if not slots:
        return slots
    users = subjects.hashes({item.user_id for _, _, item in slots if item.user_id})
    opted_out = repository.opted_out(set(users.values()))
    running = repository.running_erasures()
    if not opted_out and not running:
        return slots
    kept = []
    for slot in slots:
        job, index, item = slot
        if item.user_id and users[item.user_id] in opted_out:
            job.outcomes[index] = SUPPRESSED
        elif (refusal := subjects.refusal(running, item)) is not None:
            job.outcomes[index] = refusal
        else:
            kept.append(slot)
    return kept


def _store_feedback(
    repository: BatchRepository,
    slots: list[Slot],
    rules: Rules,
    refused: Callable[[list[Slot]], list[Slot]],
) -> None:
    slots = refused(slots)  # by the user the draft names, before linking can fail
    by_message = repository.interactions_by_messages(
        {item.message_id for _, _, item in slots if item.message_id}
    )
    latest = repository.latest_interactions(
        {item.conversation_id for _, _, item in slots if not item.message_id}
    )
    linked: list[Slot] = []
    for job, index, draft in slots:
        interaction = (
            by_message.get(draft.message_id)
            if draft.message_id
            else latest.get(draft.conversation_id or "")
        )
        try:
            linked.append((job, index, link_feedback(draft, interaction, rules)))
        except ServiceError as error:
            job.outcomes[index] = error
    for voting_round in _rounds(refused(linked)):  # and by what linking inherited
        _store_votes(repository, voting_round)


def _voter(item: NewFeedback) -> Vote | None:
    """Whose vote on which message `item` is; None for feedback that is not a vote."""
    if item.message_id is None or item.user_id is None:
        return None
    return item.message_id, item.user_id


def _rounds(linked: list[Slot]) -> list[list[Slot]]:
    """Split feedback so no round holds two votes of one user on one message, keeping order."""
    rounds: list[list[Slot]] = []
    votes_seen: dict[Vote, int] = {}
    for slot in linked:
        voter = _voter(slot[2])
        number = 0
        if voter is not None:
            number = votes_seen.get(voter, 0)
            votes_seen[voter] = number + 1
        if number == len(rounds):
            rounds.append([])
        rounds[number].append(slot)
    return rounds


def _older_than_current(slot: Slot, current: Mapping[Vote, FeedbackRecord]) -> bool:
    """Whether an imported vote is older than its voter's current one; if so, rejects it."""
    job, index, item = slot
    voter = _voter(item)
    vote = current.get(voter) if job.imported and voter is not None else None
    if vote is None or item.create_time >= vote.create_time:
        return False
    job.outcomes[index] = FailedPrecondition(
        "VOTE_OLDER_THAN_CURRENT",
        f"the vote of {item.create_time.isoformat()} is older than the current vote of"
        f" {vote.create_time.isoformat()}: import each voter's votes oldest first",
        {"current_vote_id": str(vote.id)},
    )
    return True


def _store_votes(repository: BatchRepository, slots: list[Slot]) -> None:
    """Store feedback; a vote replaces its user's current vote on the message, kept as history.

    An imported vote older than the current one would make history run backwards (the current
    vote's replaces_id chain is by time), so it is rejected; live votes are never older, bar
    replicas' clocks, and are not checked.
    """
    voters = {voter for _, _, item in slots if (voter := _voter(item))}
    replaced = repository.current_votes(voters) if voters else {}
    if replaced:
        slots = [slot for slot in slots if not _older_than_current(slot, replaced)]
        voters = {voter for _, _, item in slots if (voter := _voter(item))}
        replaced = {voter: vote for voter, vote in replaced.items() if voter in voters}
    drafts = [
        replace(item, replaces_id=replaced[voter].id)
        if (voter := _voter(item)) in replaced
        else item
        for _, _, item in slots
    ]
    repository.retire_votes(list(replaced.values()))
    records = repository.insert_feedback_entries(drafts)
    for (job, index, _), record in zip(slots, records, strict=True):
        job.outcomes[index] = record
    if replaced:
        successors = {_voter(record): record for record in records}
        repository.insert_history(
            [
                replace(old, replace_time=new.create_time, replaced_by_id=new.id)
                for voter, old in replaced.items()
                if (new := successors[voter]) is not None
            ]
        )
