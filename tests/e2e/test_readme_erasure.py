"""The README's examples of erasing and exporting a user's data, and of opting a user out, run as
written, on a fresh database: their shell blocks, the commands their text blocks show with their
output, and their Python."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmfeedback import FeedbackClient, OptOutAction
from tests.server_harness import ServerThread

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Erasing and exporting a user's data"
OPT_OUT_SECTION = "### Opting out"
"""A subsection of SECTION, whose examples are tested apart."""
README_ADDRESS = "127.0.0.1:50051"
"""The address the examples dial (the server's default), replaced by the test server's."""


def blocks(language: str, heading: str = SECTION) -> list[str]:
    """The fenced blocks of `language` under `heading`, in order, up to the next heading."""
    text = README.read_text(encoding="utf-8")
    assert f"\n{heading}\n" in text, f"README.md has no section {heading!r}"
    section = re.split(r"^#{2,3} ", text.split(f"\n{heading}\n", 1)[1], flags=re.MULTILINE)[0]
    return re.findall(rf"^```{language}\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)


def shell(server: ServerThread, script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `script` with bash -e where feedbackctl and grpcurl are on the PATH, against `server`."""
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("FEEDBACK_")
    }
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment["FEEDBACK_ADDRESS"] = server.address
    return subprocess.run(
        ["bash", "-e", "-c", script.replace(README_ADDRESS, server.address)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def command_blocks(heading: str) -> list[str]:
    """The text blocks under `heading` that show a command (`$ ...`) and what it prints."""
    return [block for block in blocks("text", heading) if block.startswith("$ ")]


SHELL_BLOCKS = blocks("sh")
COMMAND_BLOCKS = command_blocks(SECTION)
OPT_OUT_SHELL_BLOCKS = blocks("sh", OPT_OUT_SECTION)


def test_the_section_has_its_examples() -> None:
    assert len(SHELL_BLOCKS) == 2  # feedbackctl, grpcurl
    assert len(COMMAND_BLOCKS) == 1
    assert len(blocks("python")) == 1


def test_the_opt_out_section_has_its_examples() -> None:
    assert len(OPT_OUT_SHELL_BLOCKS) == 2  # feedbackctl, grpcurl
    assert len(command_blocks(OPT_OUT_SECTION)) == 1
    assert len(blocks("python", OPT_OUT_SECTION)) == 1


@pytest.mark.database_independent
def test_the_feedbackctl_example_runs(server: ServerThread, tmp_path: Path) -> None:
    result = shell(server, SHELL_BLOCKS[0], tmp_path)

    assert result.returncode == 0, result.stderr
    exported = (tmp_path / "user-456.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(exported) == 4  # as its comment says
    assert "subject hash      " + hashlib.sha256(b"user-456").hexdigest() in result.stdout


@pytest.mark.database_independent
def test_the_grpcurl_example_runs(server: ServerThread, tmp_path: Path) -> None:
    result = shell(server, SHELL_BLOCKS[1], tmp_path)

    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(b"user-456").hexdigest() in result.stdout


@pytest.mark.database_independent
@pytest.mark.parametrize("block", COMMAND_BLOCKS + command_blocks(OPT_OUT_SECTION))
def test_the_commands_shown_print_what_is_shown(
    server: ServerThread, tmp_path: Path, block: str
) -> None:
    command, *shown = block.splitlines()

    result = shell(server, command.removeprefix("$ "), tmp_path)

    assert (result.stdout + result.stderr).splitlines() == shown


@pytest.mark.database_independent
def test_the_python_example_runs(server: ServerThread) -> None:
    (example,) = blocks("python")
    printed = io.StringIO()

    with contextlib.redirect_stdout(printed):
        exec(example.replace(README_ADDRESS, server.address), {})

    lines = printed.getvalue().splitlines()
    assert lines[0] == "event 1"
    assert lines[1].split() == ["1", hashlib.sha256(b"user-789").hexdigest(), "1"]
    assert lines[2].startswith("1 ")


@pytest.mark.database_independent
def test_the_opt_out_feedbackctl_example_runs(server: ServerThread, tmp_path: Path) -> None:
    result = shell(server, OPT_OUT_SHELL_BLOCKS[0], tmp_path)

    assert result.returncode == 0, result.stderr
    assert "suppressed: the user opted out, so nothing was stored (not an error)\n" in result.stdout
    assert "past data         erased (erasure 1)\n" in result.stdout
    assert "user 'user-321' opted back in: writes about them are stored again\n" in result.stdout
    with FeedbackClient(server.address) as client:
        state = client.get_opt_out("user-321")
        assert list(client.export_user_data("user-321")) == []  # the signup was erased
    assert not state.HasField("opt_out")
    assert [(choice.action, choice.erase_requested) for choice in state.choices] == [
        (OptOutAction.OPT_OUT_ACTION_OPT_IN, False),
        (OptOutAction.OPT_OUT_ACTION_OPT_OUT, True),
        (OptOutAction.OPT_OUT_ACTION_OPT_OUT, False),
    ]


@pytest.mark.database_independent
def test_the_opt_out_grpcurl_example_runs(server: ServerThread, tmp_path: Path) -> None:
    result = shell(server, OPT_OUT_SHELL_BLOCKS[1], tmp_path)

    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(b"user-321").hexdigest() in result.stdout
    assert '"erasure"' in result.stdout


@pytest.mark.database_independent
def test_the_opt_out_python_example_runs(server: ServerThread) -> None:
    (example,) = blocks("python", OPT_OUT_SECTION)
    printed = io.StringIO()

    with contextlib.redirect_stdout(printed):
        exec(example.replace(README_ADDRESS, server.address), {})

    assert printed.getvalue().splitlines() == [
        "1",
        "True",
        "1 1 0",
        "True",
        "OPT_OUT_ACTION_OPT_IN False",
        "OPT_OUT_ACTION_OPT_OUT True",
    ]
