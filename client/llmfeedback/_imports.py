"""History of the systems this service replaces, read as items for `import_history`.

- FilAgent's `memory/analytics.sqlite`: each `interaction_logs` row is a chat turn and its rating,
  imported as an interaction (message id `filagent:<id>`) and the feedback on it, both at the
  row's `created_at` (UTC when it has no offset).
- UP2D8's MongoDB collections exported by `mongoexport` as JSON Lines (Extended JSON `$date`,
  `$oid`, `$numberLong`...): `feedback` ratings (message_id, user_id, free-form rating,
  timestamp) and `analytics` events (user_id, event_type, details, timestamp). UP2D8 never
  recorded the rated messages, so each rated message becomes an interaction of its own
  conversation at its first rating's time; ratings go oldest first, as votes must.

Every item's request_id is a name-based UUID of its source record, so an import sent again (after
a crash, say) stores only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._items import EventItem, FeedbackItem, HistoricItem, InteractionItem

_NAMESPACE = uuid.UUID("5b7e4d3c-1a2f-4e8b-9c6d-0f1e2d3c4b5a")
"""Of the request ids of imported records: uuid5(_NAMESPACE, "<source>:<kind>:<key>")."""


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record of a source: the item to import, or why it cannot be imported."""

    where: str
    """Where it is in the source, for messages: "row 42", "feedback.jsonl line 7"."""
    item: HistoricItem | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Source:
    """The records of one import, and how many there are (for progress)."""

    total: int
    records: Iterator[SourceRecord]


def _in_the_past(records: Iterator[SourceRecord]) -> Iterator[SourceRecord]:
    """The records, those stored after now refused (the server would refuse them too)."""
    now = datetime.now(UTC)
    for record in records:
        if record.item is not None and record.item.create_time > now:
            yield SourceRecord(
                record.where, None, f"stored in the future: {record.item.create_time.isoformat()}"
            )
        else:
            yield record


def request_id(source: str, kind: str, key: str) -> str:
    """The request id of a source record: the same on every run of the import."""
    return str(uuid.uuid5(_NAMESPACE, f"{source}:{kind}:{key}"))


# ---- FilAgent ----


def filagent(path: Path, source: str = "filagent") -> Source:
    """FilAgent's interaction_logs as interactions and their ratings, oldest first."""
    connection = _read_only(path)
    try:
        (rows,) = connection.execute("SELECT count(*) FROM interaction_logs").fetchone()
    finally:
        connection.close()
    return Source(2 * rows, _in_the_past(_filagent_records(path, source)))


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _filagent_records(path: Path, source: str) -> Iterator[SourceRecord]:
    # Opened by the generator: the client reads the items on one of gRPC's threads.
    connection = _read_only(path)
    try:
        cursor = connection.execute(
            "SELECT id, conversation_id, input_hash, output_hash, user_feedback_score,"
            " user_feedback_text, latency_ms, tokens_used, created_at, metadata"
            " FROM interaction_logs ORDER BY created_at, id"
        )
        for row in cursor:
            yield from _filagent_row(row, source)
    finally:
        connection.close()


def _filagent_row(row: tuple[Any, ...], source: str) -> Iterator[SourceRecord]:
    row_id, conversation, input_hash, output_hash, score, text = row[:6]
    latency, tokens, created_at, metadata = row[6:]
    where = f"row {row_id}"
    message = f"filagent:{row_id}"
    try:
        moment = _required_time(created_at, "created_at")
        try:
            details = json.loads(metadata) if metadata else None
        except ValueError as error:
            raise ValueError(f"metadata is not valid JSON: {error}") from None
        if details is not None and not isinstance(details, dict):
            raise ValueError("metadata is not a JSON object")
        turn = InteractionItem(
            str(conversation or ""),
            message_id=message,
            input_hash=input_hash or None,
            output_hash=output_hash or None,
            latency_ms=latency,
            total_tokens=tokens,
            metadata=details,
            request_id=request_id(source, "interaction", str(row_id)),
        )
        yield SourceRecord(where, HistoricItem(turn, moment))
    except (ValueError, TypeError) as error:
        yield SourceRecord(where, None, str(error))
        yield SourceRecord(where, None, "its interaction could not be imported")
        return
    if score is None:
        yield SourceRecord(where, None, "no user_feedback_score: a turn without a rating")
        return
    if not isinstance(score, int) or not 1 <= score <= 5:
        yield SourceRecord(where, None, f"user_feedback_score must be from 1 to 5, got {score!r}")
        return
    try:
        rating = FeedbackItem(
            message_id=message,
            score=score,
            text=text or None,
            request_id=request_id(source, "feedback", str(row_id)),
        )
    except (ValueError, TypeError) as error:
        yield SourceRecord(where, None, str(error))
        return
    yield SourceRecord(where, HistoricItem(rating, moment))


# ---- UP2D8 (mongoexport JSON Lines) ----

_THUMBS_UP = frozenset({"good", "up", "thumbs_up", "thumbsup", "like", "yes", "positive", "+1"})
_THUMBS_DOWN = frozenset({"bad", "down", "thumbs_down", "thumbsdown", "dislike", "no", "negative"})
_STARS = re.compile(r"([1-5])(?:\s*/\s*5|\s*stars?)?")


