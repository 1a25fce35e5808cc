"""A/B pairs: two servers that differ in one thing, measured in alternating rounds of one load.

One long run per side lets a burst of other work on this shared machine land on one side only.
Short rounds in alternating order (A B, B A, A B, ...) spread drift over both sides, and the
median of each round's own ratio compares figures taken seconds apart. Server CPU per call is
reported beside req/s because it hardly moves with the machine's other load.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.results import OK, PhaseResult

BASELINE = "baseline"
VARIANT = "variant"
"""The two sides of a pair, as recorded in each round's extra["side"]."""


@dataclass(frozen=True, slots=True)
class PairSpec:
    """What a pair compares: the phase name of its rounds and the question it answers."""

    name: str
    phase: str
    question: str
    ratio_label: str
    """What the ratios divide, in the table."""


AUTH = PairSpec(
    "auth",
    "auth-round",
    "durable SubmitFeedback, --auth keys with an ingest key over --auth none (fresh databases)",
    "with key / without",
)
BOUNDARY = PairSpec(
    "boundary",
    "boundary-round",
    "empty ceiling, handlers registered stream-unary reading with context.read() over unary",
    "stream-unary / unary",
)
PAIRS = (AUTH, BOUNDARY)


@dataclass(frozen=True, slots=True)
class SideSummary:
    """One side of a pair: medians over its rounds, and its rows summed over them."""

    server: str
    rounds: int
    throughput: float | None
    p50_ms: float | None
    p99_ms: float | None
    cpu_us_per_call: float | None
    acknowledged: int | None
    stored: int | None
    """Each round checks its own rows; these sums are for the reader (None: no database)."""


@dataclass(frozen=True, slots=True)
class PairSummary:
    """A pair's verdict: each ratio is variant over baseline, the median of the rounds' own."""

    name: str
    question: str
    ratio_label: str
    method: str
    concurrency: int
    requests_per_round: int
    baseline: SideSummary
    variant: SideSummary
    throughput_ratio: float | None
    p99_ratio: float | None
    cpu_ratio: float | None
    cpu_us_difference: float | None
    """Median of the rounds' variant-minus-baseline CPU µs per call: what the difference costs."""
    round_throughput_ratios: list[float]

    def to_json(self) -> dict[str, Any]:
        """The pair as a JSON object."""
        return asdict(self)


def summarize_pairs(phases: Sequence[PhaseResult]) -> list[PairSummary]:
    """A summary of every pair whose rounds ran (at least one round with both sides ok)."""
    summaries = []
    for spec in PAIRS:
        rounds = _rounds(phases, spec.phase)
        if rounds:
            summaries.append(_summarize(spec, rounds))
    return summaries


def find_pair(summaries: Sequence[PairSummary], name: str) -> PairSummary | None:
    """The summary of the pair called `name`, if it ran."""
    return next((summary for summary in summaries if summary.name == name), None)


def _rounds(phases: Sequence[PhaseResult], phase: str) -> list[tuple[PhaseResult, PhaseResult]]:
    """(baseline, variant) of each round in which both sides ran without error."""
    sides: dict[int, dict[str, PhaseResult]] = {}
    for result in phases:
        if result.phase == phase and result.status == OK and result.throughput is not None:
            sides.setdefault(int(result.extra["round"]), {})[str(result.extra["side"])] = result
    return [
        (found[BASELINE], found[VARIANT])
        for _, found in sorted(sides.items())
        if BASELINE in found and VARIANT in found
    ]


def _summarize(spec: PairSpec, rounds: list[tuple[PhaseResult, PhaseResult]]) -> PairSummary:
    baselines = [baseline for baseline, _ in rounds]
    variants = [variant for _, variant in rounds]
    first = baselines[0]
    throughput_ratios = _paired(rounds, lambda phase: phase.throughput, _divide)
    return PairSummary(
        name=spec.name,
        question=spec.question,
        ratio_label=spec.ratio_label,
        method=first.method,
        concurrency=first.concurrency,
        requests_per_round=int(first.extra["requests"]),
        baseline=_side(baselines),
        variant=_side(variants),
        throughput_ratio=_median(throughput_ratios),
        p99_ratio=_median(_paired(rounds, lambda phase: phase.p99_ms, _divide)),
        cpu_ratio=_median(_paired(rounds, lambda phase: phase.cpu_us_per_call, _divide)),
        cpu_us_difference=_median(
            _paired(rounds, lambda phase: phase.cpu_us_per_call, lambda b, v: v - b)
        ),
        round_throughput_ratios=throughput_ratios,
    )


def _side(results: list[PhaseResult]) -> SideSummary:
    checks = [result.rows for result in results if result.rows is not None]
    return SideSummary(
        server=results[0].server,
        rounds=len(results),
        throughput=_median([r.throughput for r in results if r.throughput is not None]),
        p50_ms=_median([r.p50_ms for r in results if r.p50_ms is not None]),
        p99_ms=_median([r.p99_ms for r in results if r.p99_ms is not None]),
        cpu_us_per_call=_median([r.cpu_us_per_call for r in results if r.cpu_us_per_call]),
        acknowledged=sum(check.acknowledged or 0 for check in checks) if checks else None,
        stored=sum(check.stored for check in checks) if checks else None,
    )


def _paired(
    rounds: list[tuple[PhaseResult, PhaseResult]],
    figure: Callable[[PhaseResult], float | None],
    combine: Callable[[float, float], float | None],
) -> list[float]:
    """`combine(baseline, variant)` of a figure, round by round, where both sides have it."""
    values = []
    for baseline, variant in rounds:
        base, other = figure(baseline), figure(variant)
        if base is not None and other is not None:
            combined = combine(base, other)
            if combined is not None:
                values.append(combined)
    return values


def _divide(baseline: float, variant: float) -> float | None:
    return variant / baseline if baseline else None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
