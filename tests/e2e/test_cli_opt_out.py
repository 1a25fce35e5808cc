"""feedbackctl opt-out, opt-in and opt-out-status, and what record, submit, log, ingest and import
print for writes about an opted-out user, against the real server, on both databases."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmfeedback import FeedbackClient
from tests.e2e.cli_support import run, write_user
from tests.server_harness import ServerThread

SUPPRESSED = "suppressed: the user opted out, so nothing was stored (not an error)\n"


def test_opt_out_keeps_the_past_and_writes_are_then_suppressed(
    server: ServerThread, client: FeedbackClient, capsys: pytest.CaptureFixture[str]
) -> None:
    write_user(client, "alice")

    code, out, err = run(server, capsys, "opt-out", "alice")
    record = run(server, capsys, "record", "conv-alice", "--message-id", "m2", "--user-id", "alice")
    vote = run(server, capsys, "submit", "--message-id", "alice-m1", "--thumb", "down")
    event = run(server, capsys, "--json", "log", "alice", "page_view")
    stored = run(server, capsys, "--json", "log", "bob", "page_view")

    assert (code, err) == (0, "")
    opt_out = client.get_opt_out("alice").opt_out
    assert out.splitlines() == [
        f"opted out         since {opt_out.opt_out_time.ToJsonString()}: writes are not stored",
        f"user hash         {hashlib.sha256(b'alice').hexdigest()} (sha256)",
        f"requested by      {opt_out.requested_by}",
        "past data         kept (opt-out --erase --yes erases it)",
    ]
    assert record == (0, SUPPRESSED, "")
    assert vote == (0, SUPPRESSED, "")
    assert event[0] == 0
    assert json.loads(event[1]) == {"suppressed": True}
    assert json.loads(stored[1])["id"] > 0
    assert len(list(client.export_user_data("alice"))) == 5  # nothing new, nothing erased


def test_opt_out_with_erase_refuses_without_yes(
    server: ServerThread, client: FeedbackClient, capsys: pytest.CaptureFixture[str]
) -> None:
    write_user(client, "alice")

    code, out, err = run(server, capsys, "opt-out", "alice", "--erase")

    assert (code, out) == (2, "")
    assert err == (
        "feedbackctl: error: this would opt user 'alice' out and erase every interaction, "
        "current and replaced feedback and event stored about them, with their share of every "
        "statistic, and cannot be undone: pass --yes to erase (or leave out --erase to keep "
        "their past)\n"
    )
    state = client.get_opt_out("alice")
    assert not state.HasField("opt_out")
    assert list(state.choices) == []  # nothing was sent
    assert len(list(client.export_user_data("alice"))) == 5


def test_opt_out_with_erase_and_yes_erases_the_past(
    server: ServerThread, client: FeedbackClient, capsys: pytest.CaptureFixture[str]
) -> None:
    write_user(client, "alice")
    write_user(client, "bob")

    code, out, err = run(server, capsys, "opt-out", "alice", "--erase", "--yes")
    _, as_json, _ = run(server, capsys, "--json", "opt-out", "bob", "--erase", "--yes")

    assert (code, err) == (0, "")
    (erasure,) = client.iter_erasures(user_id="alice")
    lines = out.splitlines()
    assert lines[3] == f"past data         erased (erasure {erasure.id})"
    assert lines[4:6] == ["", f"erasure           {erasure.id}"]
    assert lines[-5:] == [
        "ERASED          RECORDS",
        "interactions    1",
        "feedback        1",
        "replaced votes  1",
        "events          2",
    ]
    assert list(client.export_user_data("alice")) == []
    assert run(server, capsys, "log", "alice", "page_view")[1] == SUPPRESSED
    document = json.loads(as_json)
    assert set(document) == {"opt_out", "erasure"}
    assert document["erasure"]["erased"] == {
        "interactions": 1,
        "feedback": 1,
        "replaced_votes": 1,
        "events": 2,
    }
    assert document["opt_out"]["user_hash"] == hashlib.sha256(b"bob").hexdigest()
    assert list(client.export_user_data("bob")) == []


def test_opt_in_and_opt_out_status_show_the_state_and_the_choices(
    server: ServerThread, client: FeedbackClient, capsys: pytest.CaptureFixture[str]
) -> None:
    never = run(server, capsys, "opt-out-status", "alice")
    run(server, capsys, "opt-out", "alice")
    opted_out = run(server, capsys, "opt-out-status", "alice")
    back = run(server, capsys, "opt-in", "alice")
    again = run(server, capsys, "opt-in", "alice")
    as_json = run(server, capsys, "--json", "opt-in", "alice")
    after = run(server, capsys, "opt-out-status", "alice")
    after_json = run(server, capsys, "--json", "opt-out-status", "alice")

    assert never == (
        0,
        "opted out         no: writes about the user are stored\n\nno choices found\n",
        "",
    )
    assert opted_out[0] == 0
    lines = opted_out[1].splitlines()
    assert lines[0].startswith("opted out         since ")
    assert lines[1] == f"user hash         {hashlib.sha256(b'alice').hexdigest()} (sha256)"
    assert lines[3] == ""
    assert re.split(r"\s{2,}", lines[4]) == ["TIME", "CHOICE", "ERASE PAST", "REQUESTED BY"]
    assert lines[5].split()[1:3] == ["opt-out", "no"]
    assert len(lines) == 6
    assert back == (0, "user 'alice' opted back in: writes about them are stored again\n", "")
    assert again == (
        0,
        "user 'alice' was not opted out: nothing changed (the choice is recorded)\n",
        "",
    )
    assert json.loads(as_json[1]) == {"was_opted_out": False}
    rows = after[1].splitlines()
    assert rows[0] == "opted out         no: writes about the user are stored"
    assert [row.split()[1:3] for row in rows[3:]] == [
        ["opt-in", "-"],
        ["opt-in", "-"],
        ["opt-in", "-"],
        ["opt-out", "no"],
    ]
    document = json.loads(after_json[1])
    assert set(document) == {"choices"}  # no opt_out: writes are stored
    assert [choice["action"] for choice in document["choices"]] == [
        "OPT_OUT_ACTION_OPT_IN",
        "OPT_OUT_ACTION_OPT_IN",
        "OPT_OUT_ACTION_OPT_IN",
        "OPT_OUT_ACTION_OPT_OUT",
    ]
    assert document["choices"][-1]["erase_requested"] is False  # printed though false
    assert client.log_event("alice", "page_view").id > 0


def test_ingest_and_import_summaries_count_suppressed_items(
    server: ServerThread,
    client: FeedbackClient,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    client.opt_out_user("bob")
    lines = [
        {"kind": "event", "userId": "alice", "eventType": "page_view"},
        {"kind": "event", "userId": "bob", "eventType": "page_view"},
        {"kind": "interaction", "conversationId": "conv-b", "userId": "bob"},
    ]
    ingest_file = tmp_path / "items.jsonl"
    ingest_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    moment = (datetime.now(UTC) - timedelta(days=2)).isoformat().replace("+00:00", "Z")
    events = [
        {"user_id": user, "event_type": event_type, "timestamp": {"$date": moment}}
        for user, event_type in (("alice", "click"), ("bob", "click"), ("bob", "view"))
    ]
    analytics_file = tmp_path / "analytics.json"
    analytics_file.write_text("".join(json.dumps(event) + "\n" for event in events))

    ingested = run(server, capsys, "ingest", str(ingest_file))
    ingested_json = run(server, capsys, "--json", "ingest", str(ingest_file))
    imported = run(server, capsys, "import", "up2d8", "--analytics", str(analytics_file))
    imported_json = run(
        server, capsys, "--json", "import", "up2d8", "--analytics", str(analytics_file)
    )

    assert ingested[:2] == (
        0,
        "3 items: 1 accepted, 0 rejected, 2 suppressed (their users opted out)\n",
    )
    document = json.loads(ingested_json[1])
    assert (document["accepted_count"], document["duplicate_count"]) == (1, 0)
    assert (document["rejected_count"], document["suppressed_count"]) == (0, 2)
    assert imported[0] == 0
    assert imported[1].splitlines()[0] == (
        "3 records: 1 imported, 0 already there, 0 rejected by the server, "
        "2 suppressed (their users opted out), 0 not importable"
    )
    document = json.loads(imported_json[1])
    assert (document["imported_count"], document["duplicate_count"]) == (0, 1)
    assert document["suppressed_count"] == 2
    stats = client.get_stats()
    assert (stats.events.total_count, stats.interactions.total_count) == (3, 0)


def test_summaries_say_nothing_of_suppression_when_nothing_was(
    server: ServerThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ingest_file = tmp_path / "items.jsonl"
    ingest_file.write_text(json.dumps({"kind": "event", "userId": "a", "eventType": "x"}) + "\n")

    assert run(server, capsys, "ingest", str(ingest_file))[1] == "1 items: 1 accepted, 0 rejected\n"


@pytest.mark.database_independent
@pytest.mark.parametrize("command", ["opt-out", "opt-in", "opt-out-status"])
def test_a_malformed_user_id_exits_1(
    server: ServerThread, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code, out, err = run(server, capsys, command, "not an id")

    assert (code, out) == (1, "")
    assert err.startswith("error: INVALID_ARGUMENT:")
    assert "  user_id: " in err
