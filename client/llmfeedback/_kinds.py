"""The machinery over the record kinds a client writes, each declared once as data (see _items).

A kind is its item dataclass, whose fields are the keyword arguments of the single-item method,
the batch items and the ingest lines, plus what the fields cannot say themselves: the request
message they fill, the rules between fields, and which field sent_time corrects. Everything that
moves values between Python and the messages (building and checking a request, reading one back
from an ingest line, wrapping items for a batch call or the Ingest stream) is written once here.
Each field says how it goes into the message with its Conversion (PLAIN unless it says otherwise).

Every write request gets its idempotency key (AIP-155 `request_id`) here, once, so whatever sends
it again (a retry, a re-sent batch item) sends the same key and the server stores it at most once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Generic, TypeVar

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from ._conversions import to_struct, to_timestamp
from ._request_ids import checked_request_id
from .proto.feedback.v1 import feedback_pb2

__all__ = [
    "PLAIN",
    "REQUEST_ID",
    "SCORE",
    "STRUCT",
    "THUMB",
    "TIME",
    "Conversion",
    "Kind",
    "converted",
]

ItemT = TypeVar("ItemT")
RequestT = TypeVar("RequestT", bound=Message)

_CONVERSION = "llmfeedback.conversion"
"""The key of a dataclass field's metadata that holds its Conversion."""


@dataclass(frozen=True)
class Conversion:
    """How one argument goes into a request field, and back from a request parsed from JSON."""

    into: Callable[[Message, str, Any], None]
    """Set field `name` of the request from the argument; raises TypeError/ValueError for a bad
    one. Called with every argument, None (not given) included."""
    out_of: Callable[[Any], Any] = lambda value: value
    """The argument a set request field stands for."""


def _assign(request: Message, name: str, value: Any) -> None:
    # Assigned only when given: assigning "" to a oneof member would select it.
    if value is not None:
        setattr(request, name, value)


def _copy_struct(request: Message, name: str, value: Any) -> None:
    if value is not None:
        getattr(request, name).CopyFrom(to_struct(value, name=name))


def _copy_time(request: Message, name: str, value: Any) -> None:
    if value is not None:
        getattr(request, name).CopyFrom(to_timestamp(value, name=name))


def _score(request: Message, name: str, value: Any) -> None:
    # bool is an int subclass; True must not silently become a score of 1.
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"score must be an int from 1 to 5, not {type(value).__name__}")
    _assign(request, name, value)


def _thumb(request: Message, name: str, value: Any) -> None:
    # A string such as "down" is truthy and would otherwise be sent as thumbs up.
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"thumb must be True (up) or False (down), not {value!r}")
    if value is not None:
        setattr(request, name, feedback_pb2.THUMB_UP if value else feedback_pb2.THUMB_DOWN)


def _thumb_argument(value: Any) -> bool:
    if value not in (feedback_pb2.THUMB_UP, feedback_pb2.THUMB_DOWN):
        raise ValueError('thumb must be "THUMB_UP" or "THUMB_DOWN"')
    return bool(value == feedback_pb2.THUMB_UP)


def _request_id(request: Message, name: str, value: Any) -> None:
    setattr(request, name, checked_request_id(value))


PLAIN = Conversion(_assign)
"""Strings, numbers and oneof members: set as given, left unset when None."""
STRUCT = Conversion(_copy_struct, json_format.MessageToDict)
"""A JSON-like mapping as a google.protobuf.Struct."""
TIME = Conversion(_copy_time, lambda value: value.ToDatetime(tzinfo=UTC))
"""An aware datetime as a google.protobuf.Timestamp."""
SCORE = Conversion(_score)
"""An int score, refusing a bool."""
THUMB = Conversion(_thumb, _thumb_argument)
"""True (up) or False (down) as the Thumb enum."""
REQUEST_ID = Conversion(_request_id)
"""The idempotency key: the caller's UUID, checked, or a new one when None."""


