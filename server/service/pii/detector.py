"""Finds personal data in a text: the structured recognizers first, then phone numbers and
names over what they left, each character claimed at most once."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import phonenumbers

from server.service.pii import checksums
from server.service.pii.entities import Entity
from server.service.pii.names import find_names, gazetteer
from server.service.pii.recognizers import STRUCTURED, Recognizer

_NOT_DIGITS = str.maketrans("", "", "0123456789")
_NOT_DIGIT = re.compile(r"\D")
_GROUP_BREAK = re.compile(r"[ \t\-.()/]+")
MAX_DROPPED_GROUPS = 3
MIN_PHONE_PARSES = 16
CHARACTERS_PER_PHONE_PARSE = 200
"""About 0.2 us of parsing per character of a record's text, after MIN_PHONE_PARSES."""
DEFAULT_PHONE_REGIONS = ("US",)
"""Regions whose national formats are understood; "+" international numbers always are."""


class Found(NamedTuple):
    """One entity in a text, by str indices."""

    start: int
    end: int
    entity: Entity


class ParseBudget:
    """The phone number parses one record may cost: MIN_PHONE_PARSES, and one more per
    CHARACTERS_PER_PHONE_PARSE characters of its texts."""

    def __init__(self) -> None:
        """A budget before any text."""
        self._left = MIN_PHONE_PARSES
        self._characters = 0

    def add(self, text: str) -> None:
        """Grow the budget by what `text` brings."""
        self._characters += len(text)
        self._left += self._characters // CHARACTERS_PER_PHONE_PARSE
        self._characters %= CHARACTERS_PER_PHONE_PARSE

    def spend(self, parses: int) -> bool:
        """Take `parses` if they are left; False (taking none) when they are not."""
        if parses > self._left:
            return False
        self._left -= parses
        return True


class Detector:
    """Finds the enabled entities; thread-safe and reusable (build one per process)."""

    def __init__(
        self,
        entities: Iterable[Entity] = tuple(Entity),
        *,
        phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
    ) -> None:
        """Read the name gazetteer now when names are enabled, not on the first write."""
        self.entities = frozenset(entities)
        self._recognizers = tuple(r for r in STRUCTURED if r.entity in self.entities)
        self._phone_regions = tuple(phone_regions)
        for region in self._phone_regions:
            if region not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"unknown phone region {region!r}")
        if Entity.PERSON in self.entities:
            gazetteer()

    def find(self, text: str, budget: ParseBudget | None = None) -> list[Found]:
        """The entities in `text`, sorted and never overlapping.

        `budget` bounds the phone number parses of several texts of one record together (a
        new one per call otherwise): see _phones."""
        if not text:
            return []
        digits = _digit_count(text)
        claimed: list[Found] = []
        for recognizer in self._recognizers:
            if recognizer.needs is None or recognizer.needs(text, digits):
                claimed.extend(_claim(claimed, _matches(recognizer, text)))
        if Entity.PHONE_NUMBER in self.entities and digits >= 7:
            budget = budget or ParseBudget()
            budget.add(text)
            claimed.extend(_claim(claimed, self._phones(_masked(text, claimed), budget)))
        if Entity.PERSON in self.entities and any(c.isupper() for c in text):
            masked = _masked(text, claimed)
            names = (Found(start, end, Entity.PERSON) for start, end in find_names(masked))
            claimed.extend(_claim(claimed, _merged(names)))
        claimed.sort()
        return claimed

    def _phones(self, text: str, budget: ParseBudget) -> Iterable[Found]:
        """Candidates of a phone number's shape, kept when phonenumbers finds a valid number
        (an assigned prefix of the right length) in one of the regions, or in the one a "+"
        names. PhoneNumberMatcher does the same but spent 150 us on a short text.

        A parse costs about 40 us, so a record's texts share a ParseBudget: a hostile record of
        digit groups would otherwise hold the event loop for a second. Past the budget, every
        candidate with a phone number's count of digits is taken as one: too much is redacted
        rather than too little.
        """
        for match in _PHONE.finditer(text):
            start, end = match.span()
            if _NOT_PHONE.fullmatch(text, start, end) or checksums.book_number(
                _NOT_DIGIT.sub("", text[start:end])
            ):
                continue
            for left, right in _group_runs(text, start, end):
                candidate = text[left:right]
                if not 7 <= _digit_count(candidate) <= 15:
                    continue
                if not budget.spend(len(self._phone_regions)) or self._valid_phone(candidate):
                    yield Found(left, right, Entity.PHONE_NUMBER)
                    break

    def _valid_phone(self, candidate: str) -> bool:
        return any(_valid_phone(candidate, region) for region in self._phone_regions)


