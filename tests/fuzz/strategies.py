"""Hypothesis strategies for every FeedbackService request, built from the protobuf descriptors.

Every field of every request message is generated, so a field added to the protos is fuzzed
without touching this module. Values mix what a careless or hostile client sends (Unicode edge
cases, SQL fragments, extreme numbers and times, unknown enum numbers) with values the server
accepts, drawn from small pools so that writes meet each other (duplicate message ids, feedback
on a recorded conversation) instead of being rejected at the first rule.
"""

from __future__ import annotations

import string
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from google.protobuf import message_factory, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, OneofDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from server.service.validation import CONVERSATION_ID, EVENT_TYPE, IDENTIFIER, MODEL_NAME

SQL_INJECTIONS = (
    "'; DROP TABLE feedback; --",
    '" OR 1=1 --',
    "' OR ''='",
    "1; DELETE FROM events",
    "\\",
    "\\'",
    "\\\\'; --",
    "%s",
    "%(text)s",
    "%%",
    "?",
    ":name",
    "$1",
    "_%",
    "/* */",
    "`",
    "\\x00",
    "\\u0000",
)
"""Text that breaks queries built by string formatting, or LIKE patterns left unescaped."""

UNICODE_EDGES = (
    "\x00",
    "a\x00b",
    "😀",
    "👩‍👩‍👧‍👦",
    "🏳️‍🌈",
    "\u200f",  # right-to-left mark
    "\u202eevil",  # right-to-left override
    "שלום",
    "مرحبا",
    "e\u0301",  # e + combining acute
    "a" + "\u0300" * 40,  # a stack of combining marks
    "\uffff",
    "\ufffe",
    "\ufeff",  # byte order mark
    "\U0010ffff",
    "\u2028\u2029",
    "\r\n\t\x0b\x0c",
    "\x7f\x1b[31m",
    "İı",
    "ß",
    "ﬃ",
    "Ω",
    "\U0001d573\U0001d58a\U0001d591\U0001d591\U0001d594",  # fraktur "Hello"
    "null",
    "None",
    "",
    " ",
)
"""Characters that storage, collation, case folding or display get wrong."""

_EDGE_TEXT = st.sampled_from(SQL_INJECTIONS + UNICODE_EDGES)
_PIECES = st.one_of(_EDGE_TEXT, st.text(max_size=6), st.sampled_from(string.ascii_letters))


def tricky_text(*, long: bool = True) -> st.SearchStrategy[str]:
    """Strings a hostile client sends: edge cases, SQL, random Unicode, and sometimes very long."""
    options = [
        _EDGE_TEXT,
        st.text(max_size=30),
        st.lists(_PIECES, max_size=6).map("".join),
    ]
    if long:
        options.append(
            st.tuples(st.sampled_from(["x", "é", "😀", "'", "\x00"]), st.sampled_from(LENGTHS)).map(
                lambda pair: pair[0] * pair[1]
            )
        )
    return st.one_of(options)


LENGTHS = (63, 64, 65, 127, 128, 129, 1999, 2000, 2001, 20_000, 70_000)
"""Lengths around every documented character and byte limit."""


CONVERSATIONS = ("c1", "c2", "conv-3")
MESSAGES = ("m1", "m2", "msg.3@x")
USERS = ("u1", "u2", "user:3")


def _identifiers(pattern: Any, pool: tuple[str, ...]) -> st.SearchStrategy[str]:
    """Valid values, often from a small pool so that writes meet each other."""
    return st.one_of(st.sampled_from(pool), st.from_regex(pattern, fullmatch=True))


_HEX_DIGEST = st.text("0123456789abcdefABCDEF", min_size=64, max_size=64)
_BAD_TOKENS = st.sampled_from(["eyJjIjoxLCJmIjoiIn0", "eyJjIjotMX0", "====", "e30", "\x00"])

VALID_STRINGS: dict[str, st.SearchStrategy[str]] = {
    "conversation_id": _identifiers(CONVERSATION_ID, CONVERSATIONS),
    "message_id": _identifiers(IDENTIFIER, MESSAGES),
    "user_id": _identifiers(IDENTIFIER, USERS),
    "event_id": _identifiers(IDENTIFIER, ("e1", "e2")),
    "model": _identifiers(MODEL_NAME, ("gpt-4o", "claude/3.5")),
    "event_type": _identifiers(EVENT_TYPE, ("page_view", "click")),
    "label": st.sampled_from(["positive", "NEGATIVE", " good ", "bad", "neutral"]),
    "input_hash": _HEX_DIGEST,
    "output_hash": _HEX_DIGEST,
    "request_id": st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper())),
    "order_by": st.sampled_from(["", "create_time desc", "create_time asc", "create_time DESC"]),
    "page_token": st.just(""),
    "resume_token": st.just(""),
}
"""What the server accepts, for string fields with a rule, by field name in any message."""

