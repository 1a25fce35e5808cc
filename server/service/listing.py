"""Lists and exports of feedback, interactions and events: filter rules, order and keyset tokens.

The three kinds differ only in their filters and their query (a `Listing`); paging, ordering,
tokens and exports are the same code for all of them. Pages follow AIP-132/158: page_size
defaults to 50 and is lowered to 1000, tokens are opaque keyset cursors bound to the filters and
order they were issued for, so pages neither skip nor repeat rows while new ones arrive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypedDict, TypeVar

from server.service import paging
from server.service.list_inputs import (
    EventSelection,
    ExportRequest,
    FeedbackSelection,
    InteractionSelection,
    PageRequest,
    SelectionT,
)
from server.service.ports import ReadUnit
from server.service.validation import (
    CONVERSATION_ID,
    EVENT_TYPE,
    IDENTIFIER,
    LABEL,
    Violations,
)
from server.service.write_rules import (
    CONVERSATION_RULE,
    EVENT_TYPE_RULE,
    IDENTIFIER_RULE,
    LABEL_RULE,
)
from storage.records import (
    EventEntry,
    EventFilter,
    FeedbackEntry,
    FeedbackFilter,
    InteractionEntry,
    InteractionFilter,
    Keyset,
    RatingKind,
)

EXPORT_CHUNK_SIZE = 1000
"""Rows per export message: large enough that grpc.aio's ~100 us per message is negligible."""
MAX_MODEL_CHARS = 128
NEWEST_FIRST = "create_time desc"
OLDEST_FIRST = "create_time asc"
_ORDERS = {NEWEST_FIRST: True, OLDEST_FIRST: False, "create_time": False}
"""order_by values and whether they mean newest first; AIP-132 sorts ascending by default."""
_RATING_KINDS: dict[str, RatingKind | None] = {
    "": None,
    "score": "score",
    "thumb": "thumb",
    "label": "label",
}

FilterT = TypeVar("FilterT", FeedbackFilter, InteractionFilter, EventFilter)
EntryT = TypeVar("EntryT", FeedbackEntry, InteractionEntry, EventEntry)
T = TypeVar("T")

Read = Callable[[Callable[[ReadUnit], T]], Awaitable[T]]
"""Runs a unit of read work on the storage executor (FeedbackService._read)."""


@dataclass(frozen=True, slots=True)
class Page(Generic[EntryT]):
    """One page and the token of the next one ("" on the last page)."""

    items: list[EntryT]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class Chunk(Generic[EntryT]):
    """One chunk of an export and the token that resumes the export right after it."""

    items: list[EntryT]
    resume_token: str


@dataclass(frozen=True, slots=True)
class Listing(Generic[SelectionT, FilterT, EntryT]):
    """What sets one kind of listed record apart: its filter rules and its query."""

    validate: Callable[[SelectionT, Violations], FilterT]
    """The storage filter of a selection, adding a violation for every bad field."""
    read: Callable[[ReadUnit, FilterT, Keyset], list[EntryT]]
    """One keyset page of the kind, read in a unit of work (a method of ports.ReadUnit)."""


async def list_page(
    listing: Listing[SelectionT, FilterT, EntryT],
    request: PageRequest[SelectionT],
    read: Read[list[EntryT]],
) -> Page[EntryT]:
    """One page, newest first unless order_by says otherwise; raises InvalidArgument."""
    check = Violations()
    if request.page_size < 0:
        check.add("page_size", "must not be negative")
    selection, newest_first, fingerprint, cursor = _start(
        listing, request.selection, request.order_by, "page_token", request.page_token, check
    )
    page_size = min(request.page_size or paging.DEFAULT_PAGE_SIZE, paging.MAX_PAGE_SIZE)
    # One extra row tells whether another page exists without a second query.
    keyset = Keyset(cursor, newest_first, page_size + 1)
    rows = await read(lambda repository: listing.read(repository, selection, keyset))
    items = rows[:page_size]
    more = len(rows) > page_size
    return Page(items, paging.encode_page_token(items[-1].id, fingerprint) if more else "")


async def export(
    listing: Listing[SelectionT, FilterT, EntryT],
    request: ExportRequest[SelectionT],
    read: Read[list[EntryT]],
) -> AsyncGenerator[Chunk[EntryT], None]:
    """Every matching row in chunks, oldest first unless order_by says otherwise.

    Validates before the first chunk (raising InvalidArgument). Each chunk is its own short read
    transaction, so memory stays at two chunks whatever the size: the one being sent and the
    next, read while the caller sends (a slow reader is never read ahead of by more).
    """
    selection, newest_first, fingerprint, cursor = _start(
        listing,
        request.selection,
        request.order_by,
        "resume_token",
        request.resume_token,
        Violations(),
        newest_first_by_default=False,
    )

    def chunk_after(cursor: int | None) -> asyncio.Future[list[EntryT]]:
        keyset = Keyset(cursor, newest_first, EXPORT_CHUNK_SIZE)
        return asyncio.ensure_future(
            read(lambda repository: listing.read(repository, selection, keyset))
        )

    upcoming = chunk_after(cursor)
    try:
        while True:
            rows = await upcoming
            if not rows:
                return
            full = len(rows) == EXPORT_CHUNK_SIZE
            if full:
                upcoming = chunk_after(rows[-1].id)
            yield Chunk(rows, paging.encode_page_token(rows[-1].id, fingerprint))
            if not full:
                return
    finally:
        _abandon(upcoming)


