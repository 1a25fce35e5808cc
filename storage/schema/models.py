"""The database schema as typed SQLAlchemy models; migrations must produce exactly this."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.schema.column_types import JSON_OBJECT, UTCDateTime

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint and index names derived from what they cover, identical on every database.

Conflict errors carry these names, and migrations can drop or alter them by name.
"""

ROW_ID = BigInteger().with_variant(Integer(), "sqlite")
"""A 64-bit key; SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY."""

IDENTIFIER_LENGTH = 128
HASH_LENGTH = 64
HASH_KIND_LENGTH = 16
"""A SHA-256 digest in hex."""

TEXT_LENGTH = 2000
"""FilAgent's limit on free-text feedback."""

LABEL_LENGTH = 64
EVENT_TYPE_LENGTH = 64
RATING_KIND_LENGTH = 8
REQUEST_ID_LENGTH = 36
"""A UUID in its hyphenated form (AIP-155 request ids)."""
REQUEST_DIGEST_LENGTH = 32
"""128 bits of SHA-256, in hex: tells a retried request from another one reusing its id."""

STORED_REQUEST = text("request_id IS NOT NULL")
"""Most rows carry no request id; partial indexes leave them out."""

EMPTY_JSON_OBJECT = text("'{}'")
"""Server default for JSON columns, so rows inserted by hand (or by old code) stay valid."""


def _request_id_index(table: str) -> Index:
    """AIP-155 request ids are unique per table; only rows that carry one are indexed."""
    return Index(
        f"uq_{table}_request_id",
        "request_id",
        unique=True,
        sqlite_where=STORED_REQUEST,
        postgresql_where=STORED_REQUEST,
    )


class Base(DeclarativeBase):
    """Declarative base carrying the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class InteractionRow(Base):
    """One chat turn (a prompt and the model's answer) that feedback can refer to."""

    __tablename__ = "interactions"
    __table_args__ = (
        # Rows.latest_interactions() reads the highest id within a conversation.
        Index("ix_interactions_conversation_id_id", "conversation_id", "id"),
        # Filter indexes end with id, so a keyset page is read in id order from the index alone
        # (SQLite appends the rowid anyway; PostgreSQL needs it spelled out).
        Index("ix_interactions_user_id_id", "user_id", "id"),
        Index("ix_interactions_model_id", "model", "id"),
        Index("ix_interactions_occur_time", "occur_time"),
        _request_id_index("interactions"),
        # Ids are never reused after retention deletes, so clients' keyset cursors stay valid.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH))
    # Unique so a retried RecordInteraction cannot store a turn twice; NULLs never collide.
    message_id: Mapped[str | None] = mapped_column(String(IDENTIFIER_LENGTH), unique=True)
    user_id: Mapped[str | None] = mapped_column(String(IDENTIFIER_LENGTH))
    model: Mapped[str | None] = mapped_column(String(IDENTIFIER_LENGTH))
    input_hash: Mapped[str | None] = mapped_column(String(HASH_LENGTH))
    output_hash: Mapped[str | None] = mapped_column(String(HASH_LENGTH))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    total_tokens: Mapped[int | None] = mapped_column(Integer)
    # `metadata` is the declarative registry's attribute, so the column gets another name here.
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSON_OBJECT, default=dict, server_default=EMPTY_JSON_OBJECT
    )
    occur_time: Mapped[datetime] = mapped_column(UTCDateTime)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime)
    request_id: Mapped[str | None] = mapped_column(String(REQUEST_ID_LENGTH))
    request_digest: Mapped[str | None] = mapped_column(String(REQUEST_DIGEST_LENGTH))
    # How the hashes were made ("sha256", "hmac-sha256"), and what redaction replaced (counts by
    # entity type, never values); both since revision 0011.
    input_hash_kind: Mapped[str | None] = mapped_column(String(HASH_KIND_LENGTH))
    output_hash_kind: Mapped[str | None] = mapped_column(String(HASH_KIND_LENGTH))
    redactions: Mapped[dict[str, Any]] = mapped_column(
        JSON_OBJECT, server_default=EMPTY_JSON_OBJECT
    )


