"""The client's batch methods and background batcher against the real server."""

from __future__ import annotations

import threading

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
