"""The fuzz tests (tests/fuzz), run as a scenario with more examples than CI gives them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from reliability.results import ScenarioResult
from reliability.server_process import REPOSITORY_ROOT

FUZZ = "fuzz"
FUZZ_DIRECTORY = REPOSITORY_ROOT / "tests" / "fuzz"
EXAMPLES_VARIABLE = "FUZZ_EXAMPLES"


def run_fuzz(*, examples: int | None, timeout_seconds: float) -> ScenarioResult:
    """`pytest tests/fuzz` with FUZZ_EXAMPLES=`examples` (None: the tests' own default)."""
    result = ScenarioResult(FUZZ, "-")
    if not FUZZ_DIRECTORY.is_dir():
        result.skipped = f"{FUZZ_DIRECTORY.relative_to(REPOSITORY_ROOT)} does not exist yet"
        return result
    environment = dict(os.environ)
    if examples is not None:
        environment[EXAMPLES_VARIABLE] = str(examples)
        result.figures["examples"] = examples
    started = time.monotonic()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(FUZZ_DIRECTORY)]
    try:
        completed = subprocess.run(
            command,
            cwd=REPOSITORY_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        result.check(False, f"pytest tests/fuzz ran past {timeout_seconds:.0f} s")
    else:
        lines = completed.stdout.strip().splitlines()
        result.figures["pytest_exit_code"] = completed.returncode
        result.figures["summary"] = lines[-1].strip("= ") if lines else completed.stderr[-200:]
        result.check(completed.returncode == 0, f"pytest tests/fuzz: {result.figures['summary']}")
    result.seconds = time.monotonic() - started
    return result
