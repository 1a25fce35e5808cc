"""Filters of the list, iter and export methods, and what an export yields.

One TypedDict per kind of record names its filters once for all three methods; the same keyword
arguments build a List request and an Export request.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, NamedTuple, TypedDict, TypeVar

from ._conversions import to_timestamp
from .proto.feedback.v1 import event_pb2, feedback_pb2, feedback_service_pb2, interaction_pb2

if TYPE_CHECKING:
    from datetime import datetime

__all__ = [
    "EventFilters",
    "ExportChunk",
    "FeedbackFilters",
    "InteractionFilters",
    "Order",
    "RatingKind",
    "UserDataKind",
    "UserRecord",
    "filter_fields",
    "list_request",
    "order_by",
    "user_records",
]

Order = Literal["newest_first", "oldest_first"]
"""Listing order; ids grow in storage order, so this is the order of storing."""

RatingKind = Literal["score", "thumb", "label"]

RecordT_co = TypeVar("RecordT_co", covariant=True)
ListRequestT = TypeVar(
    "ListRequestT",
    feedback_service_pb2.ListFeedbackRequest,
    feedback_service_pb2.ListInteractionsRequest,
    feedback_service_pb2.ListEventsRequest,
)

_ORDER_BY: dict[str | None, str] = {
    None: "",
    "newest_first": "create_time desc",
    "oldest_first": "create_time asc",
}
_RATING_KINDS = {
    "score": feedback_pb2.RATING_KIND_SCORE,
    "thumb": feedback_pb2.RATING_KIND_THUMB,
    "label": feedback_pb2.RATING_KIND_LABEL,
}
_TIMES = frozenset({"start_time", "end_time"})


class FeedbackFilters(TypedDict, total=False):
    """Filters of `list_feedback`, `iter_feedback` and `export_feedback`; they combine with AND.

    None (or leaving a filter out) means any. `min_score` and `max_score` are inclusive (1-5)
    and select scored feedback only; `label` selects label feedback, compared lower case;
    `has_text` True keeps feedback with text, False feedback without. The time range is by
    create_time: `start_time` included, `end_time` excluded; both timezone-aware.
    """

    conversation_id: str | None
    message_id: str | None
    user_id: str | None
    model: str | None
    min_score: int | None
    max_score: int | None
    rating_kind: RatingKind | None
    label: str | None
    has_text: bool | None
    start_time: datetime | None
    end_time: datetime | None


class InteractionFilters(TypedDict, total=False):
    """Filters of `list_interactions`, `iter_interactions` and `export_interactions`.

    The time range is by occur_time, `start_time` included and `end_time` excluded.
    """

    conversation_id: str | None
    message_id: str | None
    user_id: str | None
    model: str | None
    start_time: datetime | None
    end_time: datetime | None


class EventFilters(TypedDict, total=False):
    """Filters of `list_events`, `iter_events` and `export_events`.

    The time range is by event_time, `start_time` included and `end_time` excluded.
    """

    user_id: str | None
    event_type: str | None
    start_time: datetime | None
    end_time: datetime | None


class ExportChunk(NamedTuple, Generic[RecordT_co]):
    """One chunk of an export: up to 1000 records and the token that resumes right after them.

    Store `resume_token` once the records are safely processed; passing it as `resume_token`
    to the same export (same filters and order) continues with no gap and no repeat.
    """

    records: Sequence[RecordT_co]
    resume_token: str


UserDataKind = Literal["interaction", "feedback", "replaced_vote", "event"]
"""What a record of a user's data export is: an interaction, a current feedback, a vote a newer
one replaced, or an analytics event."""

_USER_DATA_FIELDS: dict[str, UserDataKind] = {
    "interactions": "interaction",
    "feedback": "feedback",
    "replaced_votes": "replaced_vote",
    "events": "event",
}
"""Each field of ExportUserDataResponse, in the order the server streams them, and its kind."""


class UserRecord(NamedTuple):
    """One record of a user's data export (`export_user_data`), tagged with its kind.

    `record` is an `Interaction` for "interaction", a `Feedback` for "feedback" and
    "replaced_vote" (with `replace_time` and `replaced_by_id` set), an `Event` for "event".
    """

    kind: UserDataKind
    record: interaction_pb2.Interaction | feedback_pb2.Feedback | event_pb2.Event


def user_records(response: feedback_service_pb2.ExportUserDataResponse) -> Iterator[UserRecord]:
    """The records of one ExportUserData message, each tagged with its kind."""
    for field, kind in _USER_DATA_FIELDS.items():
        for record in getattr(response, field):
            yield UserRecord(kind, record)


def watch_filter_fields(filters: Mapping[str, Any], kind: type[Any]) -> dict[str, Any]:
    """filter_fields for a watch, which has no time range (TypeError for one)."""
    timed = sorted(name for name in _TIMES if filters.get(name) is not None)
    if timed:
        raise TypeError(f"a watch has no time range: leave out {', '.join(timed)}")
    return filter_fields({k: v for k, v in filters.items() if k not in _TIMES}, kind)


def filter_fields(filters: Mapping[str, Any], kind: type[Any]) -> dict[str, Any]:
    """Request fields for the filters of one kind (a TypedDict above), leaving out the Nones.

    Raises TypeError for a filter the kind does not have and ValueError for a bad value, so no
    call is made for them.
    """
    allowed: frozenset[str] = kind.__optional_keys__
    unknown = sorted(set(filters) - allowed)
    if unknown:
        raise TypeError(
            f"unexpected filter {', '.join(unknown)}; the filters are {', '.join(sorted(allowed))}"
        )
    fields: dict[str, Any] = {}
    for name, value in filters.items():
        if value is None:
            continue
        if name in _TIMES:
            fields[name] = to_timestamp(value, name=name)
        elif name == "rating_kind":
            if value not in _RATING_KINDS:
                raise ValueError(
                    f"rating_kind must be one of {sorted(_RATING_KINDS)}, not {value!r}"
                )
            fields[name] = _RATING_KINDS[value]
        else:
            fields[name] = value
    return fields


def list_request(
    request_type: type[ListRequestT],
    kind: type[Any],
    filters: Mapping[str, Any],
    *,
    page_size: int,
    page_token: str = "",
    order: Order | None,
) -> ListRequestT:
    """A List request of `request_type` for the filters of `kind` (see filter_fields)."""
    return request_type(
        **filter_fields(filters, kind),
        page_size=page_size,
        page_token=page_token,
        order_by=order_by(order),
    )


def order_by(order: Order | None) -> str:
    """The order_by value of a listing order (None: the method's default)."""
    if order not in _ORDER_BY:
        raise ValueError(f'order must be "newest_first" or "oldest_first", not {order!r}')
    return _ORDER_BY[order]