FREE_TEXT = tricky_text(long=False).filter(lambda text: "\x00" not in text)
"""Strings a field without a character rule must store verbatim."""

HOSTILE_STRINGS: dict[str, st.SearchStrategy[str]] = {
    "input_hash": st.text("0123456789abcdef", min_size=63, max_size=65),
    "output_hash": st.text("0123456789abcdef", min_size=63, max_size=65),
    "order_by": st.sampled_from(["id", "create_time", "create_time sideways", "create_time  asc"]),
    "page_token": _BAD_TOKENS,
    "resume_token": _BAD_TOKENS,
}
"""Near misses of a rule, by field name."""


def _integers(bits: int, *, signed: bool) -> st.SearchStrategy[int]:
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    edges = (0, 1, 5, 6, -1, 999, 1000, 1001, 2**31 - 1, 2**31, low, high)
    return st.one_of(
        st.sampled_from([v for v in edges if low <= v <= high]),
        st.integers(max(low, -3), 10),
        st.integers(low, high),
    )


_DOUBLES = st.one_of(
    st.sampled_from([0.0, -0.0, 1.5, 86_400_000.0, 86_400_000.5, 5e-324, 1e308, -1.0]),
    st.floats(),
)

_INTEGER_KINDS: dict[int, st.SearchStrategy[int]] = {
    FieldDescriptor.TYPE_INT32: _integers(32, signed=True),
    FieldDescriptor.TYPE_SINT32: _integers(32, signed=True),
    FieldDescriptor.TYPE_SFIXED32: _integers(32, signed=True),
    FieldDescriptor.TYPE_INT64: _integers(64, signed=True),
    FieldDescriptor.TYPE_SINT64: _integers(64, signed=True),
    FieldDescriptor.TYPE_SFIXED64: _integers(64, signed=True),
    FieldDescriptor.TYPE_UINT32: _integers(32, signed=False),
    FieldDescriptor.TYPE_FIXED32: _integers(32, signed=False),
    FieldDescriptor.TYPE_UINT64: _integers(64, signed=False),
    FieldDescriptor.TYPE_FIXED64: _integers(64, signed=False),
}

# ---- well-known types ----

_SECONDS = st.one_of(
    st.sampled_from(
        [
            0,
            -1,
            1_800_000_000,  # 2027: within a day of now, or just beyond
            4_102_444_800,  # 2100
            253_402_300_799,  # 9999-12-31T23:59:59Z, the last valid Timestamp
            253_402_300_800,
            -62_135_596_800,  # 0001-01-01T00:00:00Z, the first valid Timestamp
            -62_135_596_801,
            2**63 - 1,
            -(2**63),
        ]
    ),
    st.integers(1_600_000_000, 1_900_000_000),
    st.integers(-(2**63), 2**63 - 1),
)
_NANOS = st.one_of(
    st.sampled_from([0, 999_999_999, 1_000_000_000, -1, 2**31 - 1, -(2**31)]),
    st.integers(0, 999_999_999),
    st.integers(-(2**31), 2**31 - 1),
)


def timestamps() -> st.SearchStrategy[timestamp_pb2.Timestamp]:
    """Timestamps, valid or not: extreme seconds, nanos out of range, before 1970, far ahead."""
    return st.builds(timestamp_pb2.Timestamp, seconds=_SECONDS, nanos=_NANOS)


def recent_timestamps() -> st.SearchStrategy[timestamp_pb2.Timestamp]:
    """Valid times in the last 30 days."""
    now = int(time.time())
    return st.builds(
        timestamp_pb2.Timestamp,
        seconds=st.integers(now - 30 * 86_400, now),
        nanos=st.integers(0, 999_999_999),
    )


JsonValue = None | bool | float | str | list[Any] | dict[str, Any]


def json_values(*, finite: bool = False, no_nul: bool = False) -> st.SearchStrategy[JsonValue]:
    """JSON values as a Struct can carry them: numbers are doubles."""
    text = tricky_text(long=False)
    if no_nul:
        text = text.filter(lambda s: "\x00" not in s)
    numbers = st.one_of(
        st.floats(allow_nan=not finite, allow_infinity=not finite),
        st.integers(-(2**53), 2**53).map(float),
    )
    scalars = st.one_of(st.none(), st.booleans(), numbers, text)
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)
        ),
        max_leaves=16,
    )