def up2d8(feedback: Path | None, analytics: Path | None, source: str = "up2d8") -> Source:
    """UP2D8's feedback (with an interaction per rated message) and analytics events."""
    ratings = _documents(feedback) if feedback is not None else []
    lines = _line_count(analytics) if analytics is not None else 0
    first_rating: dict[str, datetime] = {}
    for _, document, moment, _ in ratings:
        message = document.get("message_id") if document is not None else None
        if isinstance(message, str) and moment is not None:
            known = first_rating.get(message)
            first_rating[message] = moment if known is None else min(known, moment)
    total = len(first_rating) + len(ratings) + lines

    def records() -> Iterator[SourceRecord]:
        for message, first in sorted(first_rating.items(), key=lambda pair: pair[1]):
            yield _rated_message(message, first, source)
        ordered = sorted(
            ratings, key=lambda entry: (entry[2] is None, entry[2] or datetime.min, entry[0])
        )
        for where, document, rated, problem in ordered:
            yield _rating(where, document, rated, problem, source)
        if analytics is not None:
            with analytics.open(encoding="utf-8") as lines_of:
                for number, line in enumerate(lines_of, start=1):
                    if line.strip():
                        yield _event(f"{analytics.name} line {number}", line, source)

    return Source(total, _in_the_past(records()))


Line = tuple[str, dict[str, Any] | None, datetime | None, str | None]
"""(where, document, timestamp, problem) of one line of a JSON Lines export."""


def _documents(path: Path) -> list[Line]:
    """Every line of a JSON Lines export."""
    found: list[Line] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                document = _plain(json.loads(line))
                if not isinstance(document, dict):
                    raise ValueError("not a JSON object")
                found.append((where, document, _time(document.get("timestamp")), None))
            except ValueError as error:
                found.append((where, None, None, str(error)))
    return found


def _rated_message(message: str, moment: datetime, source: str) -> SourceRecord:
    """The interaction a rated UP2D8 message becomes, in a conversation of its own."""
    conversation = "up2d8-" + hashlib.sha256(message.encode()).hexdigest()[:32]
    try:
        turn = InteractionItem(
            conversation,
            message_id=message,
            request_id=request_id(source, "message", message),
        )
    except (ValueError, TypeError) as error:
        return SourceRecord(f"message {message!r}", None, str(error))
    return SourceRecord(f"message {message!r}", HistoricItem(turn, moment))


def _rating(
    where: str,
    document: dict[str, Any] | None,
    moment: datetime | None,
    problem: str | None,
    source: str,
) -> SourceRecord:
    if document is None or problem is not None:
        return SourceRecord(where, None, problem)
    if moment is None:
        return SourceRecord(where, None, "timestamp is required")
    key = _key(document, where)
    try:
        rating = FeedbackItem(
            message_id=_text(document, "message_id"),
            user_id=_text(document, "user_id"),
            request_id=request_id(source, "feedback", key),
            **_rating_value(document.get("rating")),
        )
    except (ValueError, TypeError) as error:
        return SourceRecord(where, None, str(error))
    return SourceRecord(where, HistoricItem(rating, moment))


def _rating_value(rating: Any) -> dict[str, Any]:
    """A free-form UP2D8 rating as a score (1-5, "4/5", "4 stars"), a thumb, or a label."""
    if isinstance(rating, bool) or rating is None:
        raise ValueError(f"rating must be a string or a number, got {rating!r}")
    text = str(rating).strip().lower()
    if text in ("👍",) or text in _THUMBS_UP:
        return {"thumb": True}
    if text in ("👎", "-1") or text in _THUMBS_DOWN:
        return {"thumb": False}
    stars = _STARS.fullmatch(text)
    if stars:
        return {"score": int(stars.group(1))}
    return {"label": text}


def _event(where: str, line: str, source: str) -> SourceRecord:
    try:
        document = _plain(json.loads(line))
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        moment = _required_time(document.get("timestamp"), "timestamp")
        details = document.get("details")
        if details is not None and not isinstance(details, dict):
            raise ValueError("details must be an object")
        event = EventItem(
            _text(document, "user_id") or "",
            _text(document, "event_type") or "",
            details=details,
            event_time=moment,
            request_id=request_id(source, "event", _key(document, where)),
        )
    except (ValueError, TypeError) as error:
        return SourceRecord(where, None, str(error))
    return SourceRecord(where, HistoricItem(event, moment))


def _key(document: dict[str, Any], where: str) -> str:
    """A document's identity: its _id, else its content (the line number moves if edited)."""
    identity = document.get("_id")
    if identity is not None:
        return str(identity)
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _text(document: dict[str, Any], name: str) -> str | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


def _plain(value: Any) -> Any:
    """Extended JSON made plain: {"$oid": s} -> s, {"$date": ...} -> ISO text, numbers unwrapped."""
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((name, inner),) = value.items()
        if name == "$oid":
            return str(inner)
        if name == "$date":
            return _time(inner).isoformat()  # type: ignore[union-attr]
        if name in ("$numberLong", "$numberInt"):
            return int(inner)
        if name in ("$numberDouble", "$numberDecimal"):
            return float(inner)
    return {key: _plain(item) for key, item in value.items()}


def _required_time(value: Any, name: str) -> datetime:
    moment = _time(value)
    if moment is None:
        raise ValueError(f"{name} is required")
    return moment


def _time(value: Any) -> datetime | None:
    """An aware UTC time from text (ISO 8601, SQLite's "YYYY-MM-DD HH:MM:SS"), epoch
    milliseconds or Extended JSON; naive times are UTC. None for None."""
    if value is None:
        return None
    if isinstance(value, dict):
        if "$date" in value:
            return _time(value["$date"])
        if "$numberLong" in value:
            return _time(int(value["$numberLong"]))
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {value!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _line_count(path: Path) -> int:
    with path.open("rb") as lines:
        return sum(1 for line in lines if line.strip())
