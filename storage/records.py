"""Plain records that cross the storage boundary: what the service hands in and gets back.

Three groups, in this order: what a write hands in and what it returns (frozen dataclasses);
a GetStats query and its aggregates; list and export selections, keysets and entries.

Entries are NamedTuples rather than the write side's frozen dataclasses: an export builds tens
of thousands per second, and a frozen dataclass of fourteen fields costs about 10 us to build
on the reference machine against about 1 us for a tuple. Ratings stay in their columns
(rating_kind, score, thumb_up, label) for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

JsonObject = dict[str, Any]
"""A JSON object as Python values (str keys; str, float, bool, None, list, dict values)."""


@dataclass(frozen=True, slots=True)
class Score:
    """A numeric 1-5 rating (FilAgent)."""

    value: int


@dataclass(frozen=True, slots=True)
class Thumb:
    """A binary thumbs-up (True) or thumbs-down (False) rating."""

    up: bool


@dataclass(frozen=True, slots=True)
class Label:
    """A categorical rating such as "good" or "positive" (UP2D8), stored lower case."""

    name: str


Rating = Score | Thumb | Label
"""Exactly one kind of rating, as Langfuse's numeric / boolean / categorical scores."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NewInteraction:
    """A validated chat turn ready to insert; all times are timezone-aware UTC."""

    conversation_id: str
    message_id: str | None = None
    user_id: str | None = None
    model: str | None = None
    input_hash: str | None = None
    output_hash: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    metadata: JsonObject = field(default_factory=dict)
    occur_time: datetime
    create_time: datetime
    request_id: str | None = None
    """The client's AIP-155 request id, unique among interactions."""
    request_digest: str | None = None
    """Fingerprint of the request's content, to tell a retry from a reuse of its id."""
    input_hash_kind: str | None = None
    """How input_hash was made: "sha256" or "hmac-sha256"; None without a hash."""
    output_hash_kind: str | None = None
    """How output_hash was made, as input_hash_kind."""
    redactions: JsonObject = field(default_factory=dict)
    """Values redaction replaced before the record was stored, counted by entity type."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InteractionRecord(NewInteraction):
    """A stored chat turn."""

    id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NewFeedback:
    """A validated, linked feedback entry ready to insert."""

    conversation_id: str | None
    message_id: str | None = None
    user_id: str | None = None
    interaction_id: int | None = None
    model: str | None = None
    rating: Rating
    text: str | None = None
    latency_ms: float | None = None
    tokens_used: int | None = None
    input_hash: str | None = None
    output_hash: str | None = None
    metadata: JsonObject = field(default_factory=dict)
    create_time: datetime
    request_id: str | None = None
    request_digest: str | None = None
    replaces_id: int | None = None
    """The vote of the same user on the same message that this one replaced."""
    input_hash_kind: str | None = None
    """How input_hash was made: "sha256" or "hmac-sha256"; None without a hash."""
    output_hash_kind: str | None = None
    """How output_hash was made, as input_hash_kind."""
    redactions: JsonObject = field(default_factory=dict)
    """Values redaction replaced before the record was stored, counted by entity type."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedbackRecord(NewFeedback):
    """A stored feedback entry: a current vote, or a replaced one from the history."""

    id: int
    replace_time: datetime | None = None
    """When a newer vote replaced this one; None while it is current."""
    replaced_by_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """A validated analytics event ready to insert."""

    user_id: str
    event_type: str
    details: JsonObject = field(default_factory=dict)
    event_time: datetime
    receive_time: datetime
    event_id: str | None = None
    """The client's own id of the event, unique among events."""
    request_id: str | None = None
    request_digest: str | None = None
    redactions: JsonObject = field(default_factory=dict)
    """Values redaction replaced before the record was stored, counted by entity type."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord(NewEvent):
    """A stored analytics event."""

    id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsFilter:
    """Which rows an aggregate covers; None means "any". Times are a half-open [start, end)."""

    conversation_id: str | None = None
    user_id: str | None = None
    message_id: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Percentiles:
    """Nearest-rank percentiles of a measurement; None when no record carries it."""

    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None


NO_PERCENTILES = Percentiles()


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedbackStats:
    """Aggregates over feedback; averages are None (never NaN) when nothing carries the value."""

    total_count: int = 0
    scored_count: int = 0
    avg_score: float | None = None
    score_counts: dict[int, int] = field(default_factory=lambda: dict.fromkeys(range(1, 6), 0))
    thumbs_up_count: int = 0
    thumbs_down_count: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    avg_latency_ms: float | None = None
    avg_tokens: float | None = None
    with_text_count: int = 0
    latency_ms_percentiles: Percentiles = NO_PERCENTILES
    """Filled by the rollup reader (GetStats); the full scan of tests/storage/full_scan.py leaves
    it."""
    tokens_percentiles: Percentiles = NO_PERCENTILES

    @property
    def thumbs_up_ratio(self) -> float | None:
        """Share of thumbs-up among thumb ratings; None when there are none."""
        thumbs = self.thumbs_up_count + self.thumbs_down_count
        return self.thumbs_up_count / thumbs if thumbs else None


@dataclass(frozen=True, slots=True, kw_only=True)
class InteractionStats:
    """Aggregates over interactions."""

    total_count: int = 0
    avg_latency_ms: float | None = None
    avg_total_tokens: float | None = None
    latency_ms_percentiles: Percentiles = NO_PERCENTILES
    total_tokens_percentiles: Percentiles = NO_PERCENTILES


@dataclass(frozen=True, slots=True, kw_only=True)
class EventStats:
    """Aggregates over analytics events."""

    total_count: int = 0
    type_counts: dict[str, int] = field(default_factory=dict)


# ---- GetStats: the query and its aggregates ----

TimeBucket = Literal["hour", "day", "week", "month"]
"""UTC buckets: hours, days, ISO weeks (from Monday) and calendar months."""

GroupBy = Literal["model", "event_type", "conversation", "user"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsQuery:
    """A validated stats selection; None means "any". Times are a half-open [start, end)."""

    conversation_id: str | None = None
    user_id: str | None = None
    message_id: str | None = None
    model: str | None = None
    event_type: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    bucket: TimeBucket | None = None
    """Needs both times."""
    group_by: GroupBy | None = None
    top_n: int = 10
    compare_previous: bool = False
    """Needs both times."""

    @property
    def feedback_applies(self) -> bool:
        """Feedback and interactions have no event type: a type filter excludes them."""
        return self.event_type is None

    @property
    def events_apply(self) -> bool:
        """Events have no conversation, message or model: filtering by one excludes them."""
        return self.conversation_id is None and self.message_id is None and self.model is None


@dataclass(frozen=True, slots=True)
class StatsSet:
    """Aggregates of each kind; None where the query's filters exclude the kind."""

    feedback: FeedbackStats | None
    interactions: InteractionStats | None
    events: EventStats | None


