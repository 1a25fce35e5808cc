"""Untrusted list and export requests, as the servicer read them, before any validation.

Empty strings and None mean "not given". One selection type per kind of record is shared by its
List and Export methods, which take the same filters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedbackSelection:
    """The filters of ListFeedback and ExportFeedback."""

    conversation_id: str = ""
    message_id: str = ""
    user_id: str = ""
    model: str = ""
    min_score: int | None = None
    max_score: int | None = None
    rating_kind: str = ""
    """"score", "thumb", "label", "" for any, or another string for a value that is none."""
    label: str = ""
    has_text: bool | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InteractionSelection:
    """The filters of ListInteractions and ExportInteractions."""

    conversation_id: str = ""
    message_id: str = ""
    user_id: str = ""
    model: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventSelection:
    """The filters of ListEvents and ExportEvents."""

    user_id: str = ""
    event_type: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None


SelectionT = TypeVar("SelectionT", FeedbackSelection, InteractionSelection, EventSelection)


@dataclass(frozen=True, slots=True, kw_only=True)
class PageRequest(Generic[SelectionT]):
    """One page of a List method (AIP-132, AIP-158)."""

    selection: SelectionT
    page_size: int = 0
    page_token: str = ""
    order_by: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportRequest(Generic[SelectionT]):
    """A whole Export stream, or the rest of one after `resume_token`."""

    selection: SelectionT
    order_by: str = ""
    resume_token: str = ""
