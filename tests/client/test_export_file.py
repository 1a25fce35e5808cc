"""Export files: flat rows per kind, and a sidecar that makes any interruption resumable."""

from __future__ import annotations

import csv
import json
import os
import stat
from typing import TYPE_CHECKING, Any

import pytest
from google.protobuf import timestamp_pb2

from llmfeedback import Event, Feedback, Interaction
from llmfeedback._export_file import COLUMNS, ExportFile, ExportFileError, Kind, rows, sidecar_path
from llmfeedback.proto.feedback.v1 import feedback_pb2, privacy_pb2

if TYPE_CHECKING:
    from pathlib import Path

    from google.protobuf.message import Message

EMPTY: dict[Kind, Message] = {
    "feedback": Feedback(),
    "interactions": Interaction(),
    "events": Event(),
}
SELECTION = {"filters": {"user_id": "u"}, "order": None}


@pytest.mark.parametrize("kind", ["feedback", "interactions", "events"])
def test_rows_have_exactly_the_columns_of_their_kind(kind: Kind) -> None:
    [row] = rows(kind, [EMPTY[kind]])

    assert tuple(row) == COLUMNS[kind]


def test_feedback_rows_flatten_the_rating_and_keep_absent_values_none() -> None:
    entry = Feedback(
        id=7,
        thumb=feedback_pb2.THUMB_DOWN,
        latency_ms=0.0,
        create_time=timestamp_pb2.Timestamp(seconds=1, nanos=500_000_000),
    )
    entry.metadata.update({"n": 2, "list": [1.5, "x"], "empty": {}})

    [row] = rows("feedback", [entry])

    assert row["rating_kind"] == "thumb"
    assert (row["score"], row["thumb"], row["label"]) == (None, "down", None)
    assert row["latency_ms"] == 0.0
    assert row["tokens_used"] is None
    assert row["conversation_id"] is None
    assert row["create_time"] == "1970-01-01T00:00:01.500Z"
    assert row["metadata"] == {"n": 2, "list": [1.5, "x"], "empty": {}}


def test_interaction_and_event_rows_carry_every_field_as_stored() -> None:
    interaction = Interaction(
        id=3,
        conversation_id="c",
        model="m",
        output_hash="h",
        output_hash_kind=privacy_pb2.HASH_KIND_HMAC_SHA256,
        latency_ms=0.0,
        redactions={"EMAIL": 2},
    )
    interaction.occur_time.seconds, interaction.create_time.seconds = 2, 3
    interaction.prompt_tokens, interaction.total_tokens = 0, 5  # a set zero is not absent
    event = Event(id=4, user_id="u", event_type="view", event_time=timestamp_pb2.Timestamp())
    event.details.update({"page": "/"})

    [interaction_row] = rows("interactions", [interaction])
    [event_row] = rows("events", [event])

    assert interaction_row == {
        "id": 3,
        "occur_time": "1970-01-01T00:00:02Z",
        "create_time": "1970-01-01T00:00:03Z",
        "conversation_id": "c",
        "message_id": None,
        "user_id": None,
        "model": "m",
        "input_hash": None,
        "output_hash": "h",
        "latency_ms": 0.0,
        "prompt_tokens": 0,
        "completion_tokens": None,
        "total_tokens": 5,
        "metadata": {},
        "input_hash_kind": None,
        "output_hash_kind": "hmac-sha256",
        "redactions": {"EMAIL": 2},
    }
    assert event_row == {
        "id": 4,
        "event_time": "1970-01-01T00:00:00Z",
        "receive_time": "1970-01-01T00:00:00Z",
        "user_id": "u",
        "event_type": "view",
        "details": {"page": "/"},
        "redactions": {},
    }


def events(*ids: int) -> list[Message]:
    return [Event(id=i, user_id="u", event_type="e") for i in ids]


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


def test_a_finished_export_leaves_no_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    export = ExportFile.start(path, "events", "csv", SELECTION)
    export.append(events(1, 2), "t1")
    export.finish()

    assert read_csv(path) == [
        list(COLUMNS["events"]),
        ["1", "1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "u", "e", "{}", "{}"],
        ["2", "1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "u", "e", "{}", "{}"],
    ]
    assert not sidecar_path(path).exists()


def test_resume_cuts_what_came_after_the_last_recorded_chunk(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    export = ExportFile.start(path, "events", "jsonl", SELECTION)
    export.append(events(1, 2), "t1")
    export.close()
    with path.open("ab") as file:
        file.write(b'{"id": 3, "event_ti')  # a chunk cut short by a crash

    resumed = ExportFile.resume(path, "events", "jsonl", SELECTION)
    resumed.append(events(3), "t2")
    resumed.finish()

    assert (resumed.rows_written, resumed.resume_token) == (3, "t2")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == [1, 2, 3]


def test_resume_continues_from_the_recorded_token(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    export = ExportFile.start(path, "events", "jsonl", SELECTION)
    export.append(events(1), "t1")
    export.close()

    resumed = ExportFile.resume(path, "events", "jsonl", SELECTION)

    assert (resumed.resume_token, resumed.rows_written) == ("t1", 1)
    resumed.close()


@pytest.mark.parametrize(
    ("kind", "file_format", "selection"),
    [
        ("feedback", "jsonl", SELECTION),
        ("events", "csv", SELECTION),
        ("events", "jsonl", {"filters": {}, "order": None}),
        ("events", "jsonl", {**SELECTION, "order": "newest"}),
    ],
)
def test_resume_refuses_another_export(
    tmp_path: Path, kind: Kind, file_format: Any, selection: dict[str, Any]
) -> None:
    path = tmp_path / "e.jsonl"
    ExportFile.start(path, "events", "jsonl", SELECTION).close()

    with pytest.raises(ExportFileError, match="resume it with the same ones"):
        ExportFile.resume(path, kind, file_format, selection)


def test_a_new_export_refuses_to_drop_an_interrupted_one(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    ExportFile.start(path, "events", "jsonl", SELECTION).close()

    with pytest.raises(ExportFileError, match="pass --resume"):
        ExportFile.start(path, "events", "jsonl", SELECTION)


@pytest.mark.parametrize("sidecar", [None, "not json", '{"kind": "events"}'])
def test_resume_needs_a_readable_sidecar(tmp_path: Path, sidecar: str | None) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text("")
    if sidecar is not None:
        sidecar_path(path).write_text(sidecar)

    with pytest.raises(ExportFileError, match=r"nothing to resume|unreadable"):
        ExportFile.resume(path, "events", "jsonl", SELECTION)


def test_discarding_an_export_deletes_only_a_regular_file(tmp_path: Path) -> None:
    # A FIFO stands in for /dev/null, which must never be unlinked (tests cannot make devices).
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    sidecar_path(pipe).write_text("{}")
    export = ExportFile(pipe, "events", "jsonl", SELECTION, 0, "", (tmp_path / "out").open("wb"))

    export.discard()

    assert stat.S_ISFIFO(pipe.stat().st_mode)
    assert not sidecar_path(pipe).exists()
