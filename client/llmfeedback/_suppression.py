"""The rule that tells a suppressed single write from a stored one, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .proto.feedback.v1 import event_pb2, feedback_pb2, interaction_pb2

__all__ = ["is_suppressed"]


def is_suppressed(
    record: interaction_pb2.Interaction | feedback_pb2.Feedback | event_pb2.Event,
) -> bool:
    """Whether a record returned by `record_interaction`, `submit_feedback` or `log_event` stands
    for a write the server suppressed: its user opted out, so nothing was stored.

    The server then answers OK with an empty record, whose id is 0; every stored record has an id
    from 1 up. Not an error: sending the write again would be suppressed again.
    """
    return record.id == 0
