"""The erasure log in the database: who erased which hashed subject, when, and how many rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from storage.records import ErasedCounts, ErasureRecord, Subject
from storage.schema.models import ErasureRow

ERASURE_LOCK_SPACE = int.from_bytes(b"eras")
"""The first key of the erasure locks (pg_advisory_xact_lock's two-key space): with 0, the gate
between erasures starting and write transactions (storage.rows.repository.Rows.running_erasures);
with a subject's bucket, the claim that runs one batch of the subject's erasure at a time."""


def close_gate(session: Session) -> None:
    """Take the exclusive side of the erasure gate for the rest of the transaction (PostgreSQL):
    it waits for every write transaction that read the erasures and opt-outs, and every later one
    reads them after this transaction commits."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:space, 0)"), {"space": ERASURE_LOCK_SPACE}
        )


class ErasureLog:
    """The erasures table, through one session whose transaction the caller owns."""

    def __init__(self, session: Session, dialect: str) -> None:
        self._session = session
        self._postgresql = dialect == "postgresql"

    def begin(self, subject: Subject, requested_by: str, now: datetime) -> ErasureRecord:
        """The subject's erasure under way, or a new one: from its commit on, writes about the
        subject are refused.

        On PostgreSQL under the exclusive side of the erasure gate, so the commit waits for
        write transactions that checked for erasures before it, and their rows are there for
        the erasure to find.
        """
        close_gate(self._session)
        found = self.running(subject)
        if found is not None:
            return found
        row = ErasureRow(
            subject_kind=subject.kind,
            subject_hash=subject.hash,
            subject_hash_kind=subject.hash_kind,
            requested_by=requested_by,
            start_time=now,
            interactions_erased=0,
            feedback_erased=0,
            history_erased=0,
            events_erased=0,
            batches=0,
        )
        self._session.add(row)
        self._session.flush()
        return _record(row)

    def claim(self, subject: Subject) -> None:
        """Hold the subject's batch claim for the rest of the transaction (PostgreSQL), so two
        servers erasing one subject take turns and a batch that finds nothing left proves it:
        a locking read with LIMIT may skip rows another transaction was deleting."""
        if self._postgresql:
            bucket = int.from_bytes(bytes.fromhex(subject.hash)[:8]) % (2**31 - 1) + 1
            self._session.execute(
                text("SELECT pg_advisory_xact_lock(:space, :bucket)"),
                {"space": ERASURE_LOCK_SPACE, "bucket": bucket},
            )

    def running(self, subject: Subject) -> ErasureRecord | None:
        """The subject's erasure under way, if any."""
        row = self._session.scalars(
            select(ErasureRow).where(
                ErasureRow.subject_kind == subject.kind,
                ErasureRow.subject_hash == subject.hash,
                ErasureRow.finish_time.is_(None),
            ),
            execution_options={"populate_existing": True},
        ).first()
        return None if row is None else _record(row)

    def by_id(self, erasure_id: int) -> ErasureRecord | None:
        """One entry, if it exists."""
        row = self._session.get(ErasureRow, erasure_id, populate_existing=True)
        return None if row is None else _record(row)

    def count(self, erasure_id: int, erased: ErasedCounts) -> None:
        """Add one batch's rows to the entry's counts (in the batch's transaction)."""
        self._session.execute(
            update(ErasureRow)
            .where(ErasureRow.id == erasure_id)
            .values(
                interactions_erased=ErasureRow.interactions_erased + erased.interactions,
                feedback_erased=ErasureRow.feedback_erased + erased.feedback,
                history_erased=ErasureRow.history_erased + erased.history,
                events_erased=ErasureRow.events_erased + erased.events,
                batches=ErasureRow.batches + 1,
            )
        )

    def finish(self, erasure_id: int, now: datetime) -> None:
        """Mark the entry done: writes about its subject are taken again."""
        self._session.execute(
            update(ErasureRow)
            .where(ErasureRow.id == erasure_id, ErasureRow.finish_time.is_(None))
            .values(finish_time=now, batches=ErasureRow.batches + 1)
        )

    def newest(
        self, limit: int, before_id: int | None, subject: Subject | None
    ) -> list[ErasureRecord]:
        """Up to `limit` entries, newest first, older than `before_id` and of `subject` if given."""
        query = select(ErasureRow).order_by(ErasureRow.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(ErasureRow.id < before_id)
        if subject is not None:
            query = query.where(
                ErasureRow.subject_kind == subject.kind, ErasureRow.subject_hash == subject.hash
            )
        return [_record(row) for row in self._session.scalars(query)]


def _record(row: ErasureRow) -> ErasureRecord:
    return ErasureRecord(
        id=row.id,
        subject=Subject(
            kind=row.subject_kind, hash=row.subject_hash, hash_kind=row.subject_hash_kind
        ),
        requested_by=row.requested_by,
        start_time=row.start_time,
        finish_time=row.finish_time,
        erased=ErasedCounts(
            row.interactions_erased, row.feedback_erased, row.history_erased, row.events_erased
        ),
        batches=row.batches,
    )