@dataclass(frozen=True, slots=True)
class StatsBucket:
    """The aggregates of one time bucket [start_time, end_time)."""

    start_time: datetime
    end_time: datetime
    stats: StatsSet


@dataclass(frozen=True, slots=True)
class StatsGroup:
    """The aggregates of one group; key "" holds the records without a value."""

    key: str
    stats: StatsSet


@dataclass(frozen=True, slots=True)
class StatsPeriod:
    """The aggregates of a whole period [start_time, end_time)."""

    start_time: datetime
    end_time: datetime
    stats: StatsSet


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsAnswer:
    """Everything a StatsQuery asked for."""

    overall: StatsSet
    buckets: list[StatsBucket] = field(default_factory=list)
    groups: list[StatsGroup] = field(default_factory=list)
    previous: StatsPeriod | None = None


# ---- lists and exports: selections, keysets and entries ----

RatingKind = Literal["score", "thumb", "label"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedbackFilter:
    """Which feedback a list covers; None means "any". Times are a half-open [start, end)."""

    conversation_id: str | None = None
    message_id: str | None = None
    user_id: str | None = None
    model: str | None = None
    min_score: int | None = None
    """Inclusive; when set (or max_score is), only score-rated feedback matches."""
    max_score: int | None = None
    """Inclusive."""
    rating_kind: RatingKind | None = None
    label: str | None = None
    has_text: bool | None = None
    """True: only feedback with non-empty text; False: only feedback without."""
    start_time: datetime | None = None
    """By create_time."""
    end_time: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InteractionFilter:
    """Which interactions a list covers; times select by occur_time, half-open."""

    conversation_id: str | None = None
    message_id: str | None = None
    user_id: str | None = None
    model: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilter:
    """Which events a list covers; times select by event_time, half-open."""

    user_id: str | None = None
    event_type: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Keyset:
    """Where a page starts, which way it runs and how long it is.

    Ids grow in storage order, so "newest first" is id descending. The cursor is the id of the
    last row already seen: a page holds only rows past it, which stays exact while rows arrive.
    """

    cursor: int | None = None
    newest_first: bool = True
    limit: int = 50


class FeedbackEntry(NamedTuple):
    """A stored feedback entry as a list or export reads it; times are aware UTC."""

    id: int
    conversation_id: str | None
    message_id: str | None
    user_id: str | None
    interaction_id: int | None
    model: str | None
    rating_kind: RatingKind
    score: int | None
    thumb_up: bool | None
    label: str | None
    text: str | None
    latency_ms: float | None
    tokens_used: int | None
    input_hash: str | None
    output_hash: str | None
    metadata: dict[str, Any]
    create_time: datetime
    replaces_id: int | None
    input_hash_kind: str | None
    output_hash_kind: str | None
    redactions: dict[str, Any]


class InteractionEntry(NamedTuple):
    """A stored chat turn as a list or export reads it."""

    id: int
    conversation_id: str
    message_id: str | None
    user_id: str | None
    model: str | None
    input_hash: str | None
    output_hash: str | None
    latency_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    metadata: dict[str, Any]
    occur_time: datetime
    create_time: datetime
    input_hash_kind: str | None
    output_hash_kind: str | None
    redactions: dict[str, Any]


class EventEntry(NamedTuple):
    """A stored analytics event as a list or export reads it."""

    id: int
    user_id: str
    event_type: str
    details: dict[str, Any]
    event_time: datetime
    receive_time: datetime
    event_id: str | None
    redactions: dict[str, Any]


# ---- API keys: hashes and what they allow, never secrets ----


@dataclass(frozen=True, slots=True, kw_only=True)
class NewApiKey:
    """A key to store: the service made its secret and keeps only the hash here."""

    prefix: str
    secret_hash: str
    name: str
    scopes: tuple[str, ...]
    client_identity: str | None
    create_time: datetime
    created_by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyRecord(NewApiKey):
    """A stored key: what was stored, and what has happened to it since."""

    last_use_time: datetime | None
    revoke_time: datetime | None
    revoked_by: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyEventRecord:
    """One audit entry: `actor` did `action` to the key `key_prefix` at `event_time`."""

    event_time: datetime
    action: str
    key_prefix: str
    actor: str
    scopes: tuple[str, ...]


# ---- Erasures: what was removed about whom, the subject hashed ----


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """Whose data an erasure removes, as the erasure log keeps it: a kind and a hash."""

    kind: str
    """"user" (rows whose user_id is the id) or "conversation" (whose conversation_id is)."""
    hash: str
    """The id's hash in 64 hex digits, made as hash_kind says."""
    hash_kind: str


@dataclass(frozen=True, slots=True)
class ErasedCounts:
    """Rows removed, per table."""

    interactions: int = 0
    feedback: int = 0
    history: int = 0
    """Replaced votes (feedback_history)."""
    events: int = 0

    def __add__(self, other: ErasedCounts) -> ErasedCounts:
        """Both counts together."""
        return ErasedCounts(
            self.interactions + other.interactions,
            self.feedback + other.feedback,
            self.history + other.history,
            self.events + other.events,
        )

    @property
    def total(self) -> int:
        """Rows removed from every table."""
        return self.interactions + self.feedback + self.history + self.events


@dataclass(frozen=True, slots=True, kw_only=True)
class ErasureRecord:
    """One entry of the erasure log; finish_time is None while the erasure is under way."""

    id: int
    subject: Subject
    requested_by: str
    start_time: datetime
    finish_time: datetime | None
    erased: ErasedCounts
    batches: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OptOutRecord:
    """A user who opted out, as the hash of their id: since when and at whose request."""

    user: Subject
    opt_out_time: datetime
    requested_by: str


OPT_OUT = "opt_out"
OPT_IN = "opt_in"
"""Actions of the record of a user's choices."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OptOutEventRecord:
    """One change of a user's choice: "opt_out" (with or without erasing the past) or "opt_in"."""

    action: str
    event_time: datetime
    requested_by: str
    erase_requested: bool


@dataclass(frozen=True, slots=True)
class ChangeEntry:
    """The rows of one kind one write transaction added."""

    seq: int
    """The transaction's number in commit order, shared by its entries of every kind."""
    kind: str
    ids: tuple[int, ...]
    """Ascending."""
    commit_time: datetime


@dataclass(frozen=True, slots=True)
class Horizon:
    """Where a kind's log begins: what compaction has removed."""

    seq: int
    """The newest compacted number: entries up to it are gone."""
    last_id: int
    """The highest id of the kind whose entry is gone (or that was stored before the log)."""


@dataclass(frozen=True, slots=True)
class LogState:
    """The clock and horizons, read in one snapshot."""

    epoch: str
    """The database's random name, so a position is never taken to another database."""
    head: int
    """The newest number handed out (committed, as seen by this snapshot)."""
    horizons: dict[str, Horizon]
