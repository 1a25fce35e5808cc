"""The README's examples of erasing and exporting a user's data run as written, on a fresh
database: its shell blocks, the commands its text blocks show with their output, and its Python."""

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

from tests.server_harness import ServerThread

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Erasing and exporting a user's data"
README_ADDRESS = "127.0.0.1:50051"
"""The address the examples dial (the server's default), replaced by the test server's."""


def blocks(language: str) -> list[str]:
    """The fenced blocks of `language` in the section, in order."""
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
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


SHELL_BLOCKS = blocks("sh")
COMMAND_BLOCKS = [block for block in blocks("text") if block.startswith("$ ")]


def test_the_section_has_its_examples() -> None:
    assert len(SHELL_BLOCKS) == 2  # feedbackctl, grpcurl
    assert len(COMMAND_BLOCKS) == 1
    assert len(blocks("python")) == 1


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
@pytest.mark.parametrize("block", COMMAND_BLOCKS)
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