class _VoteColumns:
    """The columns of a vote, in this order after the table's own key: the same in the feedback
    table and in the history of the votes newer ones replaced, which keeps them as they were."""

    conversation_id: Mapped[str | None] = mapped_column(String(IDENTIFIER_LENGTH))
    message_id: Mapped[str | None] = mapped_column(String(IDENTIFIER_LENGTH))
    user_id: Mapped[str | None] = mapped_column(String(IDENTIFIER_LENGTH))

    interaction_id: Mapped[int | None] = mapped_column(BigInteger)
    """The rated interaction; a foreign key in the feedback table only (see FeedbackRow)."""
    # The rated answer's model, copied from its interaction so stats can group by it.
    model: Mapped[str | None] = mapped_column(String(IDENTIFIER_LENGTH))
    rating_kind: Mapped[str] = mapped_column(String(RATING_KIND_LENGTH))
    score: Mapped[int | None] = mapped_column(SmallInteger)
    thumb_up: Mapped[bool | None] = mapped_column(Boolean)
    label: Mapped[str | None] = mapped_column(String(LABEL_LENGTH))
    # Unbounded on PostgreSQL since revision 0011: redaction may lengthen a 2000-character text
    # by its placeholders (SQLite never enforced the length).
    text: Mapped[str | None] = mapped_column(String(TEXT_LENGTH).with_variant(Text(), "postgresql"))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    tokens_used: Mapped[int | None] = mapped_column(Integer)
    input_hash: Mapped[str | None] = mapped_column(String(HASH_LENGTH))
    output_hash: Mapped[str | None] = mapped_column(String(HASH_LENGTH))
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSON_OBJECT, default=dict, server_default=EMPTY_JSON_OBJECT
    )
    create_time: Mapped[datetime] = mapped_column(UTCDateTime)
    request_id: Mapped[str | None] = mapped_column(String(REQUEST_ID_LENGTH))
    request_digest: Mapped[str | None] = mapped_column(String(REQUEST_DIGEST_LENGTH))
    # The vote of the same user on the same message this one replaced (see FeedbackHistoryRow).
    replaces_id: Mapped[int | None] = mapped_column(BigInteger)
    # Last in both tables (after the history's own columns), as revision 0011 added them.
    # How the hashes were made ("sha256", "hmac-sha256"), and what redaction replaced (counts by
    # entity type, never values); both since revision 0011.
    input_hash_kind: Mapped[str | None] = mapped_column(String(HASH_KIND_LENGTH), sort_order=2)
    output_hash_kind: Mapped[str | None] = mapped_column(String(HASH_KIND_LENGTH), sort_order=2)
    redactions: Mapped[dict[str, Any]] = mapped_column(
        JSON_OBJECT, server_default=EMPTY_JSON_OBJECT, sort_order=2
    )