def json_objects(
    *, finite: bool = False, no_nul: bool = False
) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects for metadata and details; sometimes at the size, count or depth limits."""
    text = tricky_text(long=False)
    if no_nul:
        text = text.filter(lambda s: "\x00" not in s)
    small = st.dictionaries(text, json_values(finite=finite, no_nul=no_nul), max_size=5)
    if finite:
        return small
    return st.one_of(
        small,
        small,
        small,
        st.sampled_from([999, 1000, 1001]).map(lambda n: {f"k{i}": None for i in range(n)}),
        st.sampled_from([999, 1000]).map(lambda n: {"list": list(range(n))}),
        st.integers(8, 30).map(nested_object),
        st.sampled_from([16 * 1024, 32 * 1024]).flatmap(
            lambda size: st.integers(size - 40, size + 40).map(lambda n: {"pad": "x" * n})
        ),
    )


def nested_object(depth: int) -> dict[str, Any]:
    """An object with `depth` levels of objects (counting itself) around a number."""
    value: Any = 1
    for _ in range(depth):
        value = {"next": value}
    return value  # type: ignore[no-any-return]


def struct_of(value: dict[str, Any]) -> struct_pb2.Struct:
    """A JSON object as a Struct."""
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def _is_synthetic(oneof: OneofDescriptor) -> bool:
    """Whether protoc made this oneof for a proto3 `optional` field."""
    return len(oneof.fields) == 1 and oneof.name == "_" + oneof.fields[0].name


# ---- messages from descriptors ----


def messages(descriptor: Descriptor) -> st.SearchStrategy[Message]:
    """Any instance of the message type: hostile or plausible, each field set or not."""
    return st.one_of(_messages(descriptor, plausible=False), _messages(descriptor, plausible=True))


def plausible_messages(descriptor: Descriptor) -> st.SearchStrategy[Message]:
    """Instances the server is likely to accept: valid identifiers, times and numbers, any text."""
    return _messages(descriptor, plausible=True)


@cache
def _messages(descriptor: Descriptor, *, plausible: bool) -> st.SearchStrategy[Message]:
    """Each field set or not, one member of each oneof or none (always one when plausible)."""
    if descriptor.full_name == "google.protobuf.Struct":
        objects = json_objects(finite=True, no_nul=True) if plausible else json_objects()
        return objects.map(struct_of)
    if descriptor.full_name == "google.protobuf.Timestamp":
        return recent_timestamps() if plausible else timestamps()
    message_class = message_factory.GetMessageClass(descriptor)
    plain = {
        field.name: _field_values(field, plausible)
        for field in descriptor.fields
        if field.containing_oneof is None or _is_synthetic(field.containing_oneof)
    }
    choices = [
        st.one_of(
            *([] if plausible else [st.none()]),
            *(st.tuples(st.just(f.name), _field_values(f, plausible)) for f in oneof.fields),
        )
        for oneof in descriptor.oneofs
        if not _is_synthetic(oneof)
    ]
    return st.builds(
        _assemble(message_class),
        st.fixed_dictionaries({}, optional=plain),
        st.tuples(*choices),
    )


def _assemble(
    message_class: type[Message],
) -> Callable[[dict[str, Any], tuple[tuple[str, Any] | None, ...]], Message]:
    def build(values: dict[str, Any], chosen: tuple[tuple[str, Any] | None, ...]) -> Message:
        message = message_class()
        for name, value in [*values.items(), *(c for c in chosen if c is not None)]:
            _set(message, message.DESCRIPTOR.fields_by_name[name], value)
        return message

    return build


def _set(message: Message, field: Any, value: Any) -> None:
    target = getattr(message, field.name)
    if field.is_repeated:
        target.extend(value)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


def _field_values(field: FieldDescriptor, plausible: bool) -> st.SearchStrategy[Any]:
    single = _single_values(field, plausible)
    if field.is_repeated:
        return st.lists(single, min_size=1 if plausible else 0, max_size=4)
    return single


def _single_values(field: FieldDescriptor, plausible: bool) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return st.deferred(lambda: _messages(field.message_type, plausible=plausible))
    if kind == FieldDescriptor.TYPE_STRING:
        valid = VALID_STRINGS.get(field.name, FREE_TEXT)
        if plausible:
            return valid
        return st.one_of(valid, HOSTILE_STRINGS.get(field.name, valid), tricky_text())
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        known = [value.number for value in field.enum_type.values]
        if plausible:
            return st.sampled_from(known[1:] or known)
        return st.one_of(st.sampled_from(known), st.integers(-(2**31), 2**31 - 1))
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if plausible:
            return st.floats(0, 10_000)
        return _DOUBLES if kind == FieldDescriptor.TYPE_DOUBLE else st.floats(width=32)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=16)
    if plausible:
        return st.integers(1, 5)
    return _INTEGER_KINDS[kind]
