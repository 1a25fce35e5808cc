"""Redaction on a real server: what the detector finds never reaches the database (its tables,
SQLite's file and WAL, PostgreSQL's files and WAL), not even from a write that fails, and the
stored records say what was replaced and how their hashes were made."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct

from llmfeedback.proto.feedback.v1 import feedback_pb2, privacy_pb2
from llmfeedback.proto.feedback.v1 import feedback_service_pb2 as pb
from llmfeedback.proto.feedback.v1.feedback_service_pb2_grpc import FeedbackServiceStub
from server.app import privacy_of
from server.config import Settings, parse_settings
from tests.databases import libpq_url
from tests.server_harness import ServerThread

KEY = b"0123456789abcdef0123456789abcdef-test-key"


@pytest.fixture
def stub(server: ServerThread) -> Iterator[FeedbackServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield FeedbackServiceStub(channel)


def _struct(**values: Any) -> Struct:
    struct = Struct()
    struct.update(values)
    return struct


def _secrets() -> dict[str, str]:
    """Values no other test writes, so finding them anywhere on disk means this test leaked."""
    tag = uuid.uuid4().hex
    return {
        "email": f"leak-{tag[:12]}@example.com",
        "failed_email": f"failed-{tag[12:24]}@example.com",
        "token": f"sk-proj-{tag}{tag[:8]}",
        "detail_email": f"detail-{tag[24:]}@example.org",
    }


def _write_everything(stub: FeedbackServiceStub, secret: dict[str, str]) -> None:
    stub.RecordInteraction(
        pb.RecordInteractionRequest(
            conversation_id="c1",
            message_id="m1",
            input_text="my card is 4111 1111 1111 1111",
            metadata=_struct(contact=secret["email"], nested={"key": secret["token"]}),
        )
    )
    stub.SubmitFeedback(
        pb.SubmitFeedbackRequest(
            message_id="m1",
            score=2,
            text=f"it mailed {secret['email']} and showed card 4111-1111-1111-1111",
        )
    )
    with pytest.raises(grpc.RpcError) as failed:  # stored by the writer? never: NOT_FOUND
        stub.SubmitFeedback(
            pb.SubmitFeedbackRequest(
                message_id="never-recorded", score=1, text=f"write {secret['failed_email']}"
            )
        )
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    batch = stub.LogEvents(
        pb.LogEventsRequest(
            events=[
                pb.LogEventRequest(
                    user_id="u",
                    event_type="signup",
                    details=_struct(note=f"from {secret['detail_email']}"),
                ),
                pb.LogEventRequest(user_id="", event_type="bad"),  # rejected item
            ]
        )
    )
    assert (batch.accepted_count, batch.rejected_count) == (1, 1)


def test_personal_data_is_replaced_before_storage_and_counted(
    stub: FeedbackServiceStub, database_url: str
) -> None:
    secret = _secrets()
    _write_everything(stub, secret)

    [feedback] = stub.ListFeedback(pb.ListFeedbackRequest()).feedback
    assert feedback.text == "it mailed <EMAIL> and showed card <CREDIT_CARD>"
    assert dict(feedback.redactions) == {"EMAIL": 1, "CREDIT_CARD": 1}
    [interaction] = stub.ListInteractions(pb.ListInteractionsRequest()).interactions
    assert MessageToDict(interaction.metadata) == {
        "contact": "<EMAIL>",
        "nested": {"key": "<SECRET>"},
    }
    assert dict(interaction.redactions) == {"EMAIL": 1, "SECRET": 1}
    # The prompt was hashed, never stored; its hash is FilAgent's plain SHA-256 by default.
    prompt_hash = hashlib.sha256(b"my card is 4111 1111 1111 1111").hexdigest()
    assert interaction.input_hash == feedback.input_hash == prompt_hash
    assert interaction.input_hash_kind == feedback.input_hash_kind == privacy_pb2.HASH_KIND_SHA256
    [event] = stub.ListEvents(pb.ListEventsRequest()).events
    assert (event.details["note"], dict(event.redactions)) == ("from <EMAIL>", {"EMAIL": 1})

    for value in secret.values():
        assert not _stored_anywhere(database_url, value), value
    assert _stored_anywhere(database_url, "<CREDIT_CARD>")  # the search does find what is there


def _stored_anywhere(database_url: str, needle: str) -> bool:
    """Whether the database holds `needle` anywhere: SQLite's file and WAL; on PostgreSQL its
    tables, and every data file and WAL segment of the cluster when this process may read them
    (as root or the postgres user; the rows alone otherwise)."""
    if database_url.startswith("sqlite"):
        path = Path(database_url.removeprefix("sqlite:///"))
        files = [path, path.with_name(path.name + "-wal")]
        return any(needle.encode() in file.read_bytes() for file in files if file.exists())
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        in_rows = any(
            needle in str(row)
            for table in ("interactions", "feedback", "feedback_history", "events")
            for row in connection.execute(f"SELECT * FROM {table}")
        )
        connection.execute("CHECKPOINT")
        (data_directory,) = connection.execute("SHOW data_directory").fetchone() or ("",)
    search = subprocess.run(
        ["grep", "-rqaF", "--", needle, str(data_directory)], timeout=120, check=False
    )
    return in_rows or search.returncode == 0


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "hash.key"
    path.write_bytes(KEY + b"\n")
    return path


@pytest.mark.database_independent
def test_hash_mode_groups_equal_values_and_hmac_hashes_the_texts_it_is_given(
    settings: Settings, key_file: Path
) -> None:
    hashed = dataclasses.replace(
        settings, redact="text=hash", text_hash="hmac", hash_key_file=str(key_file)
    )
    with ServerThread(hashed) as server, grpc.insecure_channel(server.address) as channel:
        stub = FeedbackServiceStub(channel)
        keyed = stub.RecordInteraction(
            pb.RecordInteractionRequest(conversation_id="c", message_id="m1", input_text="hello")
        )
        given = stub.RecordInteraction(
            pb.RecordInteractionRequest(
                conversation_id="c", message_id="m2", input_hash="ab" * 32, output_text="bye"
            )
        )
        first = stub.SubmitFeedback(
            pb.SubmitFeedbackRequest(
                message_id="m1", user_id="u1", score=1, text="mail Ann@Example.com"
            )
        )
        second = stub.SubmitFeedback(
            pb.SubmitFeedbackRequest(
                message_id="m2", user_id="u2", score=5, text="mail ann@example.com"
            )
        )
        other = stub.SubmitFeedback(
            pb.SubmitFeedbackRequest(
                message_id="m2", user_id="u3", score=5, text="mail bob@example.com"
            )
        )

    text_key = hmac.new(KEY, b"llm-feedback/text", hashlib.sha256).digest()
    assert keyed.interaction.input_hash == hmac.new(text_key, b"hello", "sha256").hexdigest()
    assert keyed.interaction.input_hash_kind == privacy_pb2.HASH_KIND_HMAC_SHA256
    assert keyed.interaction.output_hash_kind == privacy_pb2.HASH_KIND_UNSPECIFIED
    # A client's own SHA-256 is kept as it is, and said to be one.
    assert (given.interaction.input_hash, given.interaction.input_hash_kind) == (
        "ab" * 32,
        privacy_pb2.HASH_KIND_SHA256,
    )
    assert given.interaction.output_hash_kind == privacy_pb2.HASH_KIND_HMAC_SHA256
    # Feedback takes the hashes of the interaction it rates, and how they were made.
    assert first.feedback.input_hash_kind == privacy_pb2.HASH_KIND_HMAC_SHA256
    assert second.feedback.input_hash_kind == privacy_pb2.HASH_KIND_SHA256
    assert first.feedback.text == second.feedback.text != other.feedback.text
    assert first.feedback.text.startswith("mail <EMAIL:")
    assert dict(first.feedback.redactions) == {"EMAIL": 1}


@pytest.mark.database_independent
def test_redaction_off_stores_text_as_sent(settings: Settings) -> None:
    with (
        ServerThread(dataclasses.replace(settings, redact="off")) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = FeedbackServiceStub(channel)
        stub.RecordInteraction(pb.RecordInteractionRequest(conversation_id="c", message_id="m"))
        answer = stub.SubmitFeedback(
            pb.SubmitFeedbackRequest(
                message_id="m", thumb=feedback_pb2.THUMB_UP, text="a@b.example"
            )
        )
    assert (answer.feedback.text, dict(answer.feedback.redactions)) == ("a@b.example", {})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--text-hash", "hmac"], "--hash-key-file"),
        (["--redact", "text=hash"], "--hash-key-file"),
        (["--redact", "comments=placeholder"], "is not CLASS=MODE"),
        (["--redact", "text=scramble"], "is not CLASS=MODE"),
        (["--pii-entities", "EMAIL,FAX"], "FAX"),
    ],
)
def test_privacy_settings_that_cannot_work_are_refused_at_start(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_settings(argv, environ={})
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_short_hash_key_stops_the_server_from_starting(
    settings: Settings, tmp_path: Path
) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"too short")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        privacy_of(dataclasses.replace(settings, text_hash="hmac", hash_key_file=str(short)))


def test_a_text_of_the_maximum_length_is_stored_whole_though_placeholders_lengthen_it(
    stub: FeedbackServiceStub,
) -> None:
    text = ("i@x.io " * 300)[:2000]  # 285 addresses and a cut one, which is none
    stub.RecordInteraction(pb.RecordInteractionRequest(conversation_id="c", message_id="m"))
    stub.SubmitFeedback(pb.SubmitFeedbackRequest(message_id="m", score=3, text=text))

    [stored] = stub.ListFeedback(pb.ListFeedbackRequest()).feedback
    assert stored.text == ("<EMAIL> " * 285) + "i@x.i"
    assert len(stored.text) == 2285
    assert dict(stored.redactions) == {"EMAIL": 285}


def test_large_records_are_redacted_off_the_event_loop_all_the_same(
    stub: FeedbackServiceStub,
) -> None:
    """Past INLINE_REDACTION_CHARS redaction runs on a storage thread: same answers."""
    big = {
        f"k{number}": f"note {number} from z{number}@example.com " + "x" * 150
        for number in range(80)
    }
    answer = stub.LogEvent(
        pb.LogEventRequest(user_id="u", event_type="big", details=_struct(**big))
    )
    batch = stub.LogEvents(
        pb.LogEventsRequest(
            events=[
                pb.LogEventRequest(
                    user_id="u", event_type="many", details=_struct(n=f"{n}@b.example " * 40)
                )
                for n in range(20)
            ]
        )
    )

    details = MessageToDict(answer.event.details)
    assert details["k79"] == "note 79 from <EMAIL> " + "x" * 150
    assert dict(answer.event.redactions) == {"EMAIL": 80}
    assert batch.accepted_count == 20
    events = stub.ListEvents(pb.ListEventsRequest(page_size=50)).events
    many = [event for event in events if event.event_type == "many"]
    assert [dict(event.redactions) for event in many] == [{"EMAIL": 40}] * 20
    assert all("@" not in MessageToDict(event.details)["n"] for event in many)
