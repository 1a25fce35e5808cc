"""Protobuf wire bytes built by hand: the malformed requests a generated client never sends."""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st

from tests.fuzz.strategies import messages

VARINT, FIXED64, LENGTH_DELIMITED, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5

BAD_UTF8 = (
    b"\xc3\x28",  # a lead byte without its continuation
    b"\xff",
    b"\x80",  # a lone continuation byte
    b"\xc0\xaf",  # overlong '/'
    b"\xed\xa0\x80",  # a UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"ok\xe2\x82",  # truncated euro sign at the end
)
PROTOBUF_DEPTH_LIMIT = 100
"""upb's default recursion limit: deeper messages do not decode."""


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer (any size, even beyond 64 bits)."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    """A field key."""
    return varint(number << 3 | wire_type)


def delimited(number: int, body: bytes) -> bytes:
    """A length-delimited field: a string, bytes or an embedded message."""
    return tag(number, LENGTH_DELIMITED) + varint(len(body)) + body


def nested(path: tuple[int, ...], body: bytes) -> bytes:
    """`body` as the innermost of embedded messages along field numbers `path`."""
    for number in reversed(path):
        body = delimited(number, body)
    return body


def deep_struct(levels: int) -> bytes:
    """A Struct body {"a": {"a": ... {}}} with `levels` Structs in all."""
    body = b""
    for _ in range(levels - 1):
        value = delimited(5, body)  # Value.struct_value
        entry = delimited(1, b"a") + delimited(2, value)  # map entry key, value
        body = delimited(1, entry)  # Struct.fields
    return body


def deep_groups(levels: int, number: int = 999) -> bytes:
    """Unknown groups nested `levels` deep: parsers must recurse to skip them."""
    return tag(number, START_GROUP) * levels + tag(number, END_GROUP) * levels


def field_paths(
    descriptor: Descriptor, wanted: type[object] | str, prefix: tuple[int, ...] = (), depth: int = 0
) -> Iterator[tuple[tuple[int, ...], FieldDescriptor]]:
    """Paths (field numbers from the top) to every string field, or to every field of a message
    type named by `wanted`, through embedded request messages (not into well-known types)."""
    if depth > 3:
        return
    for field in descriptor.fields:
        path = (*prefix, field.number)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            assert field.message_type is not None
            if field.message_type.full_name == wanted:
                yield path, field
            elif not field.message_type.full_name.startswith("google."):
                yield from field_paths(field.message_type, wanted, path, depth + 1)
        elif wanted is str and field.type == FieldDescriptor.TYPE_STRING:
            yield path, field


def named_malformations(descriptor: Descriptor) -> dict[str, bytes]:
    """One request of each kind of damage, for a message type; every one fails to decode."""
    strings = list(field_paths(descriptor, str))
    structs = list(field_paths(descriptor, "google.protobuf.Struct"))
    string_path = strings[0][0] if strings else (1,)
    cases = {
        "truncated length-delimited field": nested(string_path, b"abc")[:-1],
        "length beyond the message": tag(string_path[0], LENGTH_DELIMITED) + varint(2**40) + b"x",
        "eleven-byte varint": tag(string_path[0], VARINT) + b"\xff" * 10 + b"\x01",
        "unterminated varint": tag(1, VARINT) + b"\xff\xff\xff",
        "field number zero": tag(0, VARINT) + b"\x01",
        "end group without a start": tag(7, END_GROUP),
        "invalid wire type 6": tag(1, 6) + b"\x00",
        "invalid wire type 7": tag(1, 7) + b"\x00",
        "unknown groups nested beyond the limit": deep_groups(PROTOBUF_DEPTH_LIMIT + 10),
        "random bytes": bytes.fromhex("ffffffff0f0b0c1a99"),
    }
    if strings:
        cases["string field that is not UTF-8"] = nested(string_path, BAD_UTF8[0])
        cases["wrong wire type for a string field"] = nested(
            string_path[:-1], tag(string_path[-1], START_GROUP)
        )
    if structs:
        path = structs[0][0]
        cases["Struct nested beyond the limit"] = nested(path, deep_struct(PROTOBUF_DEPTH_LIMIT))
    return cases


def malformed_bytes(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """Bytes that are usually not a valid encoding of the message type (sometimes they are)."""
    valid = messages(descriptor).map(lambda message: message.SerializeToString())
    strings = [path for path, _ in field_paths(descriptor, str)]
    structs = [path for path, _ in field_paths(descriptor, "google.protobuf.Struct")]
    options = [
        st.binary(max_size=64),
        valid.flatmap(_truncated),
        valid.flatmap(_corrupted),
        st.sampled_from(list(named_malformations(descriptor).values())),
        st.tuples(st.integers(1, 40), st.integers(0, 7), st.binary(max_size=12)).map(
            lambda parts: tag(parts[0], parts[1]) + parts[2]
        ),
    ]
    if strings:
        options.append(
            st.tuples(st.sampled_from(strings), st.sampled_from(BAD_UTF8)).map(
                lambda pair: nested(pair[0], pair[1])
            )
        )
    if structs:
        options.append(
            st.tuples(st.sampled_from(structs), st.integers(20, 400)).map(
                lambda pair: nested(pair[0], deep_struct(pair[1]))
            )
        )
    return st.one_of(options)


def _truncated(data: bytes) -> st.SearchStrategy[bytes]:
    if not data:
        return st.just(b"\x0a")
    return st.integers(0, len(data) - 1).map(lambda end: data[:end])


def _corrupted(data: bytes) -> st.SearchStrategy[bytes]:
    if not data:
        return st.just(b"\xff")
    return st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)).map(
        lambda change: data[: change[0]] + bytes([change[1]]) + data[change[0] + 1 :]
    )
