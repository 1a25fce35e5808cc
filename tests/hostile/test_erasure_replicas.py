"""Two `feedback-server` replicas on one PostgreSQL database erase one user at once while writers
on both keep writing for that user and for others: one erasure, the same answer from both, each
acknowledged write of the user either erased or taken after the erasure finished, no error but
the refusal reaching a client, and the aggregates agreeing with the rows that are left.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from llmfeedback.proto.feedback.v1 import feedback_pb2, stats_pb2
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1 import feedback_service_pb2_grpc as pb_grpc
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from reliability.replica_load import postgres_deadlocks
from tests.e2e.auth_support import outcome_of
from tests.hostile.erasure_support import (
    CALL_TIMEOUT,
    ERASE_TIMEOUT,
    ERASURE_IN_PROGRESS,
    ErasureServer,
    base_time,
    counts_of,
    erasures_of,
    import_items,
    log_problems,
    own_postgres_database,
    rows_with_request_ids,
    seconds,
    stored_request_ids,
    user_items,
    user_rows,
)

pytestmark = [pytest.mark.hostile, pytest.mark.postgres, pytest.mark.timeout(110)]

VICTIM = "raced.victim@example.org"
BYSTANDERS = ("bystander-1", "bystander-2", "bystander-3")
VICTIM_MESSAGES = 3000
WRITERS_PER_REPLICA = 3
WRITE_BEFORE_SECONDS = 1.0
"""How long the writers write before both replicas are asked to erase the victim."""
WRITE_AFTER_SECONDS = 1.0
"""How long they go on once both erasures have returned."""
REFUSED = f"FAILED_PRECONDITION {ERASURE_IN_PROGRESS}"


@dataclass(slots=True)
class Write:
    """One write a writer sent, and how it ended."""

    table: str
    request_id: str
    target: str
    """"victim", "bystander", or "inherited": a vote without a user on one of the victim's
    messages, the victim's while the message's interaction is there."""
    about_victim: bool
    """Whether the row it stores is the victim's (a vote: the user it was stored with)."""
    acknowledged: float = 0.0
    """time.time() when its answer came."""
    outcome: str = ""
    """"OK", or the status code and ErrorInfo reason."""


def _tag(user_id: str) -> str:
    """The user in a conversation id, which takes no '@' or '.'."""
    return "victim" if user_id == VICTIM else user_id


@dataclass
class Writers:
    """Writers on every replica, each one write at a time, for the victim and for others."""

    stubs: list[pb_grpc.FeedbackServiceAsyncStub]
    writes: list[Write] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, seed: int) -> None:
        """Write until `stopping` is set."""
        await asyncio.gather(
            *(
                self._writer(stub, random.Random(seed * 100 + number))
                for number, stub in enumerate(self.stubs * WRITERS_PER_REPLICA)
            )
        )

    async def _writer(self, stub: pb_grpc.FeedbackServiceAsyncStub, chance: random.Random) -> None:
        while not self.stopping.is_set():
            victim = chance.random() < 0.5
            user_id = VICTIM if victim else chance.choice(BYSTANDERS)
            kind = chance.choice(("interaction", "vote", "inherited vote", "event"))
            table = {"interaction": "interactions", "event": "events"}.get(kind, "feedback")
            target = (
                "inherited" if kind == "inherited vote" else "victim" if victim else "bystander"
            )
            write = Write(table, str(uuid.uuid4()), target, target == "victim")
            try:
                await self._send(stub, chance, kind, user_id, write)
                write.outcome = "OK"
            except grpc.RpcError as error:
                failure = outcome_of(error)
                write.outcome = f"{failure.code.name} {failure.reason}".strip()
            write.acknowledged = time.time()
            self.writes.append(write)

    async def _send(
        self,
        stub: pb_grpc.FeedbackServiceAsyncStub,
        chance: random.Random,
        kind: str,
        user_id: str,
        write: Write,
    ) -> None:
        if kind == "interaction":
            request = pb.RecordInteractionRequest(
                conversation_id=f"conv-live-{_tag(user_id)}-{chance.randrange(3)}",
                user_id=user_id,
                model="model-a",
                latency_ms=chance.uniform(1, 500),
                request_id=write.request_id,
            )
            await stub.RecordInteraction(request, timeout=CALL_TIMEOUT)
            return
        if kind == "event":
            event = pb.LogEventRequest(
                user_id=user_id, event_type="view", request_id=write.request_id
            )
            await stub.LogEvent(event, timeout=CALL_TIMEOUT)
            return
        message = f"msg-v-{chance.randrange(VICTIM_MESSAGES)}"
        if kind == "inherited vote":  # the victim's, through the interaction it rates
            vote = pb.SubmitFeedbackRequest(
                message_id=message, thumb=feedback_pb2.THUMB_UP, request_id=write.request_id
            )
        elif write.target == "victim":  # a new vote of the victim on one of its messages
            vote = pb.SubmitFeedbackRequest(
                message_id=message,
                user_id=VICTIM,
                score=chance.randint(1, 5),
                request_id=write.request_id,
            )
        else:  # a bystander's vote on a conversation nobody recorded
            vote = pb.SubmitFeedbackRequest(
                conversation_id=f"conv-votes-{user_id}",
                user_id=user_id,
                score=3,
                request_id=write.request_id,
            )
        answer = await stub.SubmitFeedback(vote, timeout=CALL_TIMEOUT)
        write.about_victim = answer.feedback.user_id == VICTIM


