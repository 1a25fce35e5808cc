"""The README's live tail examples run as written, on a fresh database."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from llmfeedback import FeedbackClient
from tests.e2e.test_readme_erasure import README_ADDRESS, blocks, shell
from tests.server_harness import ServerThread

SECTION = "## Watching it live"


class _Seen(Exception):
    """Ends the example's endless loop once it handled a record."""


def test_the_section_has_its_examples() -> None:
    assert len(blocks("sh", SECTION)) == 1
    assert len(blocks("python", SECTION)) == 1


@pytest.mark.database_independent
def test_the_feedbackctl_example_runs(server: ServerThread, tmp_path: Path) -> None:
    (script,) = blocks("sh", SECTION)

    result = shell(server, script, tmp_path)

    assert result.returncode == 0, result.stderr
    (line,) = (tmp_path / "bad-ratings.jsonl").read_text(encoding="utf-8").splitlines()
    watched = json.loads(line)
    assert watched["feedback"]["score"] == 1
    assert watched["feedback"]["text"] == "wrong answer"
    assert f"continue with --from-position {watched['position']}" in result.stderr


@pytest.mark.database_independent
def test_the_python_example_runs(server: ServerThread) -> None:
    (example,) = blocks("python", SECTION)
    alerts: list[Any] = []
    positions: list[str] = []

    def alert(record: Any) -> None:
        alerts.append(record)

    def remember(position: str) -> None:
        positions.append(position)
        raise _Seen

    def rate() -> None:
        with FeedbackClient(server.address) as client:
            client.record_interaction("conv-py", input_text="hi")
            time.sleep(1)
            client.submit_feedback("conv-py", score=4)
            client.submit_feedback("conv-py", score=2, text="meh")

    writer = threading.Thread(target=rate)
    writer.start()
    namespace = {"alert": alert, "remember": remember, "FeedbackClient": FeedbackClient}
    with pytest.raises(_Seen):
        exec(example.replace(README_ADDRESS, server.address), namespace)
    writer.join()
    assert [record.score for record in alerts] == [2]
    assert positions
