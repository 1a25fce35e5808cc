"""The client ships as a standalone wheel depending only on grpcio, protobuf and common protos."""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"
ALLOWED_DEPENDENCIES = {"grpcio", "protobuf", "googleapis-common-protos"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the client wheel from a copy, so the build leaves nothing behind in client/."""
    workspace = tmp_path_factory.mktemp("wheel")
    source = workspace / "client"
    shutil.copytree(
        CLIENT_DIR,
        source,
        ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__", "node_modules"),
    )
    # No index and no build isolation: the test must not need the network.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(workspace / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = (workspace / "dist").glob("llmfeedback-*.whl")
    return built


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [item for item in archive.namelist() if item.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode())


def test_wheel_depends_only_on_the_three_allowed_packages(wheel: Path) -> None:
    requirements = wheel_metadata(wheel).get_all("Requires-Dist") or []

    names = {re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0] for requirement in requirements}

    assert names == ALLOWED_DEPENDENCIES


def test_wheel_ships_types_stubs_and_the_cli(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
        (entry_points,) = [name for name in files if name.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()

    assert "llmfeedback/py.typed" in files
    assert "llmfeedback/proto/feedback/v1/feedback_service_pb2_grpc.py" in files
    assert "llmfeedback/proto/feedback/v1/feedback_pb2.pyi" in files
    assert "feedbackctl = llmfeedback.cli:main" in scripts
    assert not any(name.startswith(("tests/", "server/", "storage/")) for name in files)


def test_wheel_imports_without_grpcio_status(wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path)
    probe = (
        "import sys, llmfeedback, llmfeedback.cli; "
        "print(llmfeedback.__file__); "
        "print('grpc_status' in sys.modules)"
    )

    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    )

    module_file, imported_grpc_status = result.stdout.split()
    assert Path(module_file).is_relative_to(tmp_path)
    assert imported_grpc_status == "False"
