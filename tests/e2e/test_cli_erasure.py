"""feedbackctl erase, erasures and export-user against the real server, on both databases."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format

from llmfeedback import Event, Feedback, FeedbackClient, Interaction
from tests.e2e.cli_support import run, write_user
from tests.server_harness import ServerThread

MESSAGES = {"interaction": Interaction, "feedback": Feedback, "replaced_vote": Feedback}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An empty folder of the test's own (the SQLite database is in tmp_path)."""
    path = tmp_path / "exports"
    path.mkdir()
    return path


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """A umask that lets files be made readable by all, so only the command keeps them private."""
    previous = os.umask(0o000)
    yield
    os.umask(previous)


def test_erase_refuses_without_yes_saying_what_it_would_erase(
    server: ServerThread, client: FeedbackClient, capsys: pytest.CaptureFixture[str]
) -> None:
    write_user(client, "alice")

    user = run(server, capsys, "erase", "--user", "alice")
    conversation = run(server, capsys, "erase", "--conversation", "conv-alice")

    assert user[:2] == (2, "")
    assert user[2] == (
        "feedbackctl: error: this would erase every interaction, current and replaced feedback "
        "and event of user 'alice', with their share of every statistic, and cannot be undone: "
        "pass --yes to erase\n"
    )
    assert conversation[0] == 2
    assert "conversation 'conv-alice'" in conversation[2]
    assert "(its users' events stay)" in conversation[2]
    assert len(list(client.export_user_data("alice"))) == 5
    assert list(client.iter_erasures()) == []


@pytest.mark.database_independent
@pytest.mark.parametrize(
    "subject",
    [(), ("--user", "alice", "--conversation", "conv-alice")],
    ids=["neither", "both"],
)
def test_erase_takes_exactly_one_subject(
    server: ServerThread, capsys: pytest.CaptureFixture[str], subject: tuple[str, ...]
) -> None:
    code, out, err = run(server, capsys, "erase", *subject, "--yes")

    assert (code, out) == (2, "")
    assert "--user" in err
    assert "--conversation" in err


def test_erase_user_prints_the_finished_erasure(
    server: ServerThread, client: FeedbackClient, capsys: pytest.CaptureFixture[str]
) -> None:
    write_user(client, "alice")
    write_user(client, "bob")

    code, out, err = run(server, capsys, "erase", "--user", "alice", "--yes")

    assert (code, err) == (0, "")
    (erasure,) = client.iter_erasures()
    lines = out.splitlines()
    assert lines[:4] == [
        f"erasure           {erasure.id}",
        "subject           user",
        f"subject hash      {hashlib.sha256(b'alice').hexdigest()} (sha256)",
        f"requested by      {erasure.requested_by}",
    ]
    assert lines[4] == f"started           {erasure.start_time.ToJsonString()}"
    assert lines[5] == f"finished          {erasure.finish_time.ToJsonString()}"
    assert lines[7:] == [
        "",
        "ERASED          RECORDS",
        "interactions    1",
        "feedback        1",
        "replaced votes  1",
        "events          2",
    ]
    assert list(client.export_user_data("alice")) == []
    assert len(list(client.export_user_data("bob"))) == 5


def test_erase_conversation_as_json_has_every_count(
    server: ServerThread, client: FeedbackClient, capsys: pytest.CaptureFixture[str]
) -> None:
    write_user(client, "alice")

    code, out, err = run(server, capsys, "--json", "erase", "--conversation", "conv-alice", "--yes")

    assert (code, err) == (0, "")
    document = json.loads(out)
    assert document["subject_kind"] == "SUBJECT_KIND_CONVERSATION"
    assert document["subject_hash"] == hashlib.sha256(b"conv-alice").hexdigest()
    assert document["erased"] == {
        "interactions": 1,
        "feedback": 1,
        "replaced_votes": 1,
        "events": 0,  # zero counts are printed too
    }
    assert "finish_time" in document
    assert len(list(client.iter_events(user_id="alice"))) == 2


