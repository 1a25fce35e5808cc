"""Matching a detector's spans to the gold ones: counts, precision, recall, F1 per entity.

A prediction is a true positive when it overlaps an unmatched gold span of the same entity;
each gold span is matched at most once, so a number split in two counts one hit and one false
positive. Overlap rather than exact boundaries because redaction that covers the value is what
matters; exact boundaries are reported beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from bench.pii_cases import Case, Span

EXAMPLES_KEPT = 5


class Prediction(NamedTuple):
    """A span a detector reported, its entity as a plain string."""

    start: int
    end: int
    entity: str


class Detector(Protocol):
    """What is evaluated: server.service.pii.detector.Detector, or anything with its `find`."""

    def find(self, text: str) -> Sequence[tuple[int, int, str]]:
        """Sorted, non-overlapping (start, end, entity) spans of `text`."""
        ...


def predictions(found: Iterable[tuple[int, int, str]]) -> list[Prediction]:
    """A detector's results as Predictions (an Entity StrEnum becomes its string value)."""
    return [Prediction(int(start), int(end), str(entity)) for start, end, entity in found]


@dataclass
class EntityScore:
    """The counts for one entity over every case."""

    gold: int = 0
    predicted: int = 0
    true_positives: int = 0
    exact: int = 0
    """True positives whose boundaries are exactly the gold span's."""

    @property
    def precision(self) -> float | None:
        """Hits over predictions; None when nothing was predicted."""
        return self.true_positives / self.predicted if self.predicted else None

    @property
    def recall(self) -> float | None:
        """Hits over gold spans; None when there was no gold span."""
        return self.true_positives / self.gold if self.gold else None

    @property
    def f1(self) -> float | None:
        """The harmonic mean of precision and recall (0 when either is 0 or undefined)."""
        if self.precision is None or self.recall is None:
            return None if self.gold == 0 and self.predicted == 0 else 0.0
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0

    @property
    def exact_rate(self) -> float | None:
        """Exact boundaries over true positives."""
        return self.exact / self.true_positives if self.true_positives else None

    def add(self, other: EntityScore) -> None:
        """Sum `other` into this one (for the overall rows)."""
        self.gold += other.gold
        self.predicted += other.predicted
        self.true_positives += other.true_positives
        self.exact += other.exact


class Example(NamedTuple):
    """A miss or a false positive, to show what to tune."""

    text: str
    start: int
    end: int
    entity: str
    note: str = ""


@dataclass
class Score:
    """Per-entity counts, and a few misses and false positives of each entity."""

    entities: dict[str, EntityScore] = field(default_factory=dict)
    missed: dict[str, list[Example]] = field(default_factory=dict)
    false: dict[str, list[Example]] = field(default_factory=dict)
    inexact: dict[str, list[Example]] = field(default_factory=dict)

    def entity(self, name: str) -> EntityScore:
        """The counts of `name`, created empty on first use."""
        return self.entities.setdefault(name, EntityScore())

    def overall(self, names: Iterable[str]) -> EntityScore:
        """The micro-averaged counts over `names`."""
        total = EntityScore()
        for name in names:
            if name in self.entities:
                total.add(self.entities[name])
        return total


def score(cases: Sequence[Case], found: Sequence[Sequence[Prediction]]) -> Score:
    """Match each case's predictions to its gold spans and sum the counts per entity."""
    result = Score()
    for case, predicted in zip(cases, found, strict=True):
        _score_case(result, case, predicted)
    return result


def _score_case(result: Score, case: Case, predicted: Sequence[Prediction]) -> None:
    for span in case.spans:
        result.entity(span.entity).gold += 1
    matched: set[int] = set()
    for prediction in sorted(predicted):
        counts = result.entity(prediction.entity)
        counts.predicted += 1
        index = _best_gold(case.spans, prediction, matched)
        if index is None:
            _keep(result.false, prediction.entity, _false_example(case, prediction))
            continue
        matched.add(index)
        counts.true_positives += 1
        gold = case.spans[index]
        if (prediction.start, prediction.end) == (gold.start, gold.end):
            counts.exact += 1
        else:
            note = f"gold {case.text[gold.start : gold.end]!r}"
            example = Example(case.text, prediction.start, prediction.end, gold.entity, note)
            _keep(result.inexact, gold.entity, example)
    for index, span in enumerate(case.spans):
        if index not in matched:
            _keep(result.missed, span.entity, _missed_example(case, span, predicted))


def _best_gold(spans: Sequence[Span], prediction: Prediction, matched: set[int]) -> int | None:
    """The unmatched gold span of the same entity that overlaps the prediction the most."""
    best, best_overlap = None, 0
    for index, span in enumerate(spans):
        if index in matched or span.entity != prediction.entity:
            continue
        overlap = min(span.end, prediction.end) - max(span.start, prediction.start)
        if overlap > best_overlap:
            best, best_overlap = index, overlap
    return best


def _false_example(case: Case, prediction: Prediction) -> Example:
    others = [
        span.entity
        for span in case.spans
        if min(span.end, prediction.end) > max(span.start, prediction.start)
    ]
    note = f"on gold {', '.join(others)}" if others else ""
    return Example(case.text, prediction.start, prediction.end, prediction.entity, note)


def _missed_example(case: Case, span: Span, predicted: Sequence[Prediction]) -> Example:
    others = [
        prediction.entity
        for prediction in predicted
        if min(span.end, prediction.end) > max(span.start, prediction.start)
    ]
    note = f"predicted {', '.join(others)}" if others else ""
    return Example(case.text, span.start, span.end, span.entity, note)


def _keep(examples: dict[str, list[Example]], entity: str, example: Example) -> None:
    kept = examples.setdefault(entity, [])
    if len(kept) < EXAMPLES_KEPT:
        kept.append(example)
