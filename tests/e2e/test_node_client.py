"""The Node.js example (client/examples/node) against a real `feedback-server` requiring API keys:
it loads the contract from protos/ alone, sends its key on every call, and decodes the
google.rpc.Status details of refusals from the vendored googleapis protos."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.certificates import Certificates, make_certificates, openssl_missing_reason
from tests.databases import sqlite_url
from tests.e2e.test_process import ServerProcess

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "client" / "examples" / "node"
NODE = shutil.which("node") or ""
STEPS = ["RecordInteraction", "SubmitFeedback", "LogEvent", "GetStats", "SubmitFeedbackInvalid"]
TYPE_URL = "type.googleapis.com/"

pytestmark = pytest.mark.skipif(not NODE, reason="node is not on PATH")


def _installed_as_locked(example_dir: Path) -> bool:
    """Whether node_modules holds exactly what package-lock.json pins: npm's own record of the
    install (node_modules/.package-lock.json) lists the same packages, and each one is there."""
    lock = json.loads((example_dir / "package-lock.json").read_text())["packages"]
    record = example_dir / "node_modules" / ".package-lock.json"
    if not record.exists():
        return False
    locked = {name: entry for name, entry in lock.items() if name}
    if json.loads(record.read_text())["packages"] != locked:
        return False
    for name, entry in locked.items():
        manifest = example_dir / name / "package.json"
        if not manifest.exists() or json.loads(manifest.read_text())["version"] != entry["version"]:
            return False
    return True


@pytest.fixture(scope="session")
def node_example() -> Path:
    """The example directory with its dependencies installed by `npm ci`, once; later sessions
    reuse node_modules while it still matches the lockfile."""
    if not _installed_as_locked(EXAMPLE_DIR):
        npm = shutil.which("npm")
        assert npm is not None, "node is installed but npm is not"
        installed = subprocess.run(
            [npm, "ci"],
            cwd=EXAMPLE_DIR,
            capture_output=True,
            text=True,
            timeout=100,  # under pytest-timeout's 120 s, so npm's own output is shown
            check=False,
        )
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}{installed.stderr}"
        assert _installed_as_locked(EXAMPLE_DIR), "npm ci left node_modules unlike the lockfile"
    return EXAMPLE_DIR


@pytest.fixture(scope="module")
def database_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fresh SQLite database for the module's servers (each run uses its own ids)."""
    return tmp_path_factory.mktemp("node-client") / "feedback.sqlite3"


