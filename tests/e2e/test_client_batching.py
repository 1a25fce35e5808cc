"""The client's batch methods and background batcher against the real server."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from llmfeedback import EventItem, FeedbackClient, FeedbackError, InvalidArgumentError


def test_log_events_reports_each_item(client: FeedbackClient) -> None:
    result = client.log_events(
        [EventItem("alice", "page_view"), {"user_id": "bob", "event_type": "9-bad"}]
    )

    assert (result.accepted_count, result.rejected_count) == (1, 1)
    accepted, rejected = result.results
    assert accepted.accepted
    assert accepted.id > 0
    assert isinstance(rejected.error, InvalidArgumentError)
    assert [v.field for v in rejected.error.field_violations] == ["event_type"]


def test_batcher_delivers_every_event_from_many_threads(client: FeedbackClient) -> None:
    rejected: list[tuple[EventItem, FeedbackError]] = []
    with client.event_batcher(
        max_batch=200, flush_interval=0.05, on_rejected=lambda i, e: rejected.append((i, e))
    ) as batcher:

        def produce(worker: int) -> None:
            for n in range(1000):
                batcher.log(f"user-{worker}", "tick", details={"n": n})

        threads = [threading.Thread(target=produce, args=(worker,)) for worker in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        batcher.log("user-x", "not valid!")
        assert batcher.flush(timeout=30)
        stats = batcher.stats

    assert stats.accepted == 4000
    assert stats.rejected == 1
    assert [item.event_type for item, _ in rejected] == ["not valid!"]
    assert client.get_stats().events.total_count == 4000


def test_ingest_loads_a_mixed_stream(client: FeedbackClient) -> None:
    from llmfeedback import FeedbackItem, InteractionItem

    def items() -> Iterator[InteractionItem | FeedbackItem | EventItem]:
        yield InteractionItem("bulk-conv", message_id="bulk-msg")
        for n in range(1500):
            yield EventItem(f"user-{n % 7}", "import")
        yield FeedbackItem(message_id="bulk-msg", thumb=True)
        yield FeedbackItem(message_id="never-recorded", thumb=False)

    result = client.ingest(items())

    assert (result.received_count, result.accepted_count, result.rejected_count) == (1503, 1502, 1)
    assert [rejection.index for rejection in result.rejections] == [1502]
    stats = client.get_stats()
    assert (stats.events.total_count, stats.feedback.thumbs_up_count) == (1500, 1)