_PHONE = re.compile(
    r"(?<![\w+\-./:])(?:\+|00)?\(?\d[\d\t ().\-/]{5,24}\d(?:\s?(?:x|ext\.?)\s?\d{1,6})?"
    r"(?![\w\-/]|[.:]\d)"
)
_NOT_PHONE = re.compile(
    r"\d{4}[\-/.]\d{1,2}[\-/.]\d{1,2}|\d{1,2}[\-/.]\d{1,2}[\-/.]\d{2,4}|\d{1,3}(?:\.\d{1,3}){1,3}"
)
"""Dates and dotted version numbers have a phone number's digits but are neither."""


def _valid_phone(candidate: str, region: str) -> bool:
    if candidate.startswith("00"):
        candidate = "+" + candidate[2:]
    try:
        number = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


def _group_runs(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """The whole candidate, then runs of its groups with up to MAX_DROPPED_GROUPS dropped at
    either end, longest first: "call 415-555-2671 2 times" holds a number in its first three
    groups. Bounded, so a candidate of many short groups costs a few checks, not hundreds."""
    breaks = [m.span() for m in _GROUP_BREAK.finditer(text, start, end)]
    starts = [start, *[after for _, after in breaks][:MAX_DROPPED_GROUPS]]
    ends = [*[before for before, _ in breaks][-MAX_DROPPED_GROUPS:], end]
    runs = [(left, right) for left in starts for right in ends if left < right]
    runs.sort(key=lambda run: run[0] - run[1])
    yield from runs


def _matches(recognizer: Recognizer, text: str) -> Iterable[Found]:
    for match in recognizer.pattern.finditer(text):
        start, end = match.span()
        for name, value in match.groupdict().items():
            if value is not None:
                start, end = match.span(name)
                break
        if recognizer.check is None or recognizer.check(text[start:end]):
            yield Found(start, end, recognizer.entity)
        elif recognizer.split:
            part = _valid_part(recognizer, text, start, end)
            if part is not None:
                yield part


def _digit_count(text: str) -> int:
    return len(text) - len(text.translate(_NOT_DIGITS))


def _valid_part(recognizer: Recognizer, text: str, start: int, end: int) -> Found | None:
    """The longest run of whole groups of a failed candidate that passes the check."""
    assert recognizer.check is not None
    for left, right in _group_runs(text, start, end):
        if recognizer.check(text[left:right]):
            return Found(left, right, recognizer.entity)
    return None


def _claim(claimed: Sequence[Found], candidates: Iterable[Found]) -> list[Found]:
    """The candidates that touch no character already claimed (nor each other)."""
    taken = sorted((found.start, found.end) for found in claimed)
    kept: list[Found] = []
    for candidate in candidates:
        at = bisect.bisect_left(taken, (candidate.start, candidate.end))
        before = taken[at - 1] if at > 0 else None
        after = taken[at] if at < len(taken) else None
        if (before is None or before[1] <= candidate.start) and (
            after is None or candidate.end <= after[0]
        ):
            taken.insert(at, (candidate.start, candidate.end))
            kept.append(candidate)
    return kept


def _merged(spans: Iterable[Found]) -> list[Found]:
    """Overlapping spans of one entity joined into one."""
    merged: list[Found] = []
    for span in sorted(spans):
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Found(last.start, max(last.end, span.end), last.entity)
        else:
            merged.append(span)
    return merged


def _masked(text: str, claimed: Sequence[Found]) -> str:
    """`text` with claimed characters blanked out, so later recognizers cannot see them."""
    if not claimed:
        return text
    characters = list(text)
    for found in claimed:
        characters[found.start : found.end] = "\0" * (found.end - found.start)
    return "".join(characters)