class FeedbackRow(_VoteColumns, Base):
    """One rating of an interaction or conversation: FilAgent's interaction_logs, generalised."""

    __tablename__ = "feedback"
    __table_args__ = (
        CheckConstraint("rating_kind IN ('score', 'thumb', 'label')", name="rating_kind"),
        CheckConstraint("score BETWEEN 1 AND 5", name="score_range"),
        # Exactly the column of the rating's kind is set, so no reader has to guess.
        CheckConstraint(
            "(rating_kind = 'score' AND score IS NOT NULL AND thumb_up IS NULL AND label IS NULL)"
            " OR (rating_kind = 'thumb' AND score IS NULL AND thumb_up IS NOT NULL"
            " AND label IS NULL)"
            " OR (rating_kind = 'label' AND score IS NULL AND thumb_up IS NULL"
            " AND label IS NOT NULL)",
            name="rating_matches_kind",
        ),
        # A conversation is unknown only when feedback names a message nobody recorded.
        CheckConstraint(
            "conversation_id IS NOT NULL OR message_id IS NOT NULL",
            name="conversation_or_message",
        ),
        # FilAgent's three indexes (idx_conversation_id, idx_feedback_score, idx_created_at).
        Index("ix_feedback_conversation_id", "conversation_id"),
        Index("ix_feedback_score", "score"),
        Index("ix_feedback_create_time", "create_time"),
        # One current vote per user per message (NULLs never collide: anonymous feedback and
        # feedback on whole conversations are not votes); also serves lookups by message.
        Index("uq_feedback_message_id_user_id", "message_id", "user_id", unique=True),
        _request_id_index("feedback"),
        Index("ix_feedback_user_id_id", "user_id", "id"),
        Index("ix_feedback_interaction_id", "interaction_id"),
        Index("ix_feedback_model_id", "model", "id"),
        # A rare or unused label would otherwise scan the whole table (200 ms at 1M rows).
        Index("ix_feedback_label_id", "label", "id"),
        # has_text=true when few entries carry text; the condition matches the query's literally.
        Index(
            "ix_feedback_id_with_text",
            "id",
            sqlite_where=text("text IS NOT NULL AND text != ''"),
            postgresql_where=text("text IS NOT NULL AND text != ''"),
        ),
        # Retention may delete old interactions; their feedback stays, unlinked.
        ForeignKeyConstraint(["interaction_id"], ["interactions.id"], ondelete="SET NULL"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)


class FeedbackHistoryRow(_VoteColumns, Base):
    """A vote that a newer vote of the same user on the same message replaced.

    Replaced votes leave the feedback table (and so every list, export and rollup) and are kept
    here with the columns they had, for ListFeedbackHistory and for replayed request ids.
    """

    __tablename__ = "feedback_history"
    __table_args__ = (
        Index("ix_feedback_history_message_id_user_id", "message_id", "user_id"),
        # Erasures find a user's or a conversation's replaced votes (revision 0012).
        Index("ix_feedback_history_user_id_id", "user_id", "id"),
        Index("ix_feedback_history_conversation_id_id", "conversation_id", "id"),
        # Retention expires replaced votes by their time (revision 0012).
        Index("ix_feedback_history_create_time", "create_time"),
        Index(
            "ix_feedback_history_request_id",
            "request_id",
            sqlite_where=STORED_REQUEST,
            postgresql_where=STORED_REQUEST,
        ),
        {"sqlite_autoincrement": True},
    )

    history_id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    id: Mapped[int] = mapped_column(BigInteger)
    """The vote's id in the feedback table while it was current."""
    # After the vote's own columns (_VoteColumns come after a class's own by default).
    replace_time: Mapped[datetime] = mapped_column(UTCDateTime, sort_order=1)
    """When the newer vote replaced this one."""
    replaced_by_id: Mapped[int] = mapped_column(BigInteger, sort_order=1)
    """Id of the vote that replaced this one."""


class EventRow(Base):
    """One analytics event (UP2D8's analytics collection)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_event_type_id", "event_type", "id"),
        Index("ix_events_user_id_id", "user_id", "id"),
        Index("ix_events_event_time", "event_time"),
        # A client's event id is stored once, whatever the content of later copies.
        Index(
            "uq_events_event_id",
            "event_id",
            unique=True,
            sqlite_where=text("event_id IS NOT NULL"),
            postgresql_where=text("event_id IS NOT NULL"),
        ),
        _request_id_index("events"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH))
    event_type: Mapped[str] = mapped_column(String(EVENT_TYPE_LENGTH))
    details: Mapped[dict[str, Any]] = mapped_column(
        JSON_OBJECT, default=dict, server_default=EMPTY_JSON_OBJECT
    )
    event_time: Mapped[datetime] = mapped_column(UTCDateTime)
    receive_time: Mapped[datetime] = mapped_column(UTCDateTime)
    event_id: Mapped[str | None] = mapped_column(String(IDENTIFIER_LENGTH))
    request_id: Mapped[str | None] = mapped_column(String(REQUEST_ID_LENGTH))
    request_digest: Mapped[str | None] = mapped_column(String(REQUEST_DIGEST_LENGTH))
    # What redaction replaced in the details, counted by entity type (revision 0011).
    redactions: Mapped[dict[str, Any]] = mapped_column(
        JSON_OBJECT, server_default=EMPTY_JSON_OBJECT
    )


# Rollups (storage.aggregates): exact aggregates kept in the same transaction as every write. Keys
# start with (level, bucket_start) so a batch touches a few hot buckets, not a page per user.
# WITHOUT ROWID on SQLite: the rows live in the primary key's B-tree, one lookup per upsert.

ROLLUP_TABLE_OPTIONS: dict[str, Any] = {"sqlite_with_rowid": False}


def _rollup_counter() -> Mapped[int]:
    return mapped_column(BigInteger)


class _Extremes:
    """Exact least and greatest latency and tokens of a cell's records, which percentiles read
    from its histogram bins stay within (storage.aggregates.histogram.Extremes).

    Exact: writes widen them, removals that took an extreme away read it again from the raw
    rows. NULL without such values, and on the cells of dimensions that keep no histograms.
    """

    latency_min: Mapped[float | None] = mapped_column(Float, sort_order=3)
    latency_max: Mapped[float | None] = mapped_column(Float, sort_order=4)
    tokens_min: Mapped[int | None] = mapped_column(BigInteger, sort_order=5)
    tokens_max: Mapped[int | None] = mapped_column(BigInteger, sort_order=6)


class _RollupCell:
    """The key every rollup table starts with: which bucket of which level, for which key."""

    level: Mapped[int] = mapped_column(SmallInteger, sort_order=-4)
    """storage.calendar.HOUR, DAY, MONTH or TOTAL."""
    bucket_start: Mapped[int] = mapped_column(BigInteger, sort_order=-3)
    """Epoch seconds (UTC) of the bucket's start; 0 for TOTAL."""
    dimension: Mapped[int] = mapped_column(SmallInteger, sort_order=-2)
    """storage.aggregates.kinds.ALL, MODEL, CONVERSATION, USER or EVENT_TYPE."""
    dimension_key: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH), sort_order=-1)
    """The model, conversation, user or event type; "" for ALL and for records without one."""