@pytest.fixture(scope="module")
def api_key(database_file: Path) -> str:
    """An ingest+read key, made by `feedback-server keys create` on the fresh database."""
    created = subprocess.run(
        [
            *(sys.executable, "-m", "server", "keys", "create"),
            *("--scope", "ingest", "--scope", "read", "--name", "node example"),
            *("--database-url", sqlite_url(database_file)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("fbk_"), created.stdout
    return key


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate."""
    reason = openssl_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    return make_certificates(tmp_path_factory.mktemp("node-client-pki"))


@contextmanager
def serve(database_file: Path, *args: str) -> Iterator[str]:
    """`feedback-server --auth keys` on the database; its address while it serves."""
    server = ServerProcess("--database-url", sqlite_url(database_file), "--auth", "keys", *args)
    try:
        yield server.wait_serving()
    finally:
        server.kill()


@pytest.fixture(scope="module")
def plaintext_address(database_file: Path, api_key: str) -> Iterator[str]:
    """A plaintext server's address (started after the key exists, so it knows it at once)."""
    with serve(database_file) as address:
        yield address


@pytest.fixture(scope="module", params=["tls", "mtls"])
def tls_address(
    request: pytest.FixtureRequest, database_file: Path, api_key: str, certificates: Certificates
) -> Iterator[tuple[str, dict[str, str]]]:
    """A TLS server's address and the client settings it needs; with "mtls" the server also
    demands a client certificate the CA signed. The address names the host: grpc-js sends it as
    the TLS server name, and Node warns (DEP0123) when that is an IP address."""
    tls = ["--tls-cert", str(certificates.server.certificate)]
    tls += ["--tls-key", str(certificates.server.private_key)]
    settings = {"FEEDBACK_CA_FILE": str(certificates.ca)}
    if request.param == "mtls":
        tls += ["--tls-client-ca", str(certificates.ca)]
        settings["FEEDBACK_CLIENT_CERT"] = str(certificates.client.certificate)
        settings["FEEDBACK_CLIENT_KEY"] = str(certificates.client.private_key)
    with serve(database_file, *tls) as address:
        yield f"localhost:{address.rsplit(':', 1)[1]}", settings


@dataclass(frozen=True)
class ExampleRun:
    """What one `node feedback.mjs` printed."""

    code: int
    """Its exit code."""
    steps: dict[str, dict[str, Any]]
    """Its JSON lines by step name, in the order printed."""
    output: str
    """stdout and stderr, for failure messages."""


def run_example(example_dir: Path, **settings: str) -> ExampleRun:
    """Run `node feedback.mjs` with these FEEDBACK_* settings alone (none inherited)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_")}
    result = subprocess.run(
        [NODE, "feedback.mjs"],
        cwd=example_dir,
        env={**environment, **settings},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = f"stdout:\n{result.stdout}stderr:\n{result.stderr}"
    try:
        lines = [json.loads(line) for line in result.stdout.splitlines()]
    except json.JSONDecodeError:
        pytest.fail(f"the example printed a line that is not JSON:\n{output}")
    steps = {line["step"]: line for line in lines}
    assert len(steps) == len(lines), f"a step printed twice:\n{output}"
    return ExampleRun(result.returncode, steps, output)


def rows(database_file: Path, query: str, *parameters: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database_file) as connection:
        return connection.execute(query, parameters).fetchall()


def test_the_example_writes_reads_stats_and_decodes_a_bad_request(
    node_example: Path, plaintext_address: str, api_key: str, database_file: Path
) -> None:
    run = run_example(node_example, FEEDBACK_ADDRESS=plaintext_address, FEEDBACK_API_KEY=api_key)
    steps = run.steps

    assert run.code == 0, run.output
    assert list(steps) == STEPS
    assert [steps[name]["ok"] for name in STEPS] == [True] * len(STEPS)
    recorded = steps["RecordInteraction"]
    user_id = recorded["user_id"]
    assert rows(
        database_file,
        "SELECT id, conversation_id, message_id FROM interactions WHERE user_id = ?",
        user_id,
    ) == [(int(recorded["interaction_id"]), recorded["conversation_id"], recorded["message_id"])]
    submitted = steps["SubmitFeedback"]
    assert submitted["interaction_id"] == recorded["interaction_id"]
    assert submitted["user_id"] == user_id
    # One row: the refused score 9 stored nothing.
    assert rows(
        database_file,
        "SELECT id, interaction_id, score, text FROM feedback WHERE user_id = ?",
        user_id,
    ) == [(int(submitted["feedback_id"]), int(recorded["interaction_id"]), 5, "Clear and concise")]
    assert rows(database_file, "SELECT id, event_type FROM events WHERE user_id = ?", user_id) == [
        (int(steps["LogEvent"]["event_id"]), "answer_copied")
    ]
    assert steps["GetStats"] == {
        "step": "GetStats",
        "ok": True,
        "feedback": {"total_count": "1", "score5_count": "1", "avg_score": 5},
        "interactions": {"total_count": "1"},
        "events": {"total_count": "1", "type_counts": {"answer_copied": "1"}},
    }
    invalid = steps["SubmitFeedbackInvalid"]
    assert (invalid["code"], invalid["code_name"]) == (3, "INVALID_ARGUMENT")
    assert invalid["details"] == [
        {
            "@type": TYPE_URL + "google.rpc.BadRequest",
            "field_violations": [{"field": "score", "description": "must be from 1 to 5, got 9"}],
        }
    ]


def test_without_a_key_the_example_reports_unauthenticated_and_its_error_info(
    node_example: Path, plaintext_address: str, database_file: Path
) -> None:
    stored_before = rows(database_file, "SELECT count(*) FROM interactions")

    run = run_example(node_example, FEEDBACK_ADDRESS=plaintext_address)

    assert run.code == 1, run.output
    assert run.steps == {
        "RecordInteraction": {
            "step": "RecordInteraction",
            "ok": False,
            "code": 16,
            "code_name": "UNAUTHENTICATED",
            "message": "this server requires an API key: send `authorization: Bearer <key>`",
            "details": [
                {
                    "@type": TYPE_URL + "google.rpc.ErrorInfo",
                    "reason": "API_KEY_MISSING",
                    "domain": "feedback.v1",
                }
            ],
        }
    }
    assert rows(database_file, "SELECT count(*) FROM interactions") == stored_before


def test_the_example_connects_over_tls_with_a_ca_file(
    node_example: Path, tls_address: tuple[str, dict[str, str]], api_key: str
) -> None:
    address, tls_settings = tls_address

    trusted = run_example(
        node_example, FEEDBACK_ADDRESS=address, FEEDBACK_API_KEY=api_key, **tls_settings
    )
    # The control: the system's roots do not trust the test CA, so without FEEDBACK_CA_FILE the
    # first call fails its handshake.
    untrusted = run_example(
        node_example, FEEDBACK_ADDRESS=address, FEEDBACK_API_KEY=api_key, FEEDBACK_TLS="1"
    )

    assert trusted.code == 0, trusted.output
    assert [(name, line["ok"]) for name, line in trusted.steps.items()] == [
        (name, True) for name in STEPS
    ]
    assert untrusted.code == 1, untrusted.output
    assert [(line["step"], line["code_name"]) for line in untrusted.steps.values()] == [
        ("RecordInteraction", "UNAVAILABLE")
    ]
