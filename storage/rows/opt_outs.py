"""Opted-out users in the database, as hashes of their ids, with the record of every choice."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.records import OPT_IN, OPT_OUT, OptOutEventRecord, OptOutRecord, Subject
from storage.rows.erasure_log import close_gate
from storage.schema.models import OptOutEventRow, OptOutRow


class OptOuts:
    """The opt-out tables, through one session whose transaction the caller owns.

    Changes go through the erasure gate (storage.rows.erasure_log.close_gate), so no write
    transaction that read the opt-outs before a change commits after it: every write committed
    after an opt-out is suppressed.
    """

    def __init__(self, session: Session) -> None:
        self._session = session

    def opt_out(
        self, user: Subject, requested_by: str, now: datetime, *, erase: bool
    ) -> OptOutRecord:
        """Mark the user opted out (an opted-out user stays as they were) and record the choice."""
        close_gate(self._session)
        self._record(user, OPT_OUT, requested_by, now, erase=erase)
        row = self._session.get(OptOutRow, user.hash)
        if row is None:
            row = OptOutRow(
                user_hash=user.hash,
                hash_kind=user.hash_kind,
                opt_out_time=now,
                requested_by=requested_by,
            )
            self._session.add(row)
            self._session.flush()
        return _record(row)

    def opt_in(self, user: Subject, requested_by: str, now: datetime) -> bool:
        """Take the user's writes again and record the choice; whether they had opted out."""
        close_gate(self._session)
        self._record(user, OPT_IN, requested_by, now, erase=False)
        deleted = self._session.execute(delete(OptOutRow).where(OptOutRow.user_hash == user.hash))
        return bool(getattr(deleted, "rowcount", 0))

    def get(self, user: Subject) -> OptOutRecord | None:
        """The user's opt-out, if they opted out."""
        row = self._session.get(OptOutRow, user.hash)
        return None if row is None else _record(row)

    def events(self, user: Subject, limit: int) -> list[OptOutEventRecord]:
        """The user's newest `limit` choices, newest first."""
        rows = self._session.scalars(
            select(OptOutEventRow)
            .where(OptOutEventRow.user_hash == user.hash)
            .order_by(OptOutEventRow.id.desc())
            .limit(limit)
        )
        return [
            OptOutEventRecord(
                action=row.action,
                event_time=row.event_time,
                requested_by=row.requested_by,
                erase_requested=row.erase_requested,
            )
            for row in rows
        ]

    def _record(
        self, user: Subject, action: str, requested_by: str, now: datetime, *, erase: bool
    ) -> None:
        self._session.add(
            OptOutEventRow(
                user_hash=user.hash,
                hash_kind=user.hash_kind,
                action=action,
                event_time=now,
                requested_by=requested_by,
                erase_requested=erase,
            )
        )


def _record(row: OptOutRow) -> OptOutRecord:
    return OptOutRecord(
        user=Subject(kind="user", hash=row.user_hash, hash_kind=row.hash_kind),
        opt_out_time=row.opt_out_time,
        requested_by=row.requested_by,
    )
