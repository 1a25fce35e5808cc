"""The PII evaluation's verdicts, table, examples and JSON.

Structured entities have targets because a validator can reach them (checksums, formats);
names depend on context, so PERSON is only reported, like the entities with no agreed target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.pii_cases import (
    CA_SIN,
    CREDIT_CARD,
    EMAIL,
    ENTITIES,
    IBAN,
    IP_ADDRESS,
    PHONE_NUMBER,
    US_SSN,
    Case,
)
from bench.pii_score import EntityScore, Example, Score
from bench.table import aligned

RECALL_TARGET = 0.98
PRECISION_TARGET = 0.95
TARGETED = (EMAIL, CREDIT_CARD, IBAN, IP_ADDRESS, US_SSN, CA_SIN, PHONE_NUMBER)
CONTEXT_CHARACTERS = 50
HEADER = (
    "entity",
    "gold",
    "predicted",
    "TP",
    "precision",
    "recall",
    "F1",
    "exact",
    "target",
    "verdict",
)


@dataclass
class Timing:
    """Speed and cost of the detector, measured by bench.pii_eval."""

    texts: int
    median_wall_us: float
    p99_wall_us: float
    median_cpu_us: float
    """process_time over each 100 texts, per text: the median of those chunks."""
    total_wall_seconds: float
    import_ms: float
    startup_ms: float
    """Construction plus the first call."""
    rss_growth_mib: float
    """ru_maxrss after importing, constructing and first calling, minus before."""


def passed(counts: EntityScore) -> bool:
    """Whether a targeted entity meets both targets; an entity that never occurs passes."""
    recall_ok = counts.recall is None or counts.recall >= RECALL_TARGET
    precision_ok = counts.precision is None or counts.precision >= PRECISION_TARGET
    return recall_ok and precision_ok


def all_passed(score: Score) -> bool:
    """Whether every targeted entity meets its targets."""
    return all(passed(score.entity(name)) for name in TARGETED)


def entity_names(score: Score) -> list[str]:
    """Ours in their usual order, then any other name the detector reported."""
    return [*ENTITIES, *sorted(name for name in score.entities if name not in ENTITIES)]


def render(
    score: Score, cases: Sequence[Case], timing: Timing, title: str, *, quiet: bool = False
) -> str:
    """The table with targets and verdicts, speed and start-up, then examples unless quiet."""
    names = entity_names(score)
    rows = [_row(name, score.entity(name)) for name in names]
    rows.append(_row("all", score.overall(names), verdict=False))
    rows.append(_row("targeted", score.overall(TARGETED), verdict=False))
    negatives = sum(1 for case in cases if not case.spans)
    lines = [
        f"{title}: {len(cases):,} texts, {negatives:,} of them without PII",
        *aligned(HEADER, rows),
        "TP: a prediction overlapping a gold span of its entity (each gold span matched once);"
        " exact: TPs with the gold boundaries",
        "",
        f"speed: median {timing.median_wall_us:,.1f} µs per text (perf_counter, p99 "
        f"{timing.p99_wall_us:,.1f} µs), CPU {timing.median_cpu_us:,.1f} µs per text "
        f"(process_time, median of 100-text chunks); {timing.total_wall_seconds:.2f} s in all",
        f"start-up: import {timing.import_ms:,.1f} ms, construction + first call "
        f"{timing.startup_ms:,.1f} ms; peak RSS growth {timing.rss_growth_mib:,.1f} MiB",
        "",
        "PASS: every targeted entity meets its targets"
        if all_passed(score)
        else "FAIL: " + ", ".join(n for n in TARGETED if not passed(score.entity(n))),
    ]
    if not quiet:
        lines.extend(_examples(score, names))
    return "\n".join(lines)


def _row(name: str, counts: EntityScore, *, verdict: bool = True) -> tuple[str, ...]:
    target, outcome = "-", ""
    if verdict:
        if name in TARGETED:
            target = f"P>={PRECISION_TARGET:g} R>={RECALL_TARGET:g}"
            outcome = "PASS" if passed(counts) else "FAIL"
        else:
            target = "reported only"
    return (
        name,
        str(counts.gold),
        str(counts.predicted),
        str(counts.true_positives),
        _ratio(counts.precision),
        _ratio(counts.recall),
        _ratio(counts.f1),
        _ratio(counts.exact_rate),
        target,
        outcome,
    )


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _examples(score: Score, names: Sequence[str]) -> list[str]:
    lines: list[str] = []
    for label, examples in (
        ("missed", score.missed),
        ("false", score.false),
        ("inexact", score.inexact),
    ):
        for name in names:
            if examples.get(name):
                lines.append("")
                lines.append(f"{name} {label}:")
                lines.extend(f"  {_show(example)}" for example in examples[name])
    return lines


def _show(example: Example) -> str:
    """The span in [[ ]] with some text on either side."""
    text = example.text
    start = max(0, example.start - CONTEXT_CHARACTERS)
    end = min(len(text), example.end + CONTEXT_CHARACTERS)
    shown = (
        ("…" if start else "")
        + text[start : example.start]
        + "[["
        + text[example.start : example.end]
        + "]]"
        + text[example.end : end]
        + ("…" if end < len(text) else "")
    )
    return shown.replace("\n", " ") + (f"  ({example.note})" if example.note else "")


def to_json(score: Score, timing: Timing, settings: dict[str, Any]) -> dict[str, Any]:
    """Everything the table shows, for comparing runs."""

    def counts(name: str, entity: EntityScore) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "gold": entity.gold,
            "predicted": entity.predicted,
            "true_positives": entity.true_positives,
            "exact": entity.exact,
            "precision": entity.precision,
            "recall": entity.recall,
            "f1": entity.f1,
            "exact_rate": entity.exact_rate,
        }
        if name in TARGETED:
            figures["target"] = {"precision": PRECISION_TARGET, "recall": RECALL_TARGET}
            figures["passed"] = passed(entity)
        return figures

    names = entity_names(score)
    return {
        "settings": settings,
        "entities": {name: counts(name, score.entity(name)) for name in names},
        "overall": {
            "all": counts("all", score.overall(names)),
            "targeted": counts("targeted", score.overall(TARGETED)),
        },
        "timing": vars(timing),
        "passed": all_passed(score),
    }
