"""How each column's value crosses the driver, per database: one codec for every raw-row path.

Group commit, lists and exports talk to the driver straight (SQLAlchemy's per-statement and
per-row machinery cost more than the SQL), so the conversions SQLAlchemy's column types would
make are declared here once, by column type, and applied to every table alike. Values stored
this way are exactly what the column types store, so reads cannot tell the difference.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal, NamedTuple

from sqlalchemy import JSON, Boolean, Table

from storage.engines import JSON_SERIALIZER
from storage.schema.column_types import UTCDateTime

Dialect = Literal["sqlite", "postgresql"]
Convert = Callable[[Any], Any]


class TypeCodec(NamedTuple):
    """One database's conversions of the three column types whose driver values differ."""

    encode_time: Convert
    decode_time: Convert
    encode_json: Convert
    decode_json: Convert
    encode_flag: Convert
    decode_flag: Convert


def _utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:  # the service's own clock: astimezone(UTC) would return it as is
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} has no time zone; pass UTC")
    return value.astimezone(UTC)


def _sqlite_time(value: datetime) -> str:
    # The text SQLAlchemy's SQLite DateTime stores: fixed width, so text order is time order.
    return _utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_time_value(text: str) -> datetime:
    # Appending the offset is several times cheaper than datetime.replace(tzinfo=UTC).
    return datetime.fromisoformat(text + "+00:00")


def _sqlite_json_value(text: str) -> dict[str, Any]:
    # Most rows carry no metadata; json.loads costs about 2 us even for "{}".
    if text == "{}":
        return {}
    value: dict[str, Any] = json.loads(text)
    return value


def _sqlite_flag(value: bool) -> int:
    return int(value)


def _sqlite_flag_value(value: int | None) -> bool | None:
    return None if value is None else value == 1


def _as_is(value: Any) -> Any:
    return value


def _postgres_time_value(value: datetime) -> datetime:
    return value.astimezone(UTC)


CODECS: dict[Dialect, TypeCodec] = {
    "sqlite": TypeCodec(
        encode_time=_sqlite_time,
        decode_time=_sqlite_time_value,
        encode_json=JSON_SERIALIZER,
        decode_json=_sqlite_json_value,
        encode_flag=_sqlite_flag,
        decode_flag=_sqlite_flag_value,
    ),
    # psycopg adapts aware datetimes and booleans, and decodes jsonb, itself; JSON text takes
    # the column's jsonb type in an INSERT.
    "postgresql": TypeCodec(
        encode_time=_utc,
        decode_time=_postgres_time_value,
        encode_json=JSON_SERIALIZER,
        decode_json=_as_is,
        encode_flag=_as_is,
        decode_flag=_as_is,
    ),
}
"""Per database, how its driver takes and gives times, JSON documents and flags."""

MARKS: dict[Dialect, str] = {"sqlite": "?", "postgresql": "%s"}
"""Per database, its driver's positional parameter mark."""


def _conversions(column_type: object, codec: TypeCodec) -> tuple[Convert | None, Convert | None]:
    """(encode, decode) for a column type; None where the driver's value is the value."""
    if isinstance(column_type, UTCDateTime):
        return codec.encode_time, codec.decode_time
    if isinstance(column_type, JSON):
        return codec.encode_json, codec.decode_json
    if isinstance(column_type, Boolean):
        return codec.encode_flag, codec.decode_flag
    return None, None


class TableCodec(NamedTuple):
    """A table's columns and, per column, how its values go to and come from one driver."""

    columns: tuple[str, ...]
    encoders: tuple[Convert | None, ...]
    decoders: tuple[Convert | None, ...]

    def decoded(self, row: Sequence[Any]) -> dict[str, Any]:
        """A driver row of all `columns`, in order, as the column types return it, by name."""
        return {
            name: value if decode is None or value is None else decode(value)
            for name, decode, value in zip(self.columns, self.decoders, row, strict=True)
        }


@cache
def table_codec(table: Table, dialect: Dialect) -> TableCodec:
    """The codec of every column of `table` on `dialect` (built once)."""
    codec = CODECS[dialect]
    pairs = [_conversions(column.type, codec) for column in table.columns]
    return TableCodec(
        tuple(column.name for column in table.columns),
        tuple(encode for encode, _ in pairs),
        tuple(decode for _, decode in pairs),
    )
