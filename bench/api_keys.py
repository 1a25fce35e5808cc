"""API keys for the bench, made the way an operator makes the first one: `feedback-server keys`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.server_process import REPOSITORY_ROOT, ServerStartError

KEY_COMMAND_TIMEOUT_SECONDS = 60.0


def create_key(data_dir: Path, scope: str) -> str:
    """A new key with `scope` on the database in `data_dir` (created and migrated if need be);
    raises ServerStartError when the command fails, since the server cannot be measured then."""
    command = [sys.executable, "-m", "server", "keys", "create", "--scope", scope]
    command += ["--name", "bench", "--data-dir", str(data_dir)]
    finished = subprocess.run(
        command,
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=KEY_COMMAND_TIMEOUT_SECONDS,
        check=False,
    )
    secret = finished.stdout.strip()
    if finished.returncode != 0 or not secret:
        raise ServerStartError(
            f"`feedback-server keys create` exited with {finished.returncode}: "
            f"{finished.stderr.strip()}"
        )
    return secret
