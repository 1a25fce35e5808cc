"""Runs the chosen scenarios on the chosen databases, each on a fresh database, in one order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from reliability.databases import (
    POSTGRESQL,
    SQLITE,
    Database,
    create_postgres_database,
    postgres_unreachable_reason,
    sqlite_database,
)
from reliability.fuzz import run_fuzz
from reliability.hostile.scenario import HOSTILE, hostile_scenario
from reliability.postgres_instance import (
    DEFAULT_BIN_DIR,
    PostgresInstance,
    postgres_binaries_missing,
)
from reliability.postgres_outage import OUTAGE, postgres_outage
from reliability.profiles import Profile
from reliability.replicas import REPLICAS, replicas_under_mixed_writes
from reliability.results import ScenarioResult
from reliability.retry_storms import STORM, retry_storms
from reliability.stop_signals import KILL, TERMINATE, kill_under_load, terminate_under_load

SCENARIOS = ("kill", "term", "outage", "storm", "replicas", "fuzz", "hostile")
"""Names for --scenarios, in the order they run."""

Progress = Callable[[str], None]
T = TypeVar("T")


class Suite:
    """One run: a work directory, a profile, and the private PostgreSQL cluster if one is needed."""

    def __init__(
        self,
        profile: Profile,
        workdir: Path,
        progress: Progress,
        *,
        postgres_url: str | None = None,
        postgres_bin_dir: Path = DEFAULT_BIN_DIR,
    ) -> None:
        self.profile = profile
        self.workdir = workdir
        self.progress = progress
        self.postgres_url = postgres_url
        self.postgres_bin_dir = postgres_bin_dir
        self._instance: PostgresInstance | None = None
        self._instance_error: str | None = None

    def run(self, scenarios: Sequence[str], databases: Sequence[str]) -> list[ScenarioResult]:
        """Every chosen scenario on every chosen database it applies to; never raises."""
        results: list[ScenarioResult] = []
        try:
            for scenario in SCENARIOS:
                if scenario not in scenarios:
                    continue
                if scenario == "fuzz":
                    self.progress("fuzz: pytest tests/fuzz")
                    results.append(
                        run_fuzz(
                            examples=self.profile.fuzz_examples,
                            timeout_seconds=self.profile.fuzz_timeout_seconds,
                        )
                    )
                    continue
                if scenario == "hostile":
                    results.extend(self._hostile(databases))
                    continue
                if scenario == "outage":
                    if POSTGRESQL in databases:
                        results.extend(self._outages())
                    continue
                if scenario == "replicas":
                    if POSTGRESQL in databases:  # SQLite has one writer: nothing to deadlock
                        results.append(self._replicas())
                    continue
                for kind in (SQLITE, POSTGRESQL):
                    if kind in databases:
                        results.extend(self._on_database(scenario, kind))
        finally:
            if self._instance is not None:
                self._instance.destroy()
        return results

    def _on_database(self, scenario: str, kind: str) -> list[ScenarioResult]:
        label = {"kill": KILL, "term": TERMINATE, "storm": STORM}[scenario]
        self.progress(f"{label} on {kind}")
        started = time.monotonic()
        try:
            database = self._database(kind, scenario)
        except Exception as error:
            return [_skipped(label, kind, str(error))]
        profile = self.profile
        try:
            if scenario == "kill":
                return [
                    _run(
                        kill_under_load(
                            database,
                            self.workdir,
                            acknowledged_target=profile.kill_acknowledged,
                            concurrency=profile.concurrency,
                        )
                    )
                ]
            if scenario == "term":
                return [
                    _run(
                        terminate_under_load(
                            database,
                            self.workdir,
                            acknowledged_target=profile.terminate_acknowledged,
                            concurrency=profile.concurrency,
                        )
                    )
                ]
            return _run(retry_storms(database, self.workdir, profile.storm))
        except Exception as error:
            return [_crashed(label, kind, error, started)]

    def _replicas(self) -> ScenarioResult:
        self.progress(f"{REPLICAS} on {POSTGRESQL}")
        started = time.monotonic()
        try:
            database = self._database(POSTGRESQL, "replicas")
        except Exception as error:
            return _skipped(REPLICAS, POSTGRESQL, str(error))
        try:
            return _run(
                replicas_under_mixed_writes(
                    database,
                    self.workdir,
                    seconds=self.profile.replicas_seconds,
                    writers_per_replica=self.profile.replicas_writers,
                )
            )
        except Exception as error:
            return _crashed(REPLICAS, POSTGRESQL, error, started)

    def _hostile(self, databases: Sequence[str]) -> list[ScenarioResult]:
        """The hostile-client phases; SQLite only (the damage is to the server, not the
        database)."""
        if SQLITE not in databases:
            return [_skipped(HOSTILE, POSTGRESQL, "the hostile phases run on SQLite only")]
        started = time.monotonic()
        try:
            return _run(
                hostile_scenario(self.workdir / HOSTILE, self.profile.hostile, self.progress)
            )
        except Exception as error:
            return [_crashed(HOSTILE, SQLITE, error, started)]

    def _outages(self) -> list[ScenarioResult]:
        results: list[ScenarioResult] = []
        for mode in self.profile.outage_stop_modes:
            self.progress(f"{OUTAGE} (-m {mode})")
            started = time.monotonic()
            instance = self._private_instance()
            if instance is None:
                return [_skipped(OUTAGE, POSTGRESQL, self._instance_error or "no PostgreSQL")]
            try:
                results.append(
                    _run(
                        postgres_outage(
                            instance,
                            self.workdir,
                            acknowledged_before=self.profile.outage_acknowledged,
                            outage_seconds=self.profile.outage_seconds,
                            stop_mode=mode,
                            concurrency=self.profile.concurrency,
                        )
                    )
                )
            except Exception as error:
                results.append(_crashed(OUTAGE, POSTGRESQL, error, started))
            if not instance.accepts_connections():
                # A failed outage may leave the cluster down; the next scenario needs it up.
                instance.start()
        return results

    def _database(self, kind: str, name: str) -> Database:
        """A fresh database: a new SQLite file, or a new database on PostgreSQL."""
        if kind == SQLITE:
            return sqlite_database(self.workdir, name)
        if self.postgres_url is not None:
            reason = postgres_unreachable_reason(self.postgres_url)
            if reason is not None:
                raise RuntimeError(reason)
            return create_postgres_database(self.postgres_url, name)
        instance = self._private_instance()
        if instance is None:
            raise RuntimeError(self._instance_error or "no PostgreSQL")
        return create_postgres_database(instance.server_url, name)

    def _private_instance(self) -> PostgresInstance | None:
        """The suite's own cluster, made on first use; None (with a reason) if it cannot be."""
        if self._instance is not None or self._instance_error is not None:
            return self._instance
        missing = postgres_binaries_missing(self.postgres_bin_dir)
        if missing is not None:
            self._instance_error = missing
            return None
        instance = PostgresInstance(self.postgres_bin_dir)
        try:
            instance.start()
        except Exception as error:
            instance.destroy()
            self._instance_error = f"private PostgreSQL did not start: {error}"
            return None
        self._instance = instance
        return instance


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Each scenario on its own event loop, so one scenario's leftovers cannot reach the next."""
    return asyncio.run(coroutine)


def _skipped(scenario: str, database: str, reason: str) -> ScenarioResult:
    result = ScenarioResult(scenario, database)
    result.skipped = reason
    return result


def _crashed(scenario: str, database: str, error: Exception, started: float) -> ScenarioResult:
    """A scenario that raised: a failure with the error, never a silent pass."""
    result = ScenarioResult(scenario, database)
    result.figures["error"] = f"{type(error).__name__}: {error}"
    result.check(False, f"the scenario could not finish: {type(error).__name__}: {error}")
    result.seconds = time.monotonic() - started
    return result