_CELL = ("level", "bucket_start", "dimension", "dimension_key")


def _rollup_table_args(*extra_key: str) -> tuple[Any, ...]:
    """The primary key (cell first, then `extra_key`) and the table options."""
    return (PrimaryKeyConstraint(*_CELL, *extra_key), ROLLUP_TABLE_OPTIONS)


class FeedbackRollupRow(_RollupCell, _Extremes, Base):
    """Counts and sums of the feedback of one cell."""

    __tablename__ = "feedback_rollups"
    __table_args__ = _rollup_table_args()

    stamp: Mapped[int] = mapped_column(BigInteger)
    """Random version set by every change; readers cache the cell's labels and bins by it."""
    total_count: Mapped[int] = _rollup_counter()
    score1_count: Mapped[int] = _rollup_counter()
    score2_count: Mapped[int] = _rollup_counter()
    score3_count: Mapped[int] = _rollup_counter()
    score4_count: Mapped[int] = _rollup_counter()
    score5_count: Mapped[int] = _rollup_counter()
    thumbs_up_count: Mapped[int] = _rollup_counter()
    thumbs_down_count: Mapped[int] = _rollup_counter()
    with_text_count: Mapped[int] = _rollup_counter()
    latency_count: Mapped[int] = _rollup_counter()
    latency_sum: Mapped[float] = mapped_column(Float)
    tokens_count: Mapped[int] = _rollup_counter()
    tokens_sum: Mapped[int] = _rollup_counter()


class FeedbackLabelRollupRow(_RollupCell, Base):
    """Number of label ratings of one cell per label."""

    __tablename__ = "feedback_label_rollups"
    __table_args__ = _rollup_table_args("label")

    label: Mapped[str] = mapped_column(String(LABEL_LENGTH))
    record_count: Mapped[int] = _rollup_counter()


class FeedbackHistogramRollupRow(_RollupCell, Base):
    """Number of feedback entries of one cell per log-scale bin of latency or tokens."""

    __tablename__ = "feedback_histogram_rollups"
    __table_args__ = _rollup_table_args("metric", "bin")

    metric: Mapped[int] = mapped_column(SmallInteger)
    """The measure's position in its kind (storage.aggregates.kinds): 0 latency, 1 tokens."""
    bin: Mapped[int] = mapped_column(Integer)
    """storage.aggregates.histogram.histogram_bin() of the value."""
    record_count: Mapped[int] = _rollup_counter()


