"""API keys in the database: hashes and what they allow, never secrets, with an audit log."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.records import ApiKeyEventRecord, ApiKeyRecord, NewApiKey
from storage.schema.models import ApiKeyEventRow, ApiKeyRow

CREATE = "create"
REVOKE = "revoke"
"""Actions of the audit log."""


class ApiKeys:
    """The key tables, through one session whose transaction the caller owns."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def create(self, new: NewApiKey) -> ApiKeyRecord:
        """Insert a key and its creation's audit entry; Conflict if the prefix is taken."""
        row = ApiKeyRow(
            prefix=new.prefix,
            secret_hash=new.secret_hash,
            name=new.name,
            scopes=",".join(new.scopes),
            client_identity=new.client_identity,
            create_time=new.create_time,
            created_by=new.created_by,
        )
        self._session.add(row)
        self._audit(CREATE, new.prefix, new.created_by, new.scopes, new.create_time)
        self._session.flush()
        return _record(row)

    def all(self) -> list[ApiKeyRecord]:
        """Every key, newest first."""
        rows = self._session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id.desc()))
        return [_record(row) for row in rows]

    def by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        """The key with this prefix, if any."""
        row = self._session.scalars(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix)).first()
        return None if row is None else _record(row)

    def revoke(self, prefix: str, actor: str, now: datetime) -> ApiKeyRecord | None:
        """Revoke the key (a revoked one stays as it was) and audit it; None if there is none."""
        row = self._session.scalars(
            select(ApiKeyRow).where(ApiKeyRow.prefix == prefix).with_for_update()
        ).first()
        if row is None:
            return None
        if row.revoke_time is None:
            row.revoke_time = now
            row.revoked_by = actor
            self._audit(REVOKE, prefix, actor, _scopes(row.scopes), now)
            self._session.flush()
        return _record(row)

    def record_use(self, prefixes: Collection[str], now: datetime) -> None:
        """Note that these keys were used by `now` (last_use_time only moves forward)."""
        if not prefixes:
            return
        self._session.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.prefix.in_(sorted(prefixes)))
            .where((ApiKeyRow.last_use_time.is_(None)) | (ApiKeyRow.last_use_time < now))
            .values(last_use_time=now)
        )

    def events(self, limit: int) -> list[ApiKeyEventRecord]:
        """The newest `limit` audit entries, newest first."""
        rows = self._session.scalars(
            select(ApiKeyEventRow).order_by(ApiKeyEventRow.id.desc()).limit(limit)
        )
        return [
            ApiKeyEventRecord(
                event_time=row.event_time,
                action=row.action,
                key_prefix=row.key_prefix,
                actor=row.actor,
                scopes=_scopes(row.scopes),
            )
            for row in rows
        ]

    def _audit(
        self, action: str, prefix: str, actor: str, scopes: tuple[str, ...], now: datetime
    ) -> None:
        self._session.add(
            ApiKeyEventRow(
                event_time=now,
                action=action,
                key_prefix=prefix,
                actor=actor,
                scopes=",".join(scopes),
            )
        )


def _scopes(stored: str) -> tuple[str, ...]:
    return tuple(scope for scope in stored.split(",") if scope)


def _record(row: ApiKeyRow) -> ApiKeyRecord:
    return ApiKeyRecord(
        prefix=row.prefix,
        secret_hash=row.secret_hash,
        name=row.name,
        scopes=_scopes(row.scopes),
        client_identity=row.client_identity,
        create_time=row.create_time,
        created_by=row.created_by,
        last_use_time=row.last_use_time,
        revoke_time=row.revoke_time,
        revoked_by=row.revoked_by,
    )