async def race(addresses: list[str]) -> tuple[Writers, list[pb.EraseUserResponse], float]:
    """Writers on every replica, and the victim erased on all of them at the same moment
    meanwhile: (the writers, the erasures' answers, time.time() when EraseUser was called)."""
    async with contextlib.AsyncExitStack() as stack:
        channels = [
            await stack.enter_async_context(grpc.aio.insecure_channel(a)) for a in addresses
        ]
        stubs: list[pb_grpc.FeedbackServiceAsyncStub] = [
            pb_grpc.FeedbackServiceStub(channel)  # the async stub, at run time
            for channel in channels
        ]
        writers = Writers(stubs)
        writing = asyncio.create_task(writers.run(seed=7))
        await asyncio.sleep(WRITE_BEFORE_SECONDS)
        called = time.time()
        request = pb.EraseUserRequest(user_id=VICTIM)
        answers = await asyncio.gather(
            *(stub.EraseUser(request, timeout=ERASE_TIMEOUT) for stub in stubs)
        )
        await asyncio.sleep(WRITE_AFTER_SECONDS)
        writers.stopping.set()
        await writing
    return writers, list(answers), called


def exported_counts(stub: FeedbackServiceStub) -> dict[str, Counter[str]]:
    """Records as the exports stream them, per kind: all, by user, and by score, thumb or type."""
    feedback: Counter[str] = Counter()
    for votes in stub.ExportFeedback(pb.ExportFeedbackRequest(), timeout=60):
        for vote in votes.feedback:
            feedback.update(["all", f"user {vote.user_id}"])
            if vote.WhichOneof("rating") == "score":
                feedback[f"score{vote.score}"] += 1
            elif vote.WhichOneof("rating") == "thumb":
                feedback[feedback_pb2.Thumb.Name(vote.thumb)] += 1
    interactions: Counter[str] = Counter()
    for turns in stub.ExportInteractions(pb.ExportInteractionsRequest(), timeout=60):
        for turn in turns.interactions:
            interactions.update(["all", f"user {turn.user_id}"])
    events: Counter[str] = Counter()
    for chunk in stub.ExportEvents(pb.ExportEventsRequest(), timeout=60):
        for event in chunk.events:
            events.update(["all", f"user {event.user_id}", f"type {event.event_type}"])
    return {"feedback": feedback, "interactions": interactions, "events": events}


def stats_counts(stub: FeedbackServiceStub) -> dict[str, Counter[str]]:
    """The same counts as GetStats gives them, overall and grouped by user."""
    overall = stub.GetStats(pb.GetStatsRequest(), timeout=CALL_TIMEOUT)
    votes = overall.feedback
    feedback = Counter(
        {
            "all": votes.total_count,
            **{f"score{n}": getattr(votes, f"score{n}_count") for n in range(1, 6)},
            "THUMB_UP": votes.thumbs_up_count,
            "THUMB_DOWN": votes.thumbs_down_count,
        }
    )
    interactions = Counter({"all": overall.interactions.total_count})
    events = Counter({"all": overall.events.total_count})
    events.update({f"type {name}": count for name, count in overall.events.type_counts.items()})
    by_user = stub.GetStats(
        pb.GetStatsRequest(group_by=stats_pb2.STATS_GROUP_BY_USER, top_n=1000), timeout=CALL_TIMEOUT
    )
    for group in by_user.groups:
        feedback[f"user {group.key}"] = group.feedback.total_count
        interactions[f"user {group.key}"] = group.interactions.total_count
        events[f"user {group.key}"] = group.events.total_count
    return {"feedback": +feedback, "interactions": +interactions, "events": +events}