class InteractionRollupRow(_RollupCell, _Extremes, Base):
    """Counts and sums of the interactions of one cell."""

    __tablename__ = "interaction_rollups"
    __table_args__ = _rollup_table_args()

    stamp: Mapped[int] = mapped_column(BigInteger)
    total_count: Mapped[int] = _rollup_counter()
    latency_count: Mapped[int] = _rollup_counter()
    latency_sum: Mapped[float] = mapped_column(Float)
    tokens_count: Mapped[int] = _rollup_counter()
    tokens_sum: Mapped[int] = _rollup_counter()


class InteractionHistogramRollupRow(_RollupCell, Base):
    """Number of interactions of one cell per log-scale bin of latency or total tokens."""

    __tablename__ = "interaction_histogram_rollups"
    __table_args__ = _rollup_table_args("metric", "bin")

    metric: Mapped[int] = mapped_column(SmallInteger)
    bin: Mapped[int] = mapped_column(Integer)
    record_count: Mapped[int] = _rollup_counter()


class EventRollupRow(_RollupCell, Base):
    """Number of events of one cell."""

    __tablename__ = "event_rollups"
    __table_args__ = _rollup_table_args()

    stamp: Mapped[int] = mapped_column(BigInteger)
    total_count: Mapped[int] = _rollup_counter()


class EventTypeRollupRow(_RollupCell, Base):
    """Number of events of one cell per event type (cells of the "all" and user dimensions)."""

    __tablename__ = "event_type_rollups"
    __table_args__ = _rollup_table_args("event_type")

    event_type: Mapped[str] = mapped_column(String(EVENT_TYPE_LENGTH))
    record_count: Mapped[int] = _rollup_counter()


class RollupKeySpanRow(Base):
    """First and last day holding records of each dense key (all, model, event type), so reads
    of open-ended ranges know which buckets to look at."""

    __tablename__ = "rollup_key_spans"
    __table_args__ = (PrimaryKeyConstraint("dimension", "dimension_key"), ROLLUP_TABLE_OPTIONS)

    dimension: Mapped[int] = mapped_column(SmallInteger)
    dimension_key: Mapped[str] = mapped_column(String(IDENTIFIER_LENGTH))
    first_day: Mapped[int] = mapped_column(BigInteger)
    """Epoch seconds of the first day; never narrowed when records are removed."""
    last_day: Mapped[int] = mapped_column(BigInteger)


class ListIdBlockRow(Base):
    """The time bounds of each block of ids of a listed table, so a page with a time range
    scans only the blocks whose rows can fall in it (storage.rows.id_blocks).

    A superset: every row of the block has min_time <= time <= max_time, but deletes never
    narrow the bounds nor lower row_count.
    """

    __tablename__ = "list_id_blocks"
    __table_args__ = (PrimaryKeyConstraint("kind", "block"), ROLLUP_TABLE_OPTIONS)

    kind: Mapped[str] = mapped_column(String(16))
    """The raw table: "feedback", "interactions" or "events"."""
    block: Mapped[int] = mapped_column(BigInteger)
    """id // storage.rows.id_blocks.BLOCK_IDS."""
    min_time: Mapped[datetime] = mapped_column(UTCDateTime)
    max_time: Mapped[datetime] = mapped_column(UTCDateTime)
    row_count: Mapped[int] = mapped_column(BigInteger)
    """Rows ever inserted in the block."""


API_KEY_PREFIX_LENGTH = 16
SCOPES_LENGTH = 64
"""Scope names, comma-separated ("admin,ingest,read")."""
ACTOR_LENGTH = 32
"""Who managed a key: an admin key's prefix or "cli"."""


