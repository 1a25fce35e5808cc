"""The plumbing every stand-alone bench shares: a scratch directory, the errors that mean the
bench could not run, and the closing load average."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.h2load import H2loadError, H2loadMissingError, require_h2load
from bench.server_process import ServerStartError

COULD_NOT_RUN = 2
"""The exit status of a bench that could not run (h2load missing, a server that would not start)."""


def progress_printer(name: str) -> Callable[[str], None]:
    """A function that prints `name: message` to stderr at once."""

    def progress(message: str) -> None:
        print(f"{name}: {message}", file=sys.stderr, flush=True)

    return progress


def h2load_missing(name: str) -> bool:
    """Whether h2load is missing (said on stderr)."""
    try:
        require_h2load()
    except H2loadMissingError as error:
        print(f"{name}: {error}", file=sys.stderr)
        return True
    return False


def run_in_scratch(
    name: str, output: Path, keep: bool, body: Callable[[Path], None], machine: dict[str, Any]
) -> bool:
    """Run `body` in a fresh scratch directory next to `output`; False (said on stderr) when the
    bench could not run. The directory is removed afterwards unless `keep`; `machine` gains the
    load average at the end, which tells a reader how quiet the machine was."""
    output.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=output.parent))
    try:
        body(workdir)
    except ServerStartError as error:
        print(f"{name}: the server did not start: {error}", file=sys.stderr)
        return False
    except H2loadError as error:
        print(f"{name}: {error}", file=sys.stderr)
        return False
    finally:
        if keep:
            print(f"{name}: kept {workdir}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    machine["load_average_at_end"] = list(os.getloadavg())
    return True
