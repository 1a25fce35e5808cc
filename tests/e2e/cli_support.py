"""What the feedbackctl tests share: running the CLI in process against a real server."""

from __future__ import annotations

import pytest

from llmfeedback import EventItem, FeedbackClient
from llmfeedback.cli import main
from tests.server_harness import ServerThread


def run(
    server: ServerThread, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """feedbackctl's exit code, standard output and standard error for `args`."""
    code = main(["--address", server.address, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_user(client: FeedbackClient, user: str) -> None:
    """One chat turn of `user`, a vote on it replaced by a newer one, and two events."""
    client.record_interaction(f"conv-{user}", message_id=f"{user}-m1", user_id=user)
    client.submit_feedback(message_id=f"{user}-m1", user_id=user, score=2)
    client.submit_feedback(message_id=f"{user}-m1", user_id=user, score=5, text="better")
    client.log_events([EventItem(user, "page_view"), EventItem(user, "click")])
