"""What GetStats answers as plain numbers, so an answer can be checked against SQL exactly."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1 import stats_pb2

AVERAGE_TOLERANCE = 1e-9
"""Relative: sums of floats added in another order differ in the last bits, never more."""


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Counts (exact) and averages of one selection; zero counts and unset averages are left out.

    Keys name the figure: "feedback.total", "feedback.score4", "feedback.label.good",
    "interactions.total", "events.type.page_view", "feedback.avg_latency_ms"...
    """

    counts: Mapping[str, int] = field(default_factory=dict)
    averages: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, counts: Mapping[str, int], averages: Mapping[str, float | None]) -> Aggregate:
        """Drop zero counts and unset averages, so "absent" and "zero" compare equal."""
        return cls(
            {key: value for key, value in counts.items() if value},
            {key: value for key, value in averages.items() if value is not None},
        )


def restricted(aggregate: Aggregate, *prefixes: str) -> Aggregate:
    """Only the figures whose key starts with one of `prefixes` ("feedback.", "events."...)."""
    return Aggregate(
        {key: value for key, value in aggregate.counts.items() if key.startswith(prefixes)},
        {key: value for key, value in aggregate.averages.items() if key.startswith(prefixes)},
    )


def combined(*parts: Aggregate) -> Aggregate:
    """The figures of several parts (of different tables) together."""
    counts: dict[str, int] = {}
    averages: dict[str, float] = {}
    for part in parts:
        counts.update(part.counts)
        averages.update(part.averages)
    return Aggregate(counts, averages)


def differences(expected: Aggregate, actual: Aggregate) -> list[str]:
    """Every figure where `actual` (GetStats) differs from `expected` (SQL); empty when equal."""
    found: list[str] = []
    for key in sorted(expected.counts.keys() | actual.counts.keys()):
        want, got = expected.counts.get(key, 0), actual.counts.get(key, 0)
        if want != got:
            found.append(f"{key}: SQL {want}, GetStats {got}")
    for key in sorted(expected.averages.keys() | actual.averages.keys()):
        want_average, got_average = expected.averages.get(key), actual.averages.get(key)
        if (
            want_average is None
            or got_average is None
            or not math.isclose(want_average, got_average, rel_tol=AVERAGE_TOLERANCE)
        ):
            found.append(f"{key}: SQL {want_average}, GetStats {got_average}")
    return found


def from_response(response: pb.GetStatsResponse) -> Aggregate:
    """The figures of a GetStats answer (its overall part, not buckets or groups)."""
    return from_parts(
        response.feedback if response.HasField("feedback") else None,
        response.interactions if response.HasField("interactions") else None,
        response.events if response.HasField("events") else None,
    )


def from_bucket(bucket: stats_pb2.StatsBucket) -> Aggregate:
    """The figures of one time bucket of a GetStats answer."""
    return from_parts(
        bucket.feedback if bucket.HasField("feedback") else None,
        bucket.interactions if bucket.HasField("interactions") else None,
        bucket.events if bucket.HasField("events") else None,
    )


def from_parts(
    feedback: stats_pb2.FeedbackStats | None,
    interactions: stats_pb2.InteractionStats | None,
    events: stats_pb2.EventStats | None,
) -> Aggregate:
    """The figures of the parts a GetStats answer (or one of its buckets) carries."""
    counts: dict[str, int] = {}
    averages: dict[str, float | None] = {}
    if feedback is not None:
        counts.update(
            {
                "feedback.total": feedback.total_count,
                "feedback.scored": feedback.scored_count,
                "feedback.score1": feedback.score1_count,
                "feedback.score2": feedback.score2_count,
                "feedback.score3": feedback.score3_count,
                "feedback.score4": feedback.score4_count,
                "feedback.score5": feedback.score5_count,
                "feedback.thumbs_up": feedback.thumbs_up_count,
                "feedback.thumbs_down": feedback.thumbs_down_count,
                "feedback.labelled": sum(feedback.label_counts.values()),
                "feedback.with_text": feedback.with_text_count,
            }
        )
        counts.update({f"feedback.label.{k}": v for k, v in feedback.label_counts.items()})
        averages["feedback.avg_score"] = _optional(feedback, "avg_score")
        averages["feedback.avg_latency_ms"] = _optional(feedback, "avg_latency_ms")
        averages["feedback.avg_tokens"] = _optional(feedback, "avg_tokens")
    if interactions is not None:
        counts["interactions.total"] = interactions.total_count
        averages["interactions.avg_latency_ms"] = _optional(interactions, "avg_latency_ms")
        averages["interactions.avg_total_tokens"] = _optional(interactions, "avg_total_tokens")
    if events is not None:
        counts["events.total"] = events.total_count
        counts.update({f"events.type.{k}": v for k, v in events.type_counts.items()})
    return Aggregate.of(counts, averages)


def _optional(
    message: stats_pb2.FeedbackStats | stats_pb2.InteractionStats, name: str
) -> float | None:
    return float(getattr(message, name)) if message.HasField(name) else None  # type: ignore[arg-type]