def test_erasures_lists_the_log_newest_first_with_filters_and_a_limit(
    server: ServerThread, client: FeedbackClient, capsys: pytest.CaptureFixture[str]
) -> None:
    write_user(client, "alice")
    for subject in (("--user", "alice"), ("--conversation", "conv-bob"), ("--user", "carol")):
        assert run(server, capsys, "erase", *subject, "--yes")[0] == 0
    entries = list(client.iter_erasures())

    code, out, err = run(server, capsys, "erasures")
    code_limited, limited, cut = run(server, capsys, "erasures", "--limit", "1")
    code_user, of_alice, _ = run(server, capsys, "--json", "erasures", "--user", "alice")
    _, of_conversation, _ = run(server, capsys, "erasures", "--conversation", "conv-bob")
    _, of_nobody, _ = run(server, capsys, "erasures", "--user", "nobody")

    assert (code, err) == (0, "")
    header, *rows = out.splitlines()
    assert re.split(r"\s{2,}", header) == [
        "ID",
        "SUBJECT",
        "SUBJECT HASH",
        "STARTED",
        "FINISHED",
        "INTERACTIONS",
        "FEEDBACK",
        "REPLACED VOTES",
        "EVENTS",
        "REQUESTED BY",
    ]
    assert [row.split()[0] for row in rows] == [str(entry.id) for entry in entries]
    assert [row.split()[1] for row in rows] == ["user", "conversation", "user"]
    assert rows[2].split()[2] == hashlib.sha256(b"alice").hexdigest()[:12]
    assert rows[2].split()[5:9] == ["1", "1", "1", "2"]  # interactions, feedback, replaced, events
    assert code_limited == 0
    assert len(limited.splitlines()) == 2
    assert cut == "(first 1 shown; pass --limit 0 for all)\n"
    assert code_user == 0
    (alice,) = json.loads(of_alice)["erasures"]
    assert alice["id"] == entries[2].id
    assert alice["erased"] == {"interactions": 1, "feedback": 1, "replaced_votes": 1, "events": 2}
    assert [row.split()[1] for row in of_conversation.splitlines()[1:]] == ["conversation"]
    assert of_nobody == "no erasures found\n"


def test_export_user_writes_a_private_file_with_one_line_per_record(
    server: ServerThread,
    client: FeedbackClient,
    capsys: pytest.CaptureFixture[str],
    folder: Path,
    permissive_umask: None,
) -> None:
    write_user(client, "alice")
    write_user(client, "bob")
    expected = list(client.export_user_data("alice"))
    output = folder / "alice.jsonl"

    code, out, err = run(server, capsys, "export-user", "alice", "-o", str(output))

    assert (code, out) == (0, "")
    assert err == (
        f"exported 5 records of user 'alice' to {output} "
        "(interaction 1, feedback 1, replaced_vote 1, event 2)\n"
    )
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert sorted(path.name for path in folder.iterdir()) == ["alice.jsonl"]
    lines = output.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(expected) == 5
    documents = [json.loads(line) for line in lines]
    assert [(document["kind"]) for document in documents] == [kind for kind, _ in expected]
    for document, (kind, record) in zip(documents, expected, strict=True):
        assert set(document) == {"kind", "record"}
        parsed = json_format.ParseDict(document["record"], MESSAGES.get(kind, Event)())
        assert parsed == record
    assert documents[2]["record"]["replaced_by_id"] == documents[1]["record"]["id"]
    assert "user_id" in documents[0]["record"]  # the .proto field names
    assert {document["record"]["user_id"] for document in documents} == {"alice"}


def test_export_user_writes_to_standard_output_without_a_file(
    server: ServerThread, client: FeedbackClient, capsys: pytest.CaptureFixture[str]
) -> None:
    write_user(client, "alice")

    code, out, err = run(server, capsys, "export-user", "alice")
    _, nothing, none_summary = run(server, capsys, "export-user", "nobody")

    assert code == 0
    assert [json.loads(line)["kind"] for line in out.splitlines()] == [
        "interaction",
        "feedback",
        "replaced_vote",
        "event",
        "event",
    ]
    assert err.startswith("exported 5 records of user 'alice' (")
    assert nothing == ""
    assert none_summary == (
        "exported 0 records of user 'nobody' "
        "(interaction 0, feedback 0, replaced_vote 0, event 0)\n"
    )


def test_export_user_replaces_a_file_only_once_complete(
    server: ServerThread,
    client: FeedbackClient,
    capsys: pytest.CaptureFixture[str],
    folder: Path,
    permissive_umask: None,
) -> None:
    write_user(client, "alice")
    output = folder / "alice.jsonl"
    output.write_text("an older export\n", encoding="utf-8")
    output.chmod(0o644)

    refused = run(server, capsys, "export-user", "not an id", "-o", str(output))
    kept = output.read_text(encoding="utf-8")
    code, _, err = run(server, capsys, "export-user", "alice", "-o", str(output))

    assert refused[0] == 1
    assert refused[2].startswith("error: INVALID_ARGUMENT:")
    assert kept == "an older export\n"
    assert code == 0, err
    assert len(output.read_text(encoding="utf-8").splitlines()) == 5
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert [path.name for path in folder.iterdir()] == ["alice.jsonl"]


@pytest.mark.database_independent
def test_export_user_into_a_missing_folder_exits_1(
    server: ServerThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(server, capsys, "export-user", "alice", "-o", str(tmp_path / "no" / "f"))

    assert code == 1
    assert err.startswith(f"error: cannot write {tmp_path / 'no' / 'f'}:")