def test_two_replicas_erasing_one_user_under_writes_agree_and_keep_only_later_writes(
    postgres_database_url: str, tmp_path: Path
) -> None:
    start = base_time()
    victim, preloaded = user_items(
        VICTIM, messages=VICTIM_MESSAGES, revotes=1000, events=4000, start=start, tag="v"
    )
    others: list[pb.ImportItem] = []
    for number, user_id in enumerate(BYSTANDERS):
        others += user_items(
            user_id, messages=200, revotes=50, events=200, start=start, tag=f"b{number}"
        )[0]

    with contextlib.ExitStack() as stack:
        database = stack.enter_context(own_postgres_database())
        replicas = [ErasureServer(database, tmp_path / f"replica-{n}.log") for n in range(2)]
        for replica in replicas:
            stack.callback(replica.stop)
            replica.start()
        stubs = [
            FeedbackServiceStub(stack.enter_context(grpc.insecure_channel(r.address)))
            for r in replicas
        ]
        import_items(stubs[0], others[:500] + victim + others[500:])
        assert user_rows(database, VICTIM) == preloaded.by_table()
        deadlocks_before = postgres_deadlocks(database)

        writers, answers, called = asyncio.run(race([replica.address for replica in replicas]))

        first, second = (answer.erasure for answer in answers)
        assert (first.id, first.erased, first.batches) == (second.id, second.erased, second.batches)
        assert first.HasField("finish_time")
        for stub in stubs:
            assert [entry.id for entry in erasures_of(stub, VICTIM)] == [first.id]
        finished = seconds(first.finish_time)

        outcomes = Counter((write.target, write.outcome) for write in writers.writes)
        print(f"{len(writers.writes)} writes {dict(outcomes)}; erased {counts_of(first.erased)}")
        failed = {
            key: count
            for key, count in outcomes.items()
            if key[1] != "OK" and (key[1] != REFUSED or key[0] == "bystander")
        }
        assert failed == {}, "writes failed otherwise than refused for the erasure"
        refused = [write.request_id for write in writers.writes if write.outcome == REFUSED]
        assert refused, "no write was refused while the erasure ran"
        assert rows_with_request_ids(database, refused) == 0, "a refused write was stored"

        stored = [write for write in writers.writes if write.outcome == "OK" and write.about_victim]
        before = [write.request_id for write in stored if write.acknowledged < called]
        assert before, "no write of the victim was acknowledged before the erasure"
        assert rows_with_request_ids(database, before) == 0, (
            "a write from before the erasure is left"
        )
        left = user_rows(database, VICTIM)
        left_ids = set().union(*stored_request_ids(database, VICTIM).values())
        assert len(left_ids) == sum(left.values()), "rows of the victim from before are left"
        by_request = {write.request_id: write for write in writers.writes}
        early = [
            request_id for request_id in left_ids if by_request[request_id].acknowledged < finished
        ]
        assert early == [], (
            "rows of the victim left that were acknowledged before the erasure ended"
        )

        erased_writes = Counter(write.table for write in stored if write.request_id not in left_ids)
        erased = counts_of(first.erased)
        assert erased.interactions == preloaded.interactions + erased_writes["interactions"]
        assert erased.events == preloaded.events + erased_writes["events"]
        assert (
            erased.feedback + erased.replaced_votes
            == preloaded.feedback + preloaded.replaced_votes + erased_writes["feedback"]
        )

        exported = exported_counts(stubs[0])
        for stub in stubs:
            assert stats_counts(stub) == {kind: +counts for kind, counts in exported.items()}
        print(f"deadlocks PostgreSQL broke: {postgres_deadlocks(database) - deadlocks_before}")
    assert log_problems(*replicas) == []
