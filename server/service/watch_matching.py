"""Which new records a watcher wants: the list filters (storage.records.*Filter) as predicates
on list entries, and an index that finds a record's candidate watchers without testing them all.

The predicates must agree with the SQL of storage.rows.listing for every row; a property test
holds them to it (tests/server/test_watch_matching.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from storage.records import EventFilter, FeedbackFilter, InteractionFilter

W = TypeVar("W")

_EQUAL_FIELDS: dict[str, tuple[str, ...]] = {
    # Most selective first: a watcher is indexed under its first equality.
    "feedback": ("message_id", "conversation_id", "user_id", "label", "model", "rating_kind"),
    "interactions": ("message_id", "conversation_id", "user_id", "model"),
    "events": ("user_id", "event_type"),
}
"""Per kind, the filter fields that are equalities on the entry field of the same name."""


@dataclass(frozen=True, slots=True)
class Match:
    """A watcher's filter as the fan-out uses it."""

    key: tuple[str, Any] | None
    """(field, value) of its most selective equality, the index it is found by; None when it
    has none (it is a candidate for every record)."""
    accepts: Callable[[Any], bool]
    """Whether an entry passes the whole filter."""


def match_of(kind: str, selection: FeedbackFilter | InteractionFilter | EventFilter) -> Match:
    """The Match of a validated filter of `kind` (its time range, if any, is not used)."""
    equalities = tuple(
        (name, getattr(selection, name))
        for name in _EQUAL_FIELDS[kind]
        if getattr(selection, name) is not None
    )
    checks: list[Callable[[Any], bool]] = []
    if isinstance(selection, FeedbackFilter):
        checks.extend(_feedback_checks(selection))

    def accepts(entry: Any) -> bool:
        for name, value in equalities:
            if getattr(entry, name) != value:
                return False
        return all(check(entry) for check in checks)

    return Match(equalities[0] if equalities else None, accepts)


def _feedback_checks(selection: FeedbackFilter) -> Iterator[Callable[[Any], bool]]:
    low, high = selection.min_score, selection.max_score
    if low is not None or high is not None:
        low_value = 1 if low is None else low
        high_value = 5 if high is None else high

        def scored(entry: Any) -> bool:
            return (
                entry.rating_kind == "score"
                and entry.score is not None
                and low_value <= entry.score <= high_value
            )

        yield scored
    # Empty text is no text, as in the lists.
    if selection.has_text is True:
        yield lambda entry: bool(entry.text)
    elif selection.has_text is False:
        yield lambda entry: not entry.text


class WatcherIndex(Generic[W]):
    """The watchers of one kind, by the key of their Match."""

    def __init__(self, kind: str) -> None:
        self._fields = _EQUAL_FIELDS[kind]
        self._keyed: dict[str, dict[Any, dict[W, Match]]] = {name: {} for name in self._fields}
        self._unkeyed: dict[W, Match] = {}
        self.size = 0

    def add(self, watcher: W, match: Match) -> None:
        """Find `watcher` for the entries `match` accepts from now on."""
        if match.key is None:
            self._unkeyed[watcher] = match
        else:
            name, value = match.key
            self._keyed[name].setdefault(value, {})[watcher] = match
        self.size += 1

    def remove(self, watcher: W, match: Match) -> None:
        """Forget `watcher` (added with `match`); a no-op for one not in the index."""
        if match.key is None:
            found = self._unkeyed.pop(watcher, None)
        else:
            name, value = match.key
            by_value = self._keyed[name].get(value)
            found = None if by_value is None else by_value.pop(watcher, None)
            if by_value is not None and not by_value:
                del self._keyed[name][value]
        if found is not None:
            self.size -= 1

    def accepting(self, entry: Any) -> Iterable[W]:
        """The watchers whose filter accepts `entry`."""
        for watcher, match in self._unkeyed.items():
            if match.accepts(entry):
                yield watcher
        for name in self._fields:
            by_value = self._keyed[name]
            if not by_value:
                continue
            candidates = by_value.get(getattr(entry, name))
            if candidates:
                for watcher, match in candidates.items():
                    if match.accepts(entry):
                        yield watcher
