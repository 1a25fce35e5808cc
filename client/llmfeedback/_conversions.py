"""Conversions between plain Python values and the protobuf well-known types the contract uses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from google.protobuf import struct_pb2, timestamp_pb2

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["to_struct", "to_timestamp"]


def to_timestamp(value: datetime, *, name: str) -> timestamp_pb2.Timestamp:
    """Convert an aware datetime to a Timestamp; `name` labels the argument in errors."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    # A naive datetime could mean local time or UTC; guessing would shift records by hours.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, for example datetime.now(timezone.utc)")
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromDatetime(value.astimezone(UTC))
    return timestamp


def to_struct(value: Mapping[str, Any], *, name: str) -> struct_pb2.Struct:
    """Convert a JSON-like mapping to a Struct; `name` labels the argument in errors.

    JSON has one number type, so integers come back from the server as floats.
    """
    struct = struct_pb2.Struct()
    try:
        struct.update(value)
    except (TypeError, ValueError, AttributeError) as error:
        raise TypeError(
            f"{name} must be a mapping of str keys to JSON values "
            f"(None, bool, int, float, str, list, dict): {error}"
        ) from error
    return struct
