"""Opt-out against the fake service: the requests the client sends, its retries, and what
feedbackctl opt-out does with deadlines and broken calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from llmfeedback import Event, Feedback, FeedbackClient, Interaction, OptOut, is_suppressed
from llmfeedback.cli import main
from llmfeedback.proto.feedback.v1 import feedback_service_pb2

from .fake_service import Abort, Stall

if TYPE_CHECKING:
    import pytest

    from .fake_service import RecordingServicer

UNAVAILABLE = Abort(grpc.StatusCode.UNAVAILABLE, "database restarting")


def test_the_opt_out_methods_send_the_user_and_are_retried_like_any_call(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    opt_out = OptOut(user_hash="ab" * 32)
    servicer.plan(
        "OptOutUser", UNAVAILABLE, feedback_service_pb2.OptOutUserResponse(opt_out=opt_out)
    )
    servicer.plan("OptInUser", feedback_service_pb2.OptInUserResponse(was_opted_out=True))
    servicer.plan("GetOptOut", UNAVAILABLE)

    response = client.opt_out_user("alice", erase_past_data=True)
    was_opted_out = client.opt_in_user("alice")
    state = client.get_opt_out("alice")

    assert response.opt_out == opt_out
    assert (
        servicer.requests("OptOutUser")
        == [feedback_service_pb2.OptOutUserRequest(user_id="alice", erase_past_data=True)] * 2
    )
    assert was_opted_out is True
    assert servicer.requests("OptInUser") == [
        feedback_service_pb2.OptInUserRequest(user_id="alice")
    ]
    assert not state.HasField("opt_out")
    assert len(servicer.requests("GetOptOut")) == 2


def test_a_suppressed_single_write_returns_an_empty_record_and_is_not_retried(
    client: FeedbackClient, servicer: RecordingServicer
) -> None:
    servicer.plan("LogEvent", feedback_service_pb2.LogEventResponse(suppressed=True))
    servicer.plan("SubmitFeedback", feedback_service_pb2.SubmitFeedbackResponse(suppressed=True))
    servicer.plan(
        "RecordInteraction", feedback_service_pb2.RecordInteractionResponse(suppressed=True)
    )

    records = (
        client.log_event("alice", "click"),
        client.submit_feedback("c1", score=3),
        client.record_interaction("c1"),
    )

    assert records == (Event(), Feedback(), Interaction())
    assert all(is_suppressed(record) for record in records)
    assert not is_suppressed(client.log_event("alice", "click"))  # the fake stores it: id 1
    assert len(servicer.requests("LogEvent")) == 2


def test_opt_out_waits_without_a_deadline_unless_given(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--address", address, "opt-out", "alice", "--erase", "--yes"]) == 0
    assert main(["--address", address, "opt-out", "alice", "--timeout", "30"]) == 0

    unbounded, bounded = (call.time_remaining for call in servicer.calls["OptOutUser"])
    assert unbounded is None or unbounded > 10**9
    assert bounded is not None
    assert 25 < bounded < 31
    assert servicer.requests("OptOutUser") == [
        feedback_service_pb2.OptOutUserRequest(user_id="alice", erase_past_data=True),
        feedback_service_pb2.OptOutUserRequest(user_id="alice"),
    ]


def test_an_opt_out_with_erase_that_timed_out_says_to_run_it_again(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer.plan("OptOutUser", Stall(1.0), Stall(1.0))
    command = ["--address", address, "--timeout", "0.2", "opt-out", "alice"]

    erasing = main([*command, "--erase", "--yes"])
    erasing_err = capsys.readouterr().err
    keeping = main(command)
    keeping_err = capsys.readouterr().err

    assert erasing == keeping == 1
    assert erasing_err.splitlines()[1:] == [
        "  user 'alice' may be opted out already, with the erasure of their past going on or "
        "stopped halfway: run the same command again to finish it"
    ]
    assert keeping_err.splitlines()[0].startswith("error: DEADLINE_EXCEEDED:")
    assert len(keeping_err.splitlines()) == 1  # nothing unfinished to finish


def test_opt_out_with_erase_but_without_yes_calls_nothing(
    address: str, servicer: RecordingServicer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--address", address, "opt-out", "alice", "--erase"]) == 2

    assert servicer.requests("OptOutUser") == []
    assert "pass --yes to erase" in capsys.readouterr().err
