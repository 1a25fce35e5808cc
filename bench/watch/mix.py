"""The writes and the watch filters of the watch bench, declared once: four write bodies (one
h2load each, 16 connections apiece: c=64 in all) and the kinds of watchers, most of them
following a conversation or user that gets no writes (the usual watch: one conversation)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.payloads import grpc_frame
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb

WRITE_CONVERSATIONS = ("watch-c0", "watch-c1", "watch-c2", "watch-c3")
WRITE_SCORES = (1, 2, 4, 5)


def write_bodies() -> list[bytes]:
    """One SubmitFeedback body per write stream: its conversation and score."""
    return [
        grpc_frame(
            pb.SubmitFeedbackRequest(
                conversation_id=conversation,
                score=score,
                text="Clear and concise answer",
                latency_ms=125.5,
                tokens_used=420,
            ).SerializeToString()
        )
        for conversation, score in zip(WRITE_CONVERSATIONS, WRITE_SCORES, strict=True)
    ]


@dataclass(frozen=True)
class WatchKind:
    """Watchers that share a kind of filter."""

    name: str
    share: float
    """Of all watchers (the idle kind takes what the others leave)."""
    request: Callable[[int], pb.WatchFeedbackRequest]
    """The request of the kind's watcher number n."""
    matches: float
    """The share of the writes each of its watchers receives."""

    def count(self, total: int) -> int:
        """How many of `total` watchers are of this kind."""
        if self.share < 0:
            others = sum(kind.count(total) for kind in WATCH_MIX if kind.share >= 0)
            return total - others
        return max(1, round(total * self.share))


WATCH_MIX = (
    WatchKind("everything", 0.0025, lambda n: pb.WatchFeedbackRequest(), 1.0),
    WatchKind(
        "one written conversation",
        0.01,
        lambda n: pb.WatchFeedbackRequest(conversation_id=WRITE_CONVERSATIONS[n % 4]),
        0.25,
    ),
    WatchKind("bad scores (<= 2)", 0.005, lambda n: pb.WatchFeedbackRequest(max_score=2), 0.5),
    WatchKind(
        "a model, with text",
        0.005,
        lambda n: pb.WatchFeedbackRequest(model="no-such-model", has_text=True),
        0.0,
    ),
    WatchKind(
        "an idle user",
        0.25,
        lambda n: pb.WatchFeedbackRequest(user_id=f"idle-user-{n}"),
        0.0,
    ),
    WatchKind(
        "an idle conversation",
        -1,
        lambda n: pb.WatchFeedbackRequest(conversation_id=f"idle-conversation-{n}"),
        0.0,
    ),
)
