"""CPU pinning: server and load generator on different cores, so neither steals the other's time."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Pinning:
    """Which core runs the server and which the load generators; None means unpinned."""

    server_core: int | None
    load_core: int | None

    def server_command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run on the server's core."""
        return _taskset(self.server_core, argv)

    def load_command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run on the load generator's core."""
        return _taskset(self.load_core, argv)

    def describe(self) -> str:
        """A short description for the report."""
        if self.server_core is None:
            return "unpinned (fewer than 2 cores or no taskset)"
        return f"server on core {self.server_core}, load on core {self.load_core}"


def choose_pinning() -> Pinning:
    """Server on the first allowed core and load on the second, when there are two and taskset."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2 or shutil.which("taskset") is None:
        return Pinning(None, None)
    return Pinning(cores[0], cores[1])


def pin_this_thread(core: int | None) -> None:
    """Keep the calling thread (and the threads it starts from now on) on `core`."""
    if core is not None:
        os.sched_setaffinity(0, {core})


@contextmanager
def pinned_thread(core: int | None) -> Iterator[None]:
    """Run the calling thread on `core` for the duration of the block."""
    with running_on(None if core is None else {core}):
        yield


@contextmanager
def running_on(cores: AbstractSet[int] | None) -> Iterator[None]:
    """Run the calling thread (and processes it starts) on `cores` for the block; None: as is."""
    before = os.sched_getaffinity(0)
    if cores is not None:
        os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _taskset(core: int | None, argv: Sequence[str]) -> list[str]:
    if core is None:
        return list(argv)
    return ["taskset", "-c", str(core), *argv]
