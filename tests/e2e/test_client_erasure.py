"""FeedbackClient's erasure and access-export methods against the real server, on both databases."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from llmfeedback import (
    EventItem,
    FailedPreconditionError,
    Feedback,
    FeedbackClient,
    Interaction,
    InvalidArgumentError,
    SubjectKind,
)
from llmfeedback.proto.feedback.v1 import feedback_service_pb2, privacy_pb2
from storage import Storage
from storage.records import Subject


def write_user(client: FeedbackClient, user: str, *, events: int = 2) -> None:
    """Two chat turns of `user` in their own conversation, a vote replaced by a newer one on the
    first, a vote on the second, and `events` events."""
    conversation = f"conv-{user}"
    for turn in (1, 2):
        client.record_interaction(
            conversation,
            message_id=f"{user}-m{turn}",
            user_id=user,
            model="gpt-4o",
            latency_ms=100.0 * turn,
        )
    client.submit_feedback(message_id=f"{user}-m1", user_id=user, score=2, text="meh")
    client.submit_feedback(message_id=f"{user}-m1", user_id=user, score=5, text="better")
    client.submit_feedback(message_id=f"{user}-m2", user_id=user, thumb=True)
    client.log_events(EventItem(user, "page_view", details={"n": n}) for n in range(events))


def all_stats(
    client: FeedbackClient, since: datetime
) -> list[feedback_service_pb2.GetStatsResponse]:
    """The totals, the groups by user and by model, and hourly buckets for two days from
    `since`."""
    return [
        client.get_stats(),
        client.get_stats(group_by="user"),
        client.get_stats(group_by="model"),
        client.get_stats(start_time=since, end_time=since + timedelta(days=2), bucket="hour"),
    ]


def counts(erasure: privacy_pb2.Erasure) -> tuple[int, int, int, int]:
    erased = erasure.erased
    return erased.interactions, erased.feedback, erased.replaced_votes, erased.events


def test_erase_user_removes_their_records_and_their_share_of_the_stats(
    client: FeedbackClient,
) -> None:
    since = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    write_user(client, "bob", events=1)
    stats_of_bob_alone = all_stats(client, since)
    bob_feedback = list(client.iter_feedback(user_id="bob"))
    write_user(client, "alice")

    erasure = client.erase_user("alice")

    assert counts(erasure) == (2, 2, 1, 2)
    assert erasure.subject_kind == SubjectKind.SUBJECT_KIND_USER
    assert erasure.subject_hash == hashlib.sha256(b"alice").hexdigest()
    assert erasure.subject_hash_kind == privacy_pb2.HASH_KIND_SHA256
    assert erasure.HasField("finish_time")
    assert erasure.finish_time.ToDatetime() >= erasure.start_time.ToDatetime()
    assert erasure.requested_by  # the caller's address: this server has no keys
    assert erasure.batches >= 2  # at least one that deleted and the one that found nothing
    assert not list(client.iter_feedback(user_id="alice"))
    assert not list(client.iter_interactions(user_id="alice"))
    assert not list(client.iter_events(user_id="alice"))
    assert client.list_feedback_history("alice-m1", "alice") == []
    assert all_stats(client, since) == stats_of_bob_alone
    alice_stats = client.get_stats(user_id="alice")
    assert alice_stats.feedback.total_count == 0
    assert alice_stats.interactions.total_count == 0
    assert alice_stats.events.total_count == 0
    assert list(client.iter_feedback(user_id="bob")) == bob_feedback
    assert len(list(client.iter_events(user_id="bob"))) == 1
    # Once it finished, writes about alice are taken again.
    assert client.log_event("alice", "signup").user_id == "alice"


def test_erase_conversation_leaves_events_and_other_conversations(
    client: FeedbackClient,
) -> None:
    write_user(client, "alice")
    write_user(client, "bob", events=1)

    erasure = client.erase_conversation("conv-alice")

    assert counts(erasure) == (2, 2, 1, 0)
    assert erasure.subject_kind == SubjectKind.SUBJECT_KIND_CONVERSATION
    assert erasure.subject_hash == hashlib.sha256(b"conv-alice").hexdigest()
    assert not list(client.iter_interactions(conversation_id="conv-alice"))
    assert len(list(client.iter_events(user_id="alice"))) == 2
    assert len(list(client.iter_feedback(conversation_id="conv-bob"))) == 2
    stats = client.get_stats()
    assert (stats.feedback.total_count, stats.interactions.total_count) == (2, 2)


def test_erasing_again_after_it_finished_makes_a_new_entry(client: FeedbackClient) -> None:
    write_user(client, "alice")
    first = client.erase_user("alice")
    client.log_event("alice", "came_back")

    second = client.erase_user("alice")

    assert second.id > first.id
    assert counts(second) == (0, 0, 0, 1)
    assert counts(client.erase_user("alice")) == (0, 0, 0, 0)


def test_the_erasure_log_pages_newest_first_and_filters_by_subject(
    client: FeedbackClient,
) -> None:
    erased = [
        client.erase_user("alice"),
        client.erase_conversation("conv-1"),
        client.erase_user("bob"),
    ]
    newest_first = [entry.id for entry in reversed(erased)]

    pages = []
    token = ""
    while True:
        page = client.list_erasures(page_size=1, page_token=token)
        pages.append([entry.id for entry in page.erasures])
        token = page.next_page_token
        if not token:
            break

    assert pages == [[newest_first[0]], [newest_first[1]], [newest_first[2]]]
    assert [entry.id for entry in client.iter_erasures(page_size=1)] == newest_first
    assert list(client.iter_erasures()) == list(reversed(erased))
    assert [entry.id for entry in client.iter_erasures(user_id="alice", page_size=1)] == [
        erased[0].id
    ]
    assert [entry.id for entry in client.iter_erasures(conversation_id="conv-1")] == [erased[1].id]
    assert list(client.iter_erasures(user_id="conv-1")) == []  # a user is not a conversation
    with pytest.raises(InvalidArgumentError) as both:
        client.list_erasures(user_id="alice", conversation_id="conv-1")
    assert [violation.field for violation in both.value.field_violations] == ["conversation_id"]


def test_export_user_data_yields_every_record_of_the_user_and_none_of_another(
    client: FeedbackClient,
) -> None:
    write_user(client, "alice", events=1005)  # the events come in two messages of the stream
    write_user(client, "bob")

    records = list(client.export_user_data("alice"))

    kinds = [record.kind for record in records]
    assert kinds == ["interaction"] * 2 + ["feedback"] * 2 + ["replaced_vote"] + ["event"] * 1005
    assert {record.record.user_id for record in records} == {"alice"}
    by_kind = {
        kind: [record.record for record in records if record.kind == kind] for kind in set(kinds)
    }
    assert by_kind["interaction"] == list(
        client.iter_interactions(user_id="alice", order="oldest_first")
    )
    assert by_kind["feedback"] == list(client.iter_feedback(user_id="alice", order="oldest_first"))
    assert by_kind["event"] == list(client.iter_events(user_id="alice", order="oldest_first"))
    (replaced,) = by_kind["replaced_vote"]
    assert isinstance(replaced, Feedback)
    assert (replaced.score, replaced.text) == (2, "meh")
    assert replaced.HasField("replace_time")
    assert replaced.replaced_by_id == by_kind["feedback"][0].id
    history = client.list_feedback_history("alice-m1", "alice")
    assert [vote.id for vote in history] == [replaced.id, by_kind["feedback"][0].id]
    # kind and record unpack like a pair
    kind, record = records[0]
    assert isinstance(record, Interaction)
    assert (kind, record.message_id) == ("interaction", "alice-m1")


def test_export_user_data_of_an_erased_or_unknown_user_is_empty(client: FeedbackClient) -> None:
    write_user(client, "alice")
    client.erase_user("alice")

    assert list(client.export_user_data("alice")) == []
    assert list(client.export_user_data("nobody")) == []


@pytest.mark.database_independent
def test_malformed_ids_are_refused_before_anything_is_erased(client: FeedbackClient) -> None:
    write_user(client, "alice")

    with pytest.raises(InvalidArgumentError) as user:
        client.erase_user("not an id")
    with pytest.raises(InvalidArgumentError) as conversation:
        client.erase_conversation("conv.with.dots")
    with pytest.raises(InvalidArgumentError) as export:
        next(client.export_user_data(""))

    assert [v.field for v in user.value.field_violations] == ["user_id"]
    assert [v.field for v in conversation.value.field_violations] == ["conversation_id"]
    assert [v.field for v in export.value.field_violations] == ["user_id"]
    assert list(client.iter_erasures()) == []
    assert len(list(client.export_user_data("alice"))) == 7


def test_an_interrupted_erasure_refuses_writes_until_it_is_run_again(
    client: FeedbackClient, database_url: str
) -> None:
    """A server that stopped halfway leaves the entry open: writes about the user stay refused
    until EraseUser resumes it. Made here by opening the entry as an erasure's first
    transaction does and running none of its batches."""
    write_user(client, "alice")
    subject = Subject(kind="user", hash=hashlib.sha256(b"alice").hexdigest(), hash_kind="sha256")
    with Storage.connect(database_url) as storage:
        started = storage.write(
            lambda unit: unit.erasures.begin(subject, "a stopped server", datetime.now(UTC))
        )

    with pytest.raises(FailedPreconditionError) as refused:
        client.log_event("alice", "page_view")
    (open_entry,) = client.iter_erasures(user_id="alice")
    resumed = client.erase_user("alice")

    assert refused.value.reason == "ERASURE_IN_PROGRESS"
    assert refused.value.metadata == {"subject_kind": "user"}
    assert client.log_event("bob", "page_view").user_id == "bob"  # others are not refused
    assert open_entry.id == started.id
    assert not open_entry.HasField("finish_time")
    assert open_entry.requested_by == "a stopped server"
    assert resumed.id == started.id
    assert counts(resumed) == (2, 2, 1, 2)
    assert resumed.HasField("finish_time")
    assert client.log_event("alice", "page_view").user_id == "alice"


def test_ids_are_not_reused_after_an_erasure(client: FeedbackClient) -> None:
    """An export resumed from a token taken before an erasure still finds what came after it."""
    client.log_event("alice", "page_view")
    erased = client.log_event("bob", "page_view")
    token = list(client.export_events())[-1].resume_token
    client.erase_user("bob")

    after = client.log_event("carol", "page_view")

    assert after.id > erased.id
    resumed = [
        event.id for chunk in client.export_events(resume_token=token) for event in chunk.records
    ]
    assert resumed == [after.id]
