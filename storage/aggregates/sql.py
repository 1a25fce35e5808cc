"""The driver-level SQL the aggregates run: dialect, placeholders, IN lists, times, chunks.

Aggregates run plain statements through the caller's connection (inside its transaction) rather
than SQLAlchemy constructs: a GetStats or a batch's rollup upkeep is a handful of statements, and
building them as text costs a fraction of compiling expressions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from storage.calendar import epoch_microseconds, from_epoch_microseconds

Dialect = Literal["sqlite", "postgresql"]

Execute = Callable[[str, tuple[Any, ...]], Sequence[Sequence[Any]]]
"""Runs one driver-level statement with positional parameters and returns its rows (or [])."""

MAX_PARAMETERS: Mapping[Dialect, int] = {"sqlite": 32_766, "postgresql": 65_535}


class SqlTarget:
    """Where aggregate SQL runs: a driver-level execute inside the caller's transaction."""

    __slots__ = ("dialect", "execute", "mark")

    def __init__(self, execute: Execute, dialect: Dialect) -> None:
        """Run statements through `execute`; `dialect` picks the placeholder style."""
        self.execute = execute
        self.dialect = dialect
        self.mark = "?" if dialect == "sqlite" else "%s"

    def query(self, sql: str, parameters: Iterable[Any]) -> Sequence[Sequence[Any]]:
        """The rows of one statement."""
        return self.execute(sql, tuple(parameters))

    def in_list(self, column: str, values: Iterable[Any]) -> tuple[str, list[Any]]:
        """`column IN (...)` over the values, with its parameters (one array on PostgreSQL)."""
        listed = list(values)
        if self.dialect == "sqlite":
            return f"{column} IN ({', '.join('?' * len(listed))})", listed
        return f"{column} = ANY(%s)", [listed]

    def time_parameter(self, microseconds: int) -> Any:
        """A parameter compared with a raw time column: SQLite's stored text, or a time."""
        moment = from_epoch_microseconds(microseconds)
        if self.dialect == "sqlite":
            # The fixed-width text the SQLite DateTime column stores, so text order is time order.
            return moment.replace(tzinfo=None).isoformat(" ", "microseconds")
        return moment

    @staticmethod
    def time_value(value: Any) -> int:
        """Epoch microseconds of a raw time column's value as the driver returns it."""
        if isinstance(value, str):
            return epoch_microseconds(datetime.fromisoformat(value).replace(tzinfo=UTC))
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return epoch_microseconds(value)

    def chunks(
        self, width: int, rows: Sequence[tuple[Any, ...]]
    ) -> Iterable[Sequence[tuple[Any, ...]]]:
        """The rows cut into statements that stay under the driver's parameter limit."""
        per_statement = max(1, MAX_PARAMETERS[self.dialect] // width)
        for start in range(0, len(rows), per_statement):
            yield rows[start : start + per_statement]

    def values(self, width: int, rows: int) -> str:
        """`(?, ?), (?, ?)`: placeholders of `rows` rows of `width` values."""
        row = "(" + ", ".join([self.mark] * width) + ")"
        return ", ".join([row] * rows)
