"""Watch positions: where a live tail stands in one kind's change log, as opaque tokens.

A position is (number, id): every record of the kind committed in change log entries up to
`number` has been delivered, those of entry `number` itself up to id `id` (WHOLE: all of it).
Numbers follow commit order across replicas (storage.rows.changes), so one position means the
same on every replica of a database; the token names the database's epoch and the kind, so it
is never taken to another database or kind.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

WHOLE = 2**63 - 1
"""The id of a position at the end of its entry."""
KINDS = ("feedback", "interactions", "events")
_VERSION = 1
_EPOCH_BYTES = 8
_TOKEN_BYTES = 2 + _EPOCH_BYTES + 8 + 8
MAX_TOKEN_CHARS = 64


class InvalidPosition(ValueError):
    """A position token that is malformed, or names another kind or another database."""


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A point in one kind's change log; positions compare in delivery order."""

    seq: int
    row_id: int = WHOLE

    @property
    def whole(self) -> bool:
        """Whether the position is at the end of its entry."""
        return self.row_id == WHOLE


@dataclass(frozen=True, slots=True)
class Positions:
    """Encodes and decodes the position tokens of one kind on one database."""

    kind: str
    epoch: str
    """The database's epoch, 16 hex digits (storage.records.LogState.epoch)."""

    def __post_init__(self) -> None:
        self._prefix()  # fails early on a kind or epoch no token could carry

    def _prefix(self) -> bytes:
        return bytes((_VERSION, KINDS.index(self.kind))) + bytes.fromhex(self.epoch)

    def encode(self, position: Position) -> str:
        """The token of `position`."""
        raw = self._prefix() + position.seq.to_bytes(8, "big") + position.row_id.to_bytes(8, "big")
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def decode(self, token: str) -> Position:
        """The position of `token`; raises InvalidPosition."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidPosition("is not a watch position issued by this service")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError) as error:
            raise InvalidPosition("is not a watch position issued by this service") from error
        if len(raw) != _TOKEN_BYTES or raw[0] != _VERSION or raw[1] >= len(KINDS):
            raise InvalidPosition("is not a watch position issued by this service")
        if KINDS[raw[1]] != self.kind:
            raise InvalidPosition(f"is a position of {KINDS[raw[1]]}, not of {self.kind}")
        if raw[2 : 2 + _EPOCH_BYTES] != bytes.fromhex(self.epoch):
            raise InvalidPosition(
                "was issued by a server of another database (or one whose change log was recreated)"
            )
        seq = int.from_bytes(raw[10:18], "big")
        row_id = int.from_bytes(raw[18:26], "big")
        if row_id > WHOLE or seq > WHOLE:
            raise InvalidPosition("is not a watch position issued by this service")
        return Position(seq, row_id)