class ApiKeyRow(Base):
    """An API key: its visible prefix, the SHA-256 of its secret (never the secret), what it
    allows, and its life. Revoked keys stay, so the audit trail and leak reports can name them."""

    __tablename__ = "api_keys"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    prefix: Mapped[str] = mapped_column(String(API_KEY_PREFIX_LENGTH), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[str] = mapped_column(String(SCOPES_LENGTH))
    client_identity: Mapped[str | None] = mapped_column(String(253))
    create_time: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    last_use_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoke_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by: Mapped[str | None] = mapped_column(String(ACTOR_LENGTH))


class ApiKeyEventRow(Base):
    """One entry of the audit log of key management: who created or revoked which key, when."""

    __tablename__ = "api_key_events"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    event_time: Mapped[datetime] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(String(8))
    key_prefix: Mapped[str] = mapped_column(String(API_KEY_PREFIX_LENGTH))
    actor: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    scopes: Mapped[str] = mapped_column(String(SCOPES_LENGTH))


SUBJECT_KIND_LENGTH = 16
"""What an erasure is of: "user" or "conversation"."""
REQUESTER_LENGTH = 64
"""Who asked for an erasure: an admin key's prefix, a peer's address or "cli"."""


class ErasureRow(Base):
    """One erasure of a user's or a conversation's data (revision 0012): who asked, when, and how
    many rows it removed from each table. The subject is kept as a hash only, never the data.

    A row without finish_time is an erasure under way: writes about its subject are refused
    until it finishes, and running the erasure again resumes it (one running row per subject).
    """

    __tablename__ = "erasures"
    __table_args__ = (
        Index(
            "uq_erasures_running_subject",
            "subject_kind",
            "subject_hash",
            unique=True,
            sqlite_where=text("finish_time IS NULL"),
            postgresql_where=text("finish_time IS NULL"),
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    subject_kind: Mapped[str] = mapped_column(String(SUBJECT_KIND_LENGTH))
    subject_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    subject_hash_kind: Mapped[str] = mapped_column(String(HASH_KIND_LENGTH))
    requested_by: Mapped[str] = mapped_column(String(REQUESTER_LENGTH))
    start_time: Mapped[datetime] = mapped_column(UTCDateTime)
    finish_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    interactions_erased: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    feedback_erased: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    history_erased: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    events_erased: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    batches: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class OptOutRow(Base):
    """A user who opted out (revision 0012): writes about them are not stored. Kept as the hash
    of the user id, made as ErasureRow's subject hashes are."""

    __tablename__ = "opt_outs"

    user_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), primary_key=True)
    hash_kind: Mapped[str] = mapped_column(String(HASH_KIND_LENGTH))
    opt_out_time: Mapped[datetime] = mapped_column(UTCDateTime)
    requested_by: Mapped[str] = mapped_column(String(REQUESTER_LENGTH))


class OptOutEventRow(Base):
    """One change of a user's choice (revision 0012): opted out (and whether their past data was
    erased with it) or back in, when and at whose request; the record of consent."""

    __tablename__ = "opt_out_events"
    __table_args__ = (
        Index("ix_opt_out_events_user_hash_id", "user_hash", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    user_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    hash_kind: Mapped[str] = mapped_column(String(HASH_KIND_LENGTH))
    action: Mapped[str] = mapped_column(String(8))
    event_time: Mapped[datetime] = mapped_column(UTCDateTime)
    requested_by: Mapped[str] = mapped_column(String(REQUESTER_LENGTH))
    erase_requested: Mapped[bool] = mapped_column(Boolean)


class ChangeClockRow(Base):
    """The change log's clock (revision 0013), one row: the newest number a write transaction
    took, in commit order (storage.rows.changes), and the database's random epoch."""

    __tablename__ = "change_clock"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    epoch: Mapped[str] = mapped_column(String(16))
    """16 hex digits chosen when the log was created; positions name it."""


class ChangeRow(Base):
    """One change log entry (revision 0013): the rows of one kind one write transaction added."""

    __tablename__ = "changes"
    __table_args__ = (
        PrimaryKeyConstraint("seq", "kind"),
        # ChangeLog.first_after_id(): where a watch started from a list token begins.
        Index("ix_changes_kind_last_id", "kind", "last_id"),
    )

    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    first_id: Mapped[int] = mapped_column(BigInteger)
    last_id: Mapped[int] = mapped_column(BigInteger)
    row_count: Mapped[int] = mapped_column(Integer)
    ids: Mapped[bytes] = mapped_column(LargeBinary)
    """The ids, packed by storage.rows.changes.pack."""
    commit_time: Mapped[datetime] = mapped_column(UTCDateTime)


class ChangeHorizonRow(Base):
    """Where each kind's change log begins (revision 0013): the newest compacted number and
    the highest id compacted, or stored before the log existed."""

    __tablename__ = "change_horizons"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    last_id: Mapped[int] = mapped_column(BigInteger)
