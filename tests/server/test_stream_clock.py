"""An Ingest stream's clock estimate keeps the least-delayed sample and replaces per-item skew."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from server.service import EventInput, FeedbackInput, InteractionInput, InvalidArgument
from server.service.stream_clock import StreamClock
from server.service.write_rules import valid_event, valid_interaction

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


class _Clock:
    """A server clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def test_the_offset_is_the_smallest_receive_minus_sent_time_seen() -> None:
    clock = _Clock()
    stream = StreamClock(clock)
    assert stream.offset is None

    stream.observe([InteractionInput(sent_time=NOW - timedelta(seconds=3))])
    assert stream.offset == timedelta(seconds=3)
    clock.now = NOW + timedelta(seconds=10)
    stream.observe(
        [
            EventInput(sent_time=NOW + timedelta(seconds=9.5)),  # the least delayed so far
            InteractionInput(sent_time=NOW),  # waited long in a buffer
        ]
    )
    assert stream.offset == timedelta(seconds=0.5)


def test_items_without_a_usable_sent_time_leave_the_estimate_alone() -> None:
    stream = StreamClock(_Clock())
    stream.observe(
        [
            InteractionInput(),
            FeedbackInput(),
            InvalidArgument([]),
            EventInput(sent_time=datetime(1969, 12, 31, tzinfo=UTC)),
        ]
    )
    assert stream.offset is None


def test_a_stream_offset_replaces_the_items_own_difference() -> None:
    happened = NOW - timedelta(minutes=1)
    waited = NOW - timedelta(seconds=2)  # stamped two seconds before it was validated
    interaction = InteractionInput(conversation_id="c", occur_time=happened, sent_time=waited)
    event = EventInput(user_id="u", event_type="e", event_time=happened, sent_time=waited)

    assert valid_interaction(interaction, NOW).occur_time == happened + timedelta(seconds=2)
    assert valid_interaction(interaction, NOW, timedelta(0)).occur_time == happened
    assert valid_event(event, NOW, timedelta(milliseconds=900)).event_time == happened
    assert valid_event(event, NOW, timedelta(hours=-1)).event_time == happened - timedelta(hours=1)