def _start(
    listing: Listing[SelectionT, FilterT, EntryT],
    selection: SelectionT,
    order_by: str,
    token_field: str,
    token: str,
    check: Violations,
    *,
    newest_first_by_default: bool = True,
) -> tuple[FilterT, bool, str, int | None]:
    """Where a list or export starts: its filter, order, token fingerprint and cursor.

    Raises InvalidArgument with every violation, those already in `check` included.
    """
    valid = listing.validate(selection, check)
    newest_first = _newest_first(check, order_by, default=newest_first_by_default)
    fingerprint = paging.filters_fingerprint(valid, newest_first)
    cursor = _cursor(check, token_field, token, fingerprint)
    check.raise_if_any()
    return valid, newest_first, fingerprint, cursor


def _abandon(future: asyncio.Future[Any]) -> None:
    """Drop a read ahead nobody will use, without asyncio logging its failure as unhandled."""
    if not future.done():
        future.cancel()
    elif not future.cancelled():
        future.exception()


def _newest_first(check: Violations, order_by: str, *, default: bool) -> bool:
    """Whether order_by asks for newest first; extra spaces and the direction's case are free."""
    if not order_by.strip():
        return default
    words = order_by.split()
    normalized = " ".join([*words[:1], *(word.lower() for word in words[1:])])
    newest_first = _ORDERS.get(normalized)
    if newest_first is None:
        check.add("order_by", f'must be "{NEWEST_FIRST}" or "{OLDEST_FIRST}"')
        return default
    return newest_first


def _cursor(check: Violations, field: str, token: str, fingerprint: str) -> int | None:
    if not token:
        return None
    try:
        return paging.decode_page_token(token, fingerprint)
    except paging.InvalidPageToken as error:
        check.add(field, str(error))
        return None


# ---- filter rules of each kind ----


def _feedback_filter(selection: FeedbackSelection, check: Violations) -> FeedbackFilter:
    min_score = _score(check, "min_score", selection.min_score)
    max_score = _score(check, "max_score", selection.max_score)
    if min_score is not None and max_score is not None and min_score > max_score:
        check.add("max_score", "must not be below min_score")
    start_time, end_time = check.time_range(selection.start_time, selection.end_time)
    rating_kind = _RATING_KINDS.get(selection.rating_kind)
    if selection.rating_kind not in _RATING_KINDS:
        check.add(
            "rating_kind", "must be RATING_KIND_SCORE, RATING_KIND_THUMB or RATING_KIND_LABEL"
        )
    return FeedbackFilter(
        **_chat_scope(check, selection),
        min_score=min_score,
        max_score=max_score,
        rating_kind=rating_kind,
        label=_label(check, selection.label),
        has_text=selection.has_text,
        start_time=start_time,
        end_time=end_time,
    )


def _interaction_filter(selection: InteractionSelection, check: Violations) -> InteractionFilter:
    start_time, end_time = check.time_range(selection.start_time, selection.end_time)
    return InteractionFilter(
        **_chat_scope(check, selection), start_time=start_time, end_time=end_time
    )


class _ChatScope(TypedDict):
    """The filters feedback and interactions share: which conversation, message, user, model."""

    conversation_id: str | None
    message_id: str | None
    user_id: str | None
    model: str | None


def _chat_scope(
    check: Violations, selection: FeedbackSelection | InteractionSelection
) -> _ChatScope:
    return _ChatScope(
        conversation_id=_conversation_id(check, selection.conversation_id),
        message_id=_identifier(check, "message_id", selection.message_id),
        user_id=_identifier(check, "user_id", selection.user_id),
        model=check.text("model", selection.model, MAX_MODEL_CHARS),
    )


def _event_filter(selection: EventSelection, check: Violations) -> EventFilter:
    start_time, end_time = check.time_range(selection.start_time, selection.end_time)
    return EventFilter(
        user_id=_identifier(check, "user_id", selection.user_id),
        event_type=check.optional_match(
            "event_type", selection.event_type, EVENT_TYPE, EVENT_TYPE_RULE
        ),
        start_time=start_time,
        end_time=end_time,
    )


def _conversation_id(check: Violations, value: str) -> str | None:
    return check.optional_match("conversation_id", value, CONVERSATION_ID, CONVERSATION_RULE)


def _identifier(check: Violations, field: str, value: str) -> str | None:
    return check.optional_match(field, value, IDENTIFIER, IDENTIFIER_RULE)


def _score(check: Violations, field: str, value: int | None) -> int | None:
    if value is not None and not 1 <= value <= 5:
        check.add(field, f"must be from 1 to 5, got {value}")
    return value


def _label(check: Violations, value: str) -> str | None:
    """Labels are stored lower case, so the filter is compared lower case too."""
    label = value.strip().lower()
    return check.optional_match("label", label, LABEL, LABEL_RULE)


FEEDBACK: Listing[FeedbackSelection, FeedbackFilter, FeedbackEntry] = Listing(
    _feedback_filter, lambda unit, selection, keyset: unit.feedback_entries(selection, keyset)
)
INTERACTIONS: Listing[InteractionSelection, InteractionFilter, InteractionEntry] = Listing(
    _interaction_filter,
    lambda unit, selection, keyset: unit.interaction_entries(selection, keyset),
)
EVENTS: Listing[EventSelection, EventFilter, EventEntry] = Listing(
    _event_filter, lambda unit, selection, keyset: unit.event_entries(selection, keyset)
)