def converted(conversion: Conversion) -> dict[str, Conversion]:
    """The metadata of a dataclass field that goes into the request by `conversion`."""
    return {_CONVERSION: conversion}


@dataclass(frozen=True)
class Kind(Generic[ItemT, RequestT]):
    """One record kind a client writes: its item dataclass, request message and field rules."""

    name: str
    """The kind's name: its IngestItem member and the "kind" of an ingest line."""
    item_type: type[ItemT]
    """The item dataclass: its init fields are the kind's fields, in order."""
    request_type: type[RequestT]
    """The request message the fields fill."""
    batch_method: str
    """The FeedbackService method that takes a batch of these requests."""
    batch_type: type[Message]
    """The request message of `batch_method`."""
    batch_field: str
    """The field of `batch_type` that holds the item requests."""
    at_most_one: tuple[tuple[str, ...], ...] = ()
    """Groups of fields (members of one oneof) of which at most one may be given."""
    exactly_one: tuple[str, ...] = ()
    """Fields of which exactly one must be given."""
    happened: str | None = None
    """The field saying when the record happened, which sent_time corrects; None if none."""
    shrink: Callable[[RequestT], None] | None = None
    """Make a request too large for a batch item smaller, where that stores the same record."""

    @property
    def fields(self) -> tuple[dataclasses.Field[Any], ...]:
        """The kind's fields: the item's init fields, in order."""
        item_fields = dataclasses.fields(self.item_type)  # type: ignore[arg-type]
        return tuple(field for field in item_fields if field.init)

    @property
    def required(self) -> tuple[str, ...]:
        """The fields without a default: the positional arguments of the methods."""
        return tuple(field.name for field in self.fields if field.default is dataclasses.MISSING)

    def arguments(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The kind's fields taken from `values`, such as a method's locals()."""
        return {field.name: values[field.name] for field in self.fields}

    def request(self, values: Mapping[str, Any]) -> RequestT:
        """The request for the fields' values, with its request_id, checked as far as the client
        can: ValueError or TypeError for values that cannot form a valid request."""
        for group in self.at_most_one:
            if sum(values[name] is not None for name in group) > 1:
                raise ValueError(f"give at most one of {' or '.join(group)}, not both")
        if self.exactly_one:
            given = [name for name in self.exactly_one if values[name] is not None]
            if len(given) != 1:
                found = ", ".join(given) if given else "none"
                raise ValueError(
                    f"give exactly one of {', '.join(self.exactly_one[:-1])} or "
                    f"{self.exactly_one[-1]} (got {found})"
                )
        request = self.request_type()
        for field in self.fields:
            conversion: Conversion = field.metadata.get(_CONVERSION, PLAIN)
            conversion.into(request, field.name, values[field.name])
        return request

    def item_arguments(self, request: Message) -> dict[str, Any]:
        """The item arguments a request parsed from JSON stands for (absent required fields "",
        which the server names in its field violations like any other invalid field)."""
        conversions = {field.name: field.metadata.get(_CONVERSION, PLAIN) for field in self.fields}
        values: dict[str, Any] = dict.fromkeys(self.required, "")
        for descriptor, value in request.ListFields():
            values[descriptor.name] = conversions[descriptor.name].out_of(value)
        return values

    def batch_request(self, requests: Iterable[RequestT]) -> Message:
        """The batch call's request carrying copies of the item requests."""
        return self.batch_type(**{self.batch_field: requests})

    def stamp_sent_time(self, requests: Iterable[Any]) -> None:
        """Set sent_time to now on requests that report when they happened (none for a kind
        without such a field).

        Called on every attempt, just before sending: the server corrects the client's clock skew
        by the difference between sent_time and its receive time, so a stale one would shift the
        record by the retry delay. sent_time is not part of the content a request id is checked
        against.
        """
        if self.happened is None:
            return
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        for request in requests:
            if request.HasField(self.happened):
                request.sent_time.CopyFrom(now)
