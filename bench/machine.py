"""Facts about the machine and the code under test, so two runs' numbers can be compared fairly."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.cores import Pinning


def machine_info(pinning: Pinning, repository: Path) -> dict[str, Any]:
    """CPU, versions, pinning, load average and the git commit being measured."""
    return {
        "nproc": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "uvloop": _version("uvloop"),
        "h2load": _output(["h2load", "--version"]),
        "pinning": pinning.describe(),
        "load_average_at_start": list(os.getloadavg()),
        "git_commit": _output(["git", "-C", str(repository), "rev-parse", "HEAD"]),
        "git_dirty": bool(_output(["git", "-C", str(repository), "status", "--porcelain"])),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _output(command: list[str]) -> str | None:
    try:
        finished = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return finished.stdout.strip() if finished.returncode == 0 else None
