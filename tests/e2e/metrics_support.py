"""What the metrics tests share: a real `feedback-server` process with --metrics-address, and a
scrape of its /metrics parsed by prometheus_client's own parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families

FEEDBACK_SERVICE = "feedback.v1.FeedbackService"


class MetricsServer:
    """`python -m server` with metrics on a free port; its JSON log lines collected (INFO: the
    "serving" line names both ports)."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                *("-m", "server", "--address", "127.0.0.1:0"),
                *("--metrics-address", "127.0.0.1:0", "--log-level", "INFO"),
                *args,
            ],
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        self.lines: list[dict[str, Any]] = []
        self._serving = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(self.process.stderr,), daemon=True)
        self._reader.start()
        if not self._serving.wait(30):
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError(f"server did not start: {self.lines}")
        serving = next(line for line in self.lines if line["message"] == "serving")
        self.address = str(serving["address"])
        self.metrics_address = str(serving["metrics_address"])

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            entry = json.loads(line)
            self.lines.append(entry)
            if entry["message"] == "serving":
                self._serving.set()

    def scrape(self, path: str = "/metrics") -> Samples:
        """GET /metrics, parsed."""
        return scrape(f"http://{self.metrics_address}{path}")

    def stop(self) -> None:
        """SIGTERM, and wait for the exit."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self._reader.join(timeout=5)


@dataclass(frozen=True)
class Samples:
    """A parsed scrape: every sample by name and labels, and the families' types and help."""

    values: dict[tuple[str, frozenset[tuple[str, str]]], float]
    types: dict[str, str]
    """Family name (as the parser names it: counters without _total) -> type."""
    helps: dict[str, str]

    def get(self, name: str, **labels: str) -> float:
        """The value of the one sample with this name and exactly these labels (KeyError if
        there is none)."""
        return self.values[(name, frozenset(labels.items()))]

    def matching(self, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
        """Every sample of `name` whose labels include these."""
        wanted = set(labels.items())
        return {
            key_labels: value
            for (sample, key_labels), value in self.values.items()
            if sample == name and wanted <= key_labels
        }

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample of `name` whose labels include these."""
        return sum(self.matching(name, **labels).values())

    def call(self, name: str, method: str, service: str = FEEDBACK_SERVICE, **labels: str) -> float:
        """A grpc_server_* sample of one method (its grpc_type looked up, not given)."""
        found = self.matching(name, grpc_service=service, grpc_method=method, **labels)
        assert len(found) == 1, (name, method, labels, found)
        return next(iter(found.values()))

    def grpc_type(self, method: str, service: str = FEEDBACK_SERVICE) -> str:
        """The grpc_type label the method's started counter carries."""
        found = self.matching("grpc_server_started_total", grpc_service=service, grpc_method=method)
        assert len(found) == 1, found
        return dict(next(iter(found)))["grpc_type"]


def parse(text: str) -> Samples:
    """Parse exposition text with prometheus_client's parser."""
    values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        helps[family.name] = family.documentation
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in values, f"sample twice: {key}"
            values[key] = sample.value
    return Samples(values, types, helps)


def scrape(url: str, timeout: float = 10.0) -> Samples:
    """GET `url` and parse it; the answer must be a 200 in the text format."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(response.read().decode())


def wait_for(scrape_once: Callable[[], Samples], done: Callable[[Samples], bool]) -> Samples:
    """Scrape until `done(samples)`, for at most 10 s (calls end a moment after their answer)."""
    deadline = time.monotonic() + 10
    while True:
        samples = scrape_once()
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def every_call_ended(samples: Samples) -> bool:
    """Whether every call started has been counted as handled."""
    started = samples.total("grpc_server_started_total")
    return started > 0 and samples.total("grpc_server_handled_total") == started


def held_stream(first: Any, release: threading.Event) -> Iterator[Any]:
    """A request stream that sends `first` (unless None), then waits for `release` and ends."""
    if first is not None:
        yield first
    release.wait(30)
